"""Task 5, relative 3D position (paper §2.5): from a camera at region C facing a given way, where is region T?

Differences from the published script, all deterministic given the seed:
- candidate blocks on a strided grid with vectorised window min/max, and a vectorised pair search that
  draws uniformly among all valid pairs (no O(n^2) Python loop, no wall-clock cap);
- thresholds are fractions of the image size instead of fixed pixels (30 px rows, 150 px columns);
- the left/right relation uses the back-projected lateral coordinate X ∝ (x + 0.5 - cx) * Z (z-depth,
  principal point cx) instead of the raw column difference, so the answer agrees exactly with 3D geometry
  whenever the depth is z-depth; for equal depths it is the column difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ssrl.errors import ConfigError
from ssrl.tasks.base import LETTERS, Sample, Scene, options_text, question, reject, verify_exact
from ssrl.tasks.draw import circle_markers, marker_radius
from ssrl.tasks.windows import window_minmax_at

NAME = "position"
REQUIRES_DEPTH = True
verify = verify_exact

#: Facing direction -> its unit vector in the viewer's ground plane (X right, Z away from the viewer).
FACINGS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "viewer": (0, -1), "away": (0, 1)}
FACING_TEXT = {
    "left": "facing the left side of the image",
    "right": "facing the right side of the image",
    "viewer": "facing me (the viewer)",
    "away": "facing away from me, into the scene",
}
SINGLE = ("Left", "Right", "Front", "Back")
DIAGONAL = ("Left-Front", "Right-Front", "Right-Back", "Left-Back")


@dataclass
class Config:
    window: int = 15
    """Side of the flat block around each marker."""
    flat_range: float = 0.15
    """Max normalised-depth range inside a block."""
    central: float = 0.45
    """Markers lie within ±central·H and ±central·W of the image centre."""
    stride: int = 0
    """Step of the candidate grid in pixels; 0 = max(2, min(H, W) // 96)."""
    max_candidates: int = 768
    """Candidates kept (uniformly at random) before the pair search; bounds its cost."""
    pair_kinds: tuple[str, ...] = ("near", "far")
    """near = similar depth side by side; far = clearly different depth. Drawn uniformly."""
    near_depth_gap: float = 0.25
    near_max_dy: float = 0.0625
    """Near pairs: max row difference as a fraction of H (the paper's 30 px at 480 px)."""
    far_gap: float = 0.25
    min_distance: float = 0.125
    """Min pixel distance between markers as a fraction of min(H, W) (the paper's min(H, W) // 8)."""
    lateral_threshold: float = 0.125
    """Far pairs closer than this fraction of W in columns are asked front/back only (paper: 150 px)."""
    facing_weights: tuple[float, float, float, float] = (0.3, 0.3, 0.3, 0.1)
    """Weights of facing left, right, the viewer, away."""

    def __post_init__(self) -> None:
        self.pair_kinds = tuple(self.pair_kinds)
        self.facing_weights = tuple(float(v) for v in self.facing_weights)  # type: ignore[assignment]
        problems = []
        if self.window < 1 or self.window % 2 == 0:
            problems.append(f"position.window must be odd and positive, got {self.window}")
        if not self.pair_kinds or not set(self.pair_kinds) <= {"near", "far"}:
            problems.append(f"position.pair_kinds must be a non-empty subset of ('near', 'far'), got {self.pair_kinds}")
        if len(self.facing_weights) != 4 or min(self.facing_weights) < 0 or sum(self.facing_weights) <= 0:
            problems.append(f"position.facing_weights needs 4 non-negative weights, got {self.facing_weights}")
        if problems:
            raise ConfigError(problems)


def _normalise(depth: np.ndarray) -> np.ndarray:
    valid = np.isfinite(depth)
    if not valid.any():
        raise reject("position: no valid depth")
    lo, hi = float(depth[valid].min()), float(depth[valid].max())
    if hi <= lo:
        return np.where(valid, 1.0, np.nan).astype(np.float32)
    return ((depth - lo) / (hi - lo)).astype(np.float32)


def _candidates(dn: np.ndarray, cfg: Config, rng: np.random.Generator) -> np.ndarray:
    """Rows of (y, x, block min, block max): up to ``max_candidates`` flat blocks drawn uniformly from the
    central strided grid. Grid points are checked in a random order, a chunk at a time, until enough are
    found, so the cost does not grow with the image."""
    h, w = dn.shape
    half = cfg.window // 2
    step = cfg.stride or max(2, min(h, w) // 96)
    ys = np.arange(half, h - half, step)
    xs = np.arange(half, w - half, step)
    ys = ys[np.abs(ys + 0.5 - h / 2) <= cfg.central * h]
    xs = xs[np.abs(xs + 0.5 - w / 2) <= cfg.central * w]
    order = rng.permutation(ys.size * xs.size)
    found: list[np.ndarray] = []
    count = 0
    for start in range(0, order.size, 4096):
        gy, gx = np.divmod(order[start : start + 4096], xs.size)
        lo, hi = window_minmax_at(dn, ys[gy], xs[gx], cfg.window)
        ok = (hi - lo) <= cfg.flat_range
        found.append(np.stack([ys[gy][ok], xs[gx][ok], lo[ok], hi[ok]], axis=1).astype(np.float64))
        count += int(ok.sum())
        if count >= cfg.max_candidates:
            break
    cand = np.concatenate(found)[: cfg.max_candidates] if found else np.zeros((0, 4))
    return cand[np.lexsort((cand[:, 1], cand[:, 0]))]


def _pairs(cand: np.ndarray, kind: str, cfg: Config, h: int, w: int) -> np.ndarray:
    """Index pairs (i < j) satisfying the paper's near- or far-pair conditions."""
    y, x, lo, hi = (cand[:, k] for k in range(4))
    dy = np.abs(y[:, None] - y[None, :])
    dx = np.abs(x[:, None] - x[None, :])
    min_dist = cfg.min_distance * min(h, w)
    if kind == "near":
        ok = ((np.abs(hi[:, None] - lo[None, :]) <= cfg.near_depth_gap)
              & (np.abs(hi[None, :] - lo[:, None]) <= cfg.near_depth_gap)
              & (dy < cfg.near_max_dy * h) & (dx >= min_dist))
    else:
        gap = np.maximum(lo[:, None], lo[None, :]) - np.minimum(hi[:, None], hi[None, :])
        ok = (gap >= cfg.far_gap) & (dy**2 + dx**2 >= min_dist**2)
    return np.argwhere(np.triu(ok, k=1))


def relation(facing: str, dx: float, dz: float, use_x: bool, use_z: bool) -> str:
    """Where a target lies for a camera facing ``facing``, from its lateral (dx) and depth (dz) offsets.

    The viewer looks along +Z with +X on the right; turning to face f puts the camera's right at
    (f_z, -f_x). Only the used axes count; ties count as positive.

    >>> relation("left", dx=0.0, dz=2.0, use_x=False, use_z=True), relation("viewer", 1.0, 0.0, True, False)
    ('Right', 'Left')
    >>> relation("right", dx=3.0, dz=1.0, use_x=True, use_z=True)
    'Left-Front'
    """
    fx, fz = FACINGS[facing]
    vx = (1 if dx >= 0 else -1) if use_x else 0
    vz = (1 if dz >= 0 else -1) if use_z else 0
    forward = vx * fx + vz * fz
    right = vx * fz - vz * fx
    lateral = "Right" if right > 0 else "Left" if right < 0 else ""
    fore = "Front" if forward > 0 else "Back" if forward < 0 else ""
    return "-".join(p for p in (lateral, fore) if p)


def generate(scene: Scene, rng: np.random.Generator, cfg: Config = Config()) -> Sample:
    if scene.depth is None:
        raise reject("position: the source has no depth map")
    depth = scene.depth
    h, w = depth.shape
    cand = _candidates(_normalise(depth), cfg, rng)
    kinds = list(cfg.pair_kinds)
    if len(kinds) == 2 and rng.random() < 0.5:
        kinds.reverse()
    for kind in kinds:
        pairs = _pairs(cand, kind, cfg, h, w)
        if len(pairs):
            break
    else:
        raise reject(f"position: no {' or '.join(cfg.pair_kinds)} pair of flat regions "
                     f"({len(cand)} flat candidate blocks)")
    i, j = pairs[rng.integers(len(pairs))]
    centres = [(int(cand[i, 0]), int(cand[i, 1])), (int(cand[j, 0]), int(cand[j, 1]))]
    labels = [int(v) for v in rng.permutation([1, 2])]  # centre k is marked labels[k]
    camera = int(rng.integers(2))
    facing = list(FACINGS)[int(rng.choice(4, p=np.asarray(cfg.facing_weights) / sum(cfg.facing_weights)))]
    col_gap = abs(centres[0][1] - centres[1][1])
    use_x, use_z = (True, False) if kind == "near" else (col_gap > cfg.lateral_threshold * w, True)
    strings = DIAGONAL if use_x and use_z else SINGLE
    options = [strings[k] for k in rng.permutation(4)]
    cx = scene.principal_x
    meta = {
        "kind": kind, "centres": [list(c) for c in centres], "labels": labels,
        "depths": [float(depth[c]) for c in centres], "cx": cx, "camera": camera, "facing": facing,
        "use_x": bool(use_x), "use_z": bool(use_z), "options": options,
    }
    image = circle_markers(scene.image, centres, labels, radius=marker_radius(h, w))
    c_label, t_label = labels[camera], labels[1 - camera]
    height = " and ignore the height difference between the regions" if kind == "far" else ""
    body = (
        f"The image has two regions marked 1 and 2. Suppose a camera is at region {c_label},"
        f" {FACING_TEXT[facing]}. From the camera's point of view, where is region {t_label}?"
        f" {options_text(options)}. Use cues such as depth, orientation and 3D relations{height}."
        " Answer with the option letter (A, B, C or D), for example \\boxed{A}."
    )
    return Sample(NAME, question(body), answer_from_meta(meta), [image], meta)


def offsets(meta: dict[str, Any]) -> tuple[float, float]:
    """(dX, dZ) of target minus camera; dX is the lateral coordinate times the focal length."""
    (_yc, xc), (_yt, xt) = meta["centres"][meta["camera"]], meta["centres"][1 - meta["camera"]]
    zc, zt = meta["depths"][meta["camera"]], meta["depths"][1 - meta["camera"]]
    cx = meta["cx"]
    return (xt + 0.5 - cx) * zt - (xc + 0.5 - cx) * zc, zt - zc


def answer_from_meta(meta: dict[str, Any]) -> str:
    dx, dz = offsets(meta)
    return LETTERS[meta["options"].index(relation(meta["facing"], dx, dz, meta["use_x"], meta["use_z"]))]


def answer_space_size(meta: dict[str, Any]) -> int:
    return len(meta["options"])
