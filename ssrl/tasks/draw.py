"""Markers drawn on task images: patch borders with labels (tasks 1-2) and circled numbers (tasks 4-5).

Pillow's bundled scalable font is used, so labels look the same on every machine without system fonts
(the published scripts fall back to a tiny bitmap font when Arial is missing).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Patch border colour. The published Shuffle/Flip scripts pass (255, 0, 0) to OpenCV, i.e. blue in BGR;
#: we draw red in RGB and keep it fixed.
BORDER_RGB = (255, 0, 0)


@lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, int(size)))


def label_grid(image: np.ndarray, rows: int, cols: int, labels: list[int], border: int = 2) -> np.ndarray:
    """Draw a border inside every patch edge and its label at the top-left, white text with black outline."""
    h, w = image.shape[:2]
    ph, pw = h // rows, w // cols
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    size = max(10, ph // 8)
    offset = max(4, min(10, ph // 20))
    for k, label in enumerate(labels):
        r, c = divmod(k, cols)
        x0, y0 = c * pw, r * ph
        draw.rectangle([x0, y0, x0 + pw - 1, y0 + ph - 1], outline=BORDER_RGB, width=border)
        draw.text((x0 + offset, y0 + offset), str(label), fill=(255, 255, 255), font=font(size),
                  stroke_width=max(1, size // 12), stroke_fill=(0, 0, 0))
    return np.asarray(canvas)


def circle_markers(image: np.ndarray, centres: list[tuple[int, int]], labels: list[int],
                   radius: int | None = None) -> np.ndarray:
    """Number each (y, x) centre inside a white circle with a black edge (the paper's matplotlib bbox)."""
    r = radius or marker_radius(*image.shape[:2])
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for (y, x), label in zip(centres, labels, strict=True):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255), outline=(0, 0, 0),
                     width=max(1, r // 8))
        draw.text((x, y), str(label), fill=(0, 0, 0), font=font(int(r * 1.3)), anchor="mm")
    return np.asarray(canvas)


def marker_radius(height: int, width: int) -> int:
    """Radius used by ``circle_markers`` so tasks can keep markers apart before drawing."""
    return max(9, min(height, width) // 40)
