"""Vectorised window statistics over depth maps, replacing the published scripts' per-pixel Python scans."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def window_range(depth: np.ndarray, size: int) -> np.ndarray:
    """max - min of the size x size window centred at every pixel; +inf where the window holds NaN or leaves
    the image, so one comparison (``< threshold``) tests flatness, validity and containment at once.

    >>> d = np.array([[0, 0, 0, 9], [0, 0, 0, 9], [0, 0, 0, 9], [0, 0, np.nan, 9]], dtype=np.float32)
    >>> window_range(d, 3)[1:3, 1:3].tolist()
    [[0.0, 9.0], [inf, inf]]
    """
    lo, hi = window_minmax(depth, size)
    return hi - lo


def window_minmax(depth: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) of every size x size window; NaN or out-of-image pixels make the window's range infinite."""
    bad = ~np.isfinite(depth)
    hi = ndimage.maximum_filter(np.where(bad, np.inf, depth), size=size, mode="constant", cval=np.inf)
    lo = ndimage.minimum_filter(np.where(bad, -np.inf, depth), size=size, mode="constant", cval=-np.inf)
    return lo, hi


def pick(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int] | None:
    """A uniformly random True pixel (y, x): the same law as shuffling all candidates and taking the first."""
    flat = np.flatnonzero(mask)
    if flat.size == 0:
        return None
    y, x = divmod(int(flat[rng.integers(flat.size)]), mask.shape[1])
    return y, x
