"""Markers drawn region by region are pixel-identical to drawing on the whole image with Pillow."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ssrl.tasks.draw import BORDER_RGB, circle_markers, font, label_grid, marker_radius
from tests.conftest import textured


def whole_image_labels(image: np.ndarray, rows: int, cols: int, labels: list[int], border: int = 2) -> np.ndarray:
    """The reference: every rectangle and label drawn by Pillow on the whole canvas."""
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


def whole_image_markers(image: np.ndarray, centres: list[tuple[int, int]], labels: list[int]) -> np.ndarray:
    r = marker_radius(*image.shape[:2])
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for (y, x), label in zip(centres, labels, strict=True):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255), outline=(0, 0, 0), width=max(1, r // 8))
        draw.text((x, y), str(label), fill=(0, 0, 0), font=font(int(r * 1.3)), anchor="mm")
    return np.asarray(canvas)


@pytest.mark.parametrize(("h", "w", "rows", "cols"), [(1148, 868, 2, 2), (252, 336, 3, 3), (476, 588, 2, 5)])
def test_label_grid_matches_whole_image_drawing(h: int, w: int, rows: int, cols: int) -> None:
    img = textured(h, w, seed=h)
    ph, pw = h // rows, w // cols
    grid = img[: rows * ph, : cols * pw]
    labels = list(range(rows * cols))
    np.testing.assert_array_equal(label_grid(grid, rows, cols, labels), whole_image_labels(grid, rows, cols, labels))


def test_circle_markers_match_whole_image_drawing() -> None:
    img = textured(756, 1036, seed=3)
    rng = np.random.default_rng(0)
    # markers anywhere, also at the very edges and overlapping (drawn in order, later ones on top)
    centres = [(0, 0), (755, 1035), (5, 600), (400, 3), (300, 300), (310, 320)] + [
        (int(y), int(x)) for y, x in zip(rng.integers(0, 756, 6), rng.integers(0, 1036, 6), strict=True)]
    labels = [i % 9 + 1 for i in range(len(centres))]
    np.testing.assert_array_equal(circle_markers(img, centres, labels), whole_image_markers(img, centres, labels))
    assert not np.shares_memory(img, circle_markers(img, centres, labels))  # the input is never drawn on
    assert not np.shares_memory(img, label_grid(img, 2, 2, [0, 1, 2, 3]))
