"""Task 3, cropped patch inpainting (paper §2.3): which of four candidates fills the black square?

Five images per sample: the masked picture, then options A-D. Distractors are three distinct transforms of
the crop or its surroundings. A scene is rejected when any possible distractor would look like the crop
itself (e.g. a rotation of a featureless square); that test never depends on the answer slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ssrl.errors import ConfigError
from ssrl.tasks.base import (
    BLOCK,
    IMAGE_TOKEN,
    LETTERS,
    Sample,
    Scene,
    aligned,
    mean_abs_diff,
    question,
    reject,
    verify_exact,
)

NAME = "crop"
REQUIRES_DEPTH = False
verify = verify_exact
TRANSFORMS = ("left_rotate", "right_rotate", "interior", "large1", "large2")


@dataclass
class Config:
    side_fraction: float = 0.5
    """Crop side = int(min(H, W) * side_fraction), rounded down to a multiple of ``base.BLOCK`` and placed on
    that grid (so a JPEG source's block grid cannot tell the crop from its rotations); the paper uses one half."""
    distractors: tuple[str, ...] = TRANSFORMS
    """Pool from which three distinct distractor transforms are drawn."""
    min_side: int = 28
    min_change: float = 4.0
    """Mean grey-level difference every distractor must have from the true crop."""

    def __post_init__(self) -> None:
        self.distractors = tuple(self.distractors)
        problems = []
        if not 0.1 <= self.side_fraction <= 0.9:
            problems.append(f"crop.side_fraction must be in [0.1, 0.9], got {self.side_fraction}")
        if len(set(self.distractors)) < 3 or not set(self.distractors) <= set(TRANSFORMS):
            problems.append(f"crop.distractors needs 3+ distinct names from {TRANSFORMS}, got {self.distractors}")
        if problems:
            raise ConfigError(problems)


def _resize(patch: np.ndarray, side: int) -> np.ndarray:
    """Area averaging (antialiased when zooming out) as OpenCV does it: 5-10x faster than Pillow's bicubic."""
    if patch.shape[:2] == (side, side):
        return patch
    return cv2.resize(np.ascontiguousarray(patch), (side, side), interpolation=cv2.INTER_AREA)


def transform(image: np.ndarray, y: int, x: int, side: int, name: str) -> np.ndarray:
    """One candidate: the crop rotated, zoomed in, or its context zoomed out (unmasked pixels), side x side."""
    h, w = image.shape[:2]
    crop = image[y : y + side, x : x + side]
    if name == "crop":
        return crop.copy()
    if name == "left_rotate":  # np.rot90(crop, 1), made by OpenCV: 8x faster than copying numpy's rotated view
        return cv2.rotate(crop, cv2.ROTATE_90_COUNTERCLOCKWISE)
    if name == "right_rotate":  # np.rot90(crop, -1)
        return cv2.rotate(crop, cv2.ROTATE_90_CLOCKWISE)
    if name == "interior":
        q = side // 4
        return _resize(crop[q : side - q, q : side - q], side)
    pad = side // 4 if name == "large1" else side // 2
    window = image[max(0, y - pad) : min(h, y + side + pad), max(0, x - pad) : min(w, x + side + pad)]
    return _resize(window, side)


def generate(scene: Scene, rng: np.random.Generator, cfg: Config = Config()) -> Sample:
    image = scene.image
    h, w = image.shape[:2]
    side = aligned(int(min(h, w) * cfg.side_fraction))
    if side < cfg.min_side:
        raise reject(f"crop: image {w}x{h} gives a {side}px crop, below min_side={cfg.min_side}")
    step = BLOCK if side % BLOCK == 0 else 1
    y = step * int(rng.integers(0, (h - side) // step + 1))
    x = step * int(rng.integers(0, (w - side) // step + 1))
    gt = int(rng.integers(4))
    picked = [cfg.distractors[i] for i in rng.choice(len(cfg.distractors), size=3, replace=False)]
    crop = transform(image, y, x, side, "crop")
    candidates = {name: transform(image, y, x, side, name) for name in picked}
    if any(mean_abs_diff(c, crop) < cfg.min_change for c in candidates.values()):
        raise reject(f"crop: a distractor is indistinguishable from the crop (change < {cfg.min_change})")
    options = [*picked[:gt], "crop", *picked[gt:]]
    masked = image.copy()
    masked[y : y + side, x : x + side] = 0
    body = (
        f"{IMAGE_TOKEN}The first image has a square region blacked out. The next four images are candidate"
        f" patches: A. {IMAGE_TOKEN} B. {IMAGE_TOKEN} C. {IMAGE_TOKEN} D. {IMAGE_TOKEN} Which candidate exactly"
        " fills the black region? Answer with the option letter, for example \\boxed{A}."
    )
    meta = {"box": [y, x, side], "options": options}
    images = [masked] + [crop if o == "crop" else candidates[o] for o in options]
    return Sample(NAME, question(body, n_images=0), answer_from_meta(meta), images, meta)


def answer_from_meta(meta: dict[str, Any]) -> str:
    return LETTERS[meta["options"].index("crop")]


def answer_space_size(meta: dict[str, Any]) -> int:
    return len(meta["options"])


#: Why each kind of candidate does or does not fill the black square, for ``rationale``.
_WHY = {
    "crop": "continues every edge around the black square at the right scale and orientation",
    "left_rotate": "shows the right content turned 90 degrees counter-clockwise, so its edges do not line up",
    "right_rotate": "shows the right content turned 90 degrees clockwise, so its edges do not line up",
    "interior": "is a zoomed-in view of the middle of the region, at too large a scale",
    "large1": "is a zoomed-out view that also shows the surroundings, at too small a scale",
    "large2": "is a zoomed-out view that also shows the surroundings, at too small a scale",
}


def rationale(meta: dict[str, Any]) -> str:
    """A reasoning trace for the SFT cold start (``ssrl coldstart``): what each candidate is."""
    parts = [f"{LETTERS[i]} {_WHY[name]}" for i, name in enumerate(meta["options"])]
    return "I compare each candidate with the border of the black region. " + "; ".join(parts) + (
        f". Only {answer_from_meta(meta)} fits exactly.")
