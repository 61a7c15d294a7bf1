"""Task 5, relative 3D position (paper §2.5): from a camera at region C facing a given way, where is region T?

Differences from the published script, all deterministic given the seed:
- candidate blocks on a strided grid with vectorised window min/max, and a vectorised pair search that
  draws uniformly among all valid pairs (no O(n^2) Python loop, no wall-clock cap);
- thresholds are fractions of the image size instead of fixed pixels (30 px rows, 150 px columns);
- which words are asked and their signs both come from the same 3-D offset (dX, dZ) of the two centres:
  Z is the depth (z-depth), X = (x + 0.5 - cx) * Z / fx is back-projected with the source's intrinsics
  (``camera.json``) or, without them, a ``hfov_deg`` field of view and the principal point at the centre;
- no question is ambiguous: a one-word answer is asked only when the other axis' offset is at most
  ``single_ratio`` of the named one, a diagonal only when each part is at least ``diagonal_share`` of the
  larger; pairs failing both are never drawn (the published script names the lateral side of near pairs
  whatever their depth gap, and a diagonal whose lateral part is a few percent of the depth part).
"""

from __future__ import annotations

import math
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
    single_ratio: float = 0.5
    """A one-word answer only when the other axis' 3-D offset is at most this fraction of the named one."""
    diagonal_share: float = 0.2
    """A diagonal answer only when each part's 3-D offset is at least this share of the larger one."""
    hfov_deg: float = 60.0
    """Horizontal field of view assumed when the source has no intrinsics (principal point at the centre)."""
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
        if not 0 < self.single_ratio < 1:
            problems.append(f"position.single_ratio must be in (0, 1), got {self.single_ratio}")
        if not 0 < self.diagonal_share <= 1:
            problems.append(f"position.diagonal_share must be in (0, 1], got {self.diagonal_share}")
        if not 1 <= self.hfov_deg <= 170:
            problems.append(f"position.hfov_deg must be in [1, 170], got {self.hfov_deg}")
        if problems:
            raise ConfigError(problems)


def focal_x(scene: Scene, cfg: Config) -> float:
    """The source's focal length in pixels, else the one ``hfov_deg`` gives at this width."""
    if scene.fx is not None:
        return float(scene.fx)
    return scene.image.shape[1] / 2 / math.tan(math.radians(cfg.hfov_deg) / 2)


def forms(dx: np.ndarray, dz: np.ndarray, cfg: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which answers a 3-D offset supports unambiguously: (lateral word only, depth word only, diagonal).

    >>> [bool(f[0]) for f in forms(np.array([2.0]), np.array([0.5]), Config())]
    [True, False, True]
    >>> [bool(f[0]) for f in forms(np.array([0.1]), np.array([-3.0]), Config())]
    [False, True, False]
    """
    ax, az = np.abs(dx), np.abs(dz)
    only_x = (ax > 0) & (az <= cfg.single_ratio * ax)
    only_z = (az > 0) & (ax <= cfg.single_ratio * az)
    diagonal = (np.minimum(ax, az) >= cfg.diagonal_share * np.maximum(ax, az)) & (np.minimum(ax, az) > 0)
    return only_x, only_z, diagonal


def _depth_range(depth: np.ndarray) -> tuple[float, float]:
    """(min, max) of valid depth: thresholds are fractions of this range (the paper normalises to [0, 1])."""
    lo, hi = float(np.fmin.reduce(depth, axis=None)), float(np.fmax.reduce(depth, axis=None))  # NaN skipped
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise reject("position: no valid depth")
    return lo, hi


def _candidates(depth: np.ndarray, cfg: Config, rng: np.random.Generator) -> np.ndarray:
    """Rows of (y, x, block min, block max) in normalised depth: up to ``max_candidates`` flat blocks drawn
    uniformly from the central strided grid. Grid points are checked in a random order, a chunk at a time,
    until enough are found, so the cost does not grow with the image (nor is the whole map normalised)."""
    h, w = depth.shape
    d_lo, d_hi = _depth_range(depth)
    scale = 1.0 / (d_hi - d_lo) if d_hi > d_lo else 0.0  # constant depth: every block is flat at 0
    half = cfg.window // 2
    step = cfg.stride or max(2, min(h, w) // 96)
    ys = np.arange(half, h - half, step)
    xs = np.arange(half, w - half, step)
    ys = ys[np.abs(ys + 0.5 - h / 2) <= cfg.central * h]
    xs = xs[np.abs(xs + 0.5 - w / 2) <= cfg.central * w]
    order = rng.permutation(ys.size * xs.size)
    found: list[np.ndarray] = []
    count, start, chunk = 0, 0, 2 * cfg.max_candidates  # most grid points are flat: check few first
    flat_depth = depth.reshape(-1)
    probe = (np.array([-half, 0, half])[:, None] * w + np.array([-half, 0, half])).ravel()  # flat offsets
    while start < order.size and count < cfg.max_candidates:
        gy, gx = np.divmod(order[start : start + chunk], xs.size)
        py, px = ys[gy], xs[gx]
        # 3 x 3 pixels of each block first: one NaN or too wide a range there rules the block out cheaply;
        # gathered as (9, n) so min/max run across 9 long rows (20x faster than along n rows of 9)
        coarse = np.take(flat_depth, probe[:, None] + (py * w + px))
        spread = coarse.max(axis=0) - coarse.min(axis=0)  # np.ptp's arithmetic, on one axis (3x faster)
        maybe = np.flatnonzero(spread * scale <= cfg.flat_range)  # NaN compares False
        lo, hi = window_minmax_at(depth, py[maybe], px[maybe], cfg.window)
        lo, hi = (lo.astype(np.float64) - d_lo) * scale, (hi.astype(np.float64) - d_lo) * scale
        flat = (hi - lo) <= cfg.flat_range
        ok = maybe[flat]
        found.append(np.stack([py[ok], px[ok], lo[flat], hi[flat]], axis=1).astype(np.float64))
        count += ok.size
        start, chunk = start + chunk, 4096
    cand = np.concatenate(found)[: cfg.max_candidates] if found else np.zeros((0, 4))
    return cand[np.lexsort((cand[:, 1], cand[:, 0]))]


def _pair_ok(cand: np.ndarray, lateral: np.ndarray, depth: np.ndarray, i: np.ndarray, j: np.ndarray,
             kind: str, cfg: Config, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """For candidate pairs (i, j): (usable, asked as a diagonal). Usable = the paper's near- or far-pair
    conditions plus an unambiguous question on the 3-D offset (``lateral``/``depth`` are each candidate's X, Z).

    Near pairs (side by side) are asked the lateral word only; far pairs the diagonal when both parts
    count, else the depth word only.
    """
    y, x, lo, hi = (cand[:, k] for k in range(4))
    dy, dx = np.abs(y[i] - y[j]), np.abs(x[i] - x[j])
    min_dist = cfg.min_distance * min(h, w)
    only_x, only_z, diagonal = forms(lateral[j] - lateral[i], depth[j] - depth[i], cfg)
    if kind == "near":
        ok = ((np.abs(hi[i] - lo[j]) <= cfg.near_depth_gap) & (np.abs(hi[j] - lo[i]) <= cfg.near_depth_gap)
              & (dy < cfg.near_max_dy * h) & (dx >= min_dist) & only_x)
        return ok, np.zeros_like(ok)
    gap = np.maximum(lo[i], lo[j]) - np.minimum(hi[i], hi[j])
    return (gap >= cfg.far_gap) & (dy**2 + dx**2 >= min_dist**2) & (diagonal | only_z), diagonal


#: Random pairs tried before enumerating all of them: usually enough, so a sample costs O(draws), not O(n^2).
_DRAWS = 4096


def _draw_pair(cand: np.ndarray, lateral: np.ndarray, depth: np.ndarray, kind: str, cfg: Config, h: int, w: int,
               rng: np.random.Generator) -> tuple[int, int, bool] | None:
    """A pair drawn uniformly among all usable pairs (i < j), or None when there is none.

    The first usable pair in a stream of uniform random pairs is uniform among usable pairs; when a batch
    holds none, every pair is enumerated and one drawn from those, which is uniform too.
    """
    n = len(cand)
    if n < 2:
        return None
    a, b = rng.integers(n, size=(2, _DRAWS))
    keep = a != b
    i, j = np.minimum(a, b)[keep], np.maximum(a, b)[keep]
    ok, diagonal = _pair_ok(cand, lateral, depth, i, j, kind, cfg, h, w)
    hit = np.flatnonzero(ok)
    if hit.size == 0:
        i, j = np.triu_indices(n, k=1)
        ok, diagonal = _pair_ok(cand, lateral, depth, i, j, kind, cfg, h, w)
        hit = np.flatnonzero(ok)
        if hit.size == 0:
            return None
        hit = hit[rng.integers(hit.size):]
    k = hit[0]
    return int(i[k]), int(j[k]), bool(diagonal[k])


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
    cand = _candidates(depth, cfg, rng)
    if len(cand) < 2:
        raise reject(f"position: fewer than two flat regions ({len(cand)} flat candidate blocks)")
    cx, fx = scene.principal_x, focal_x(scene, cfg)
    iy, ix = cand[:, 0].astype(np.intp), cand[:, 1].astype(np.intp)
    z = depth[iy, ix].astype(np.float64)
    lateral = (ix + 0.5 - cx) * z / fx
    kinds = list(cfg.pair_kinds)
    if len(kinds) == 2 and rng.random() < 0.5:
        kinds.reverse()
    for kind in kinds:
        drawn = _draw_pair(cand, lateral, z, kind, cfg, h, w, rng)
        if drawn is not None:
            break
    else:
        raise reject(f"position: no unambiguous {' or '.join(cfg.pair_kinds)} pair of flat regions "
                     f"({len(cand)} flat candidate blocks)")
    i, j, diagonal = drawn
    centres = [(int(cand[i, 0]), int(cand[i, 1])), (int(cand[j, 0]), int(cand[j, 1]))]
    labels = [int(v) for v in rng.permutation([1, 2])]  # centre k is marked labels[k]
    camera = int(rng.integers(2))
    facing = list(FACINGS)[int(rng.choice(4, p=np.asarray(cfg.facing_weights) / sum(cfg.facing_weights)))]
    use_x, use_z = (True, False) if kind == "near" else (diagonal, True)
    strings = DIAGONAL if use_x and use_z else SINGLE
    options = [strings[k] for k in rng.permutation(4)]
    meta = {
        "kind": kind, "centres": [list(c) for c in centres], "labels": labels,
        "depths": [float(depth[c]) for c in centres], "cx": cx, "fx": fx, "camera": camera, "facing": facing,
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
    """(dX, dZ) of target minus camera in the depth's units (datasets made before ``fx`` was recorded give dX
    times the focal length: the same sign)."""
    (_yc, xc), (_yt, xt) = meta["centres"][meta["camera"]], meta["centres"][1 - meta["camera"]]
    zc, zt = meta["depths"][meta["camera"]], meta["depths"][1 - meta["camera"]]
    cx, fx = meta["cx"], meta.get("fx", 1.0)
    return ((xt + 0.5 - cx) * zt - (xc + 0.5 - cx) * zc) / fx, zt - zc


def answer_from_meta(meta: dict[str, Any]) -> str:
    dx, dz = offsets(meta)
    return LETTERS[meta["options"].index(relation(meta["facing"], dx, dz, meta["use_x"], meta["use_z"]))]


def answer_space_size(meta: dict[str, Any]) -> int:
    return len(meta["options"])


def rationale(meta: dict[str, Any]) -> str:
    """A reasoning trace for the SFT cold start (``ssrl coldstart``): the offset in the viewer's frame, then
    turned into the camera's."""
    c, t = meta["labels"][meta["camera"]], meta["labels"][1 - meta["camera"]]
    dx, dz = offsets(meta)
    side = "to the right of" if dx >= 0 else "to the left of"
    depth = "farther from me than" if dz >= 0 else "closer to me than"
    if meta["use_x"] and meta["use_z"]:
        seen = f"region {t} is {side} region {c} and {depth} it, both clearly"
    elif meta["use_x"]:
        seen = f"region {t} is {side} region {c}, at about the same distance from me"
    else:
        seen = f"region {t} is {depth} region {c}, with little sideways offset"
    turn = (f"my right is the camera's {relation(meta['facing'], 1.0, 0.0, True, False).lower()} and farther from"
            f" me is the camera's {relation(meta['facing'], 0.0, 1.0, False, True).lower()}")
    where = relation(meta["facing"], dx, dz, meta["use_x"], meta["use_z"])
    return (f"From my viewpoint, {seen}. The camera at region {c} is {FACING_TEXT[meta['facing']]}, so {turn}."
            f" Region {t} is therefore at the camera's {where}, option {answer_from_meta(meta)}.")
