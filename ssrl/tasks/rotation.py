"""Task 6 (ours, off by default): rotation prediction — by how many degrees was the image turned?

A classic self-supervised pretext task (Gidaris et al., 2018) recast as a verifiable 4-way choice. By
default the central square is used, so the aspect ratio gives nothing away. Scenes that look alike under
some rotations are rejected before the angle is drawn, so the answer stays uniform.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ssrl.errors import ConfigError
from ssrl.tasks.base import (
    LETTERS,
    Sample,
    Scene,
    mean_abs_diff,
    options_text,
    question,
    reject,
    verify_exact,
)

NAME = "rotation"
REQUIRES_DEPTH = False
verify = verify_exact
ANGLES = (0, 90, 180, 270)


@dataclass
class Config:
    mode: str = "square"
    """square = the central square is rotated; image = the whole image (its aspect ratio may flip)."""
    min_side: int = 56
    min_change: float = 4.0
    """Mean grey-level difference every pair of rotations must have."""

    def __post_init__(self) -> None:
        if self.mode not in ("square", "image"):
            raise ConfigError(f"rotation.mode must be 'square' or 'image', got {self.mode!r}")


def _view(image: np.ndarray, mode: str) -> np.ndarray:
    if mode == "image":
        return image
    h, w = image.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return image[y : y + s, x : x + s]


def generate(scene: Scene, rng: np.random.Generator, cfg: Config = Config()) -> Sample:
    view = _view(scene.image, cfg.mode)
    if min(view.shape[:2]) < cfg.min_side:
        raise reject(f"rotation: image side {min(view.shape[:2])} px is below min_side={cfg.min_side}")
    small = view[:: max(1, min(view.shape[:2]) // 64), :: max(1, min(view.shape[:2]) // 64)]
    if cfg.mode == "square" and min(mean_abs_diff(small, np.rot90(small, k)) for k in (1, 2)) < cfg.min_change:
        raise reject("rotation: the image looks the same when rotated")
    if cfg.mode == "image" and mean_abs_diff(small, np.rot90(small, 2)) < cfg.min_change:
        raise reject("rotation: the image looks the same when rotated by 180 degrees")
    k = int(rng.integers(4))
    options = [f"{ANGLES[i]} degrees" for i in rng.permutation(4)]
    body = (
        "This image may have been rotated counter-clockwise by 0, 90, 180 or 270 degrees. By how many degrees"
        f" was it rotated? {options_text(options)}. Answer with the option letter, for example \\boxed{{A}}."
    )
    meta = {"angle": ANGLES[k], "mode": cfg.mode, "options": options}
    return Sample(NAME, question(body), answer_from_meta(meta), [np.rot90(view, k).copy()], meta)


def answer_from_meta(meta: dict[str, Any]) -> str:
    return LETTERS[meta["options"].index(f"{meta['angle']} degrees")]


def answer_space_size(meta: dict[str, Any]) -> int:
    return len(meta["options"])


def rationale(meta: dict[str, Any]) -> str:
    """A reasoning trace for the SFT cold start (``ssrl coldstart``): how the upright cues point."""
    up = {0: "at the top", 90: "on the left", 180: "at the bottom", 270: "on the right"}[meta["angle"]]
    return (f"Upright cues such as the sky, the ground and vertical structures show that the scene's top is now"
            f" {up}, so the image was turned {meta['angle']} degrees counter-clockwise. The answer is"
            f" {answer_from_meta(meta)}.")
