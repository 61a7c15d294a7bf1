"""Markers drawn on task images: patch borders with labels (tasks 1-2) and circled numbers (tasks 4-5).

Pillow's bundled scalable font is used, so labels look the same on every machine without system fonts
(the published scripts fall back to a tiny bitmap font when Arial is missing).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Patch border colour. The published Shuffle/Flip scripts pass (255, 0, 0) to OpenCV, i.e. blue in BGR;
#: we draw red in RGB and keep it fixed.
BORDER_RGB = (255, 0, 0)


@lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, int(size)))


def _draw_in(canvas: np.ndarray, box: tuple[int, int, int, int], paint: Callable[[ImageDraw.ImageDraw, int, int], None]
             ) -> None:
    """Run ``paint(draw, -x0, -y0)`` on the ``box`` (x0, y0, x1, y1) region of ``canvas`` only, in place.

    Converting a whole 1 Mpx array to a Pillow image and back costs ~25 ms; a label or marker covers a few
    thousand pixels. Pillow clips at the region's edges exactly as at the image's, so the pixels are the same
    as drawing on the whole image (tested).
    """
    h, w = canvas.shape[:2]
    x0, y0, x1, y1 = max(0, box[0]), max(0, box[1]), min(w, box[2]), min(h, box[3])
    if x0 >= x1 or y0 >= y1:
        return
    region = Image.fromarray(canvas[y0:y1, x0:x1])
    paint(ImageDraw.Draw(region), -x0, -y0)
    canvas[y0:y1, x0:x1] = np.asarray(region)


def _text_box(xy: tuple[int, int], text: str, fnt: ImageFont.FreeTypeFont | ImageFont.ImageFont, stroke: int,
              anchor: str | None = None) -> tuple[int, int, int, int]:
    left, top, right, bottom = fnt.getbbox(text, stroke_width=stroke, anchor=anchor)
    return (xy[0] + int(left) - 2, xy[1] + int(top) - 2, xy[0] + int(right) + 3, xy[1] + int(bottom) + 3)


def label_grid(image: np.ndarray, rows: int, cols: int, labels: list[int], border: int = 2, *,
               copy: bool = True) -> np.ndarray:
    """Draw a border inside every patch edge and its label at the top-left, white text with black outline.

    With ``copy=False`` the drawing goes into ``image`` itself (a task's own fresh canvas, or a view of it).
    """
    h, w = image.shape[:2]
    ph, pw = h // rows, w // cols
    canvas = image.copy() if copy else image
    size = max(10, ph // 8)
    offset = max(4, min(10, ph // 20))
    fnt, stroke = font(size), max(1, size // 12)
    for k, label in enumerate(labels):
        r, c = divmod(k, cols)
        x0, y0 = c * pw, r * ph
        patch = canvas[y0 : y0 + ph, x0 : x0 + pw]  # the border, as ImageDraw.rectangle(width=border) draws it
        patch[:border], patch[-border:], patch[:, :border], patch[:, -border:] = (BORDER_RGB,) * 4
        tx, ty = x0 + offset, y0 + offset

        def paint(d: ImageDraw.ImageDraw, dx: int, dy: int, tx: int = tx, ty: int = ty, label: int = label) -> None:
            d.text((tx + dx, ty + dy), str(label), fill=(255, 255, 255), font=fnt, stroke_width=stroke,
                   stroke_fill=(0, 0, 0))

        _draw_in(canvas, _text_box((tx, ty), str(label), fnt, stroke), paint)
    return canvas


def circle_markers(image: np.ndarray, centres: list[tuple[int, int]], labels: list[int],
                   radius: int | None = None) -> np.ndarray:
    """Number each (y, x) centre inside a white circle with a black edge (the paper's matplotlib bbox)."""
    r = radius or marker_radius(*image.shape[:2])
    canvas = image.copy()
    fnt = font(int(r * 1.3))

    for (y, x), label in zip(centres, labels, strict=True):
        def paint(d: ImageDraw.ImageDraw, dx: int, dy: int, x: int = x, y: int = y, label: int = label) -> None:
            d.ellipse([x - r + dx, y - r + dy, x + r + dx, y + r + dy], fill=(255, 255, 255), outline=(0, 0, 0),
                      width=max(1, r // 8))
            d.text((x + dx, y + dy), str(label), fill=(0, 0, 0), font=fnt, anchor="mm")

        tx0, ty0, tx1, ty1 = _text_box((x, y), str(label), fnt, 0, anchor="mm")
        _draw_in(canvas, (min(x - r - 2, tx0), min(y - r - 2, ty0), max(x + r + 3, tx1), max(y + r + 3, ty1)), paint)
    return canvas


def marker_radius(height: int, width: int) -> int:
    """Radius used by ``circle_markers`` so tasks can keep markers apart before drawing."""
    return max(9, min(height, width) // 40)
