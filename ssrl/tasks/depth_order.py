"""Task 4, regional depth ordering (paper §2.4): order three circled regions from nearest to farthest.

Regions are centres of locally flat windows in three separated bands of normalised depth. Candidate
windows come from vectorised min/max filters (the published script scans shuffled pixels one by one), and
markers keep a minimum pixel distance so circles never overlap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ssrl.errors import ConfigError
from ssrl.tasks.base import Sample, Scene, question, reject, seq, verify_exact
from ssrl.tasks.draw import circle_markers, marker_radius
from ssrl.tasks.windows import exact_percentiles, pick_flat

NAME = "depth_order"
REQUIRES_DEPTH = True
verify = verify_exact


@dataclass
class Config:
    bands: tuple[tuple[float, float], ...] = ((0.0, 0.30), (0.35, 0.65), (0.70, 1.0))
    """Normalised-depth bands, near to far; the gaps between them guarantee separation."""
    windows: tuple[tuple[int, float], ...] = ((25, 0.15), (11, 0.20))
    """(window side, max depth range inside it) tried in order: a flat region around each marker."""
    percentiles: tuple[float, float] = (0.5, 99.5)
    """Robust depth range: outliers beyond these percentiles of valid depth are ignored."""
    min_separation: float = 0.1
    """Minimum pixel distance between markers, as a fraction of min(H, W)."""

    def __post_init__(self) -> None:
        self.bands = tuple(tuple(b) for b in self.bands)  # type: ignore[assignment]
        self.windows = tuple((int(k), float(t)) for k, t in self.windows)
        problems = []
        if len(self.bands) < 2 or len(self.bands) > 9:
            problems.append(f"depth_order.bands needs 2..9 bands, got {len(self.bands)}")
        edges = [v for b in self.bands for v in b]
        if edges != sorted(edges) or edges[0] < 0 or edges[-1] > 1:
            problems.append(f"depth_order.bands must be ascending, disjoint and inside [0, 1], got {self.bands}")
        if any(k < 1 or k % 2 == 0 for k, _ in self.windows):
            problems.append(f"depth_order.windows sides must be odd positive, got {self.windows}")
        if problems:
            raise ConfigError(problems)


def normalise(depth: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Map valid depth to [0, 1] between robust percentiles; outliers and invalid pixels become NaN."""
    valid = np.isfinite(depth)
    if not valid.any():
        raise reject("depth_order: no valid depth")
    lo, hi = exact_percentiles(depth, percentiles, valid)  # no copy of the valid pixels
    if not hi > lo:
        raise reject("depth_order: depth is constant over the image")
    dn = depth - np.float32(lo)
    dn *= np.float32(1 / (hi - lo))  # in place: the same float32 (or float64) products, one array fewer
    dn = dn.astype(np.float32, copy=False)
    # [lo, hi] as the float32 values it holds, so the map is compared without a float64 cast (4x faster)
    first, last = _inward_float32(lo, hi) if depth.dtype == np.float32 else (lo, hi)
    outside = depth < first
    outside |= depth > last
    dn[outside] = np.nan  # NaN depth is NaN in dn already
    return dn


def _inward_float32(lo: float, hi: float) -> tuple[np.float32, np.float32]:
    """The smallest float32 >= lo and the largest <= hi: for float32 x, ``x >= lo`` iff ``x >= first`` and
    ``x <= hi`` iff ``x <= last``, exactly as the float64 comparison would decide."""
    first, last = np.float32(lo), np.float32(hi)
    if first < lo:
        first = np.nextafter(first, np.float32(np.inf))
    if last > hi:
        last = np.nextafter(last, np.float32(-np.inf))
    return first, last


def generate(scene: Scene, rng: np.random.Generator, cfg: Config = Config()) -> Sample:
    if scene.depth is None:
        raise reject("depth_order: the source has no depth map")
    h, w = scene.image.shape[:2]
    dn = normalise(scene.depth, cfg.percentiles)
    min_dist = max(cfg.min_separation * min(h, w), 2.2 * marker_radius(h, w))
    reach = math.ceil(min_dist)  # pixels farther than this along either axis are far enough already
    far_enough = np.ones((h, w), dtype=bool)
    centres: list[tuple[int, int]] = []
    window_used: list[int] = []
    for lo, hi in cfg.bands:
        in_band = (dn >= lo) & (dn <= hi) & far_enough
        found = next(((yx, k) for k, t in cfg.windows if (yx := pick_flat(dn, in_band, k, t, rng)) is not None),
                     None)
        if found is None:
            raise reject(f"depth_order: no flat region in depth band [{lo}, {hi}]")
        centres.append(found[0])
        window_used.append(found[1])
        y0, x0 = max(0, yx[0] - reach), max(0, yx[1] - reach)
        yy, xx = np.ogrid[y0 : min(h, yx[0] + reach + 1), x0 : min(w, yx[1] + reach + 1)]
        far_enough[y0 : y0 + yy.shape[0], x0 : x0 + xx.shape[1]] &= (yy - yx[0]) ** 2 + (xx - yx[1]) ** 2 >= min_dist**2
    n = len(centres)
    ranks = rng.permutation(n)  # marker label i+1 sits on band ranks[i]
    labels_by_band = [int(np.flatnonzero(ranks == b)[0]) + 1 for b in range(n)]
    markers = [{"label": labels_by_band[b], "yx": list(centres[b]), "depth": float(scene.depth[centres[b]]),
                "depth_normalised": float(dn[centres[b]]), "window": window_used[b]} for b in range(n)]
    markers.sort(key=lambda m: m["label"])
    image = circle_markers(scene.image, [tuple(m["yx"]) for m in markers], [m["label"] for m in markers])
    labels = ", ".join(str(i) for i in range(1, n))
    body = (
        f"The image has {n} regions marked with the numbers {labels} and {n}. Order them by their distance"
        " from the camera, from the closest to the farthest, and write the marker numbers separated by a comma"
        f" and a space, for example \\boxed{{{seq(range(1, n + 1))}}}."
    )
    meta = {"markers": markers, "bands": [list(b) for b in cfg.bands]}
    return Sample(NAME, question(body), answer_from_meta(meta), [image], meta)


def answer_from_meta(meta: dict[str, Any]) -> str:
    return seq([m["label"] for m in sorted(meta["markers"], key=lambda m: m["depth"])])


def answer_space_size(meta: dict[str, Any]) -> int:
    return math.factorial(len(meta["markers"]))


def rationale(meta: dict[str, Any]) -> str:
    """A reasoning trace for the SFT cold start (``ssrl coldstart``): the markers from near to far."""
    order = [m["label"] for m in sorted(meta["markers"], key=lambda m: m["depth"])]
    middle = "".join(f", then region {label}" for label in order[1:-1])
    return ("Judging by perspective, relative size, occlusion, texture density and height in the image, region"
            f" {order[0]} is the closest{middle}, and region {order[-1]} is the farthest."
            f" From closest to farthest the answer is {answer_from_meta(meta)}.")
