"""Shared task helpers whose fast implementations must give exactly what their definitions give."""

import numpy as np
import pytest

from ssrl.tasks import depth_order
from ssrl.tasks.base import mean_abs_diff
from ssrl.tasks.flip import flip_change, flip_patch


def _views(image: np.ndarray) -> list[np.ndarray]:
    """A crop (strided rows), flipped and rotated views (negative strides) and a contiguous copy."""
    crop = image[3:40, 5:50]
    return [crop, crop[:, ::-1], crop[::-1], np.rot90(crop), crop.copy()]


def test_mean_abs_diff_is_the_exact_mean_over_views() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    for a in _views(image):
        for b in _views(255 - image):
            if a.shape != b.shape:
                continue
            want = float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())
            assert mean_abs_diff(a, b) == want


@pytest.mark.parametrize("direction", ["horizontal", "vertical"])
def test_flip_change_is_mean_abs_diff_with_the_flipped_patch(direction: str) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    patch = image[10:50, 7:71]
    assert flip_change(patch, direction) == mean_abs_diff(patch, np.ascontiguousarray(flip_patch(patch, direction)))


def test_normalise_equals_its_float64_definition() -> None:
    """The float32 bounds decide every pixel as comparing against the float64 percentiles would."""
    rng = np.random.default_rng(2)
    for _ in range(20):
        depth = (rng.random((120, 90)) * rng.uniform(1, 500)).astype(np.float32)
        depth[rng.random(depth.shape) < 0.2] = np.nan
        depth[:3, :3] = 0.0  # ties at the low end
        q = (float(rng.uniform(0, 5)), float(rng.uniform(95, 100)))
        lo, hi = np.percentile(depth[np.isfinite(depth)], q)
        want = ((depth - np.float32(lo)) * np.float32(1 / (hi - lo))).astype(np.float32)
        want[~((depth >= lo) & (depth <= hi))] = np.nan
        assert np.array_equal(depth_order.normalise(depth, q), want, equal_nan=True)
