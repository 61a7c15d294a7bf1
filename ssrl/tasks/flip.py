"""Task 2, flipped patch recognition (paper §2.2): which labelled patch was mirrored?

Unlike the published script, the flip direction is an explicit, recorded parameter; a scene is accepted only
if the flip would be visible in *every* patch, so acceptance never depends on the answer and the answer
stays uniform over positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ssrl.errors import ConfigError
from ssrl.tasks.base import (
    SEQ_SEP,
    Sample,
    Scene,
    compose,
    grid_views,
    mean_abs_diff,
    question,
    reject,
    verify_exact,
)
from ssrl.tasks.draw import label_grid

NAME = "flip"
REQUIRES_DEPTH = False
verify = verify_exact
DIRECTIONS = ("horizontal", "vertical")


@dataclass
class Config:
    rows: int = 2
    cols: int = 2
    directions: tuple[str, ...] = DIRECTIONS
    """horizontal = mirrored left-right; vertical = upside down."""
    ask_direction: bool = False
    """Also ask for the direction: the answer becomes e.g. ``2, horizontal``."""
    min_change: float = 4.0
    """Mean grey-level change a flip must cause in every patch, else the scene is rejected."""
    min_patch: int = 28

    def __post_init__(self) -> None:
        self.directions = tuple(self.directions)
        bad = [d for d in self.directions if d not in DIRECTIONS]
        if bad or not self.directions:
            raise ConfigError(f"flip.directions must be a non-empty subset of {DIRECTIONS}, got {self.directions}")
        if self.rows * self.cols < 2:
            raise ConfigError(f"flip needs at least 2 patches, got {self.rows}x{self.cols}")


def flip_patch(patch: np.ndarray, direction: str) -> np.ndarray:
    return patch[:, ::-1] if direction == "horizontal" else patch[::-1]


def flip_change(patch: np.ndarray, direction: str) -> float:
    """How visible flipping ``patch`` is (``mean_abs_diff`` with its flip); OpenCV flips a crop in place of
    copying numpy's reversed view, ~3x faster in all."""
    return mean_abs_diff(patch, cv2.flip(patch, 1 if direction == "horizontal" else 0))


def generate(scene: Scene, rng: np.random.Generator, cfg: Config = Config()) -> Sample:
    patches, ph, pw = grid_views(scene.image, cfg.rows, cfg.cols)
    if min(ph, pw) < cfg.min_patch:
        raise reject(f"flip: patches {pw}x{ph} px are smaller than min_patch={cfg.min_patch}")
    n = len(patches)
    index = int(rng.integers(n))
    order = list(rng.permutation(len(cfg.directions)))
    direction = next((cfg.directions[i] for i in order
                      if all(flip_change(p, cfg.directions[i]) >= cfg.min_change for p in patches)),
                     None)
    if direction is None:
        raise reject(f"flip: some patch looks the same when flipped (change < {cfg.min_change} grey levels)")
    shown = [flip_patch(p, direction) if k == index else p for k, p in enumerate(patches)]
    image = compose(shown, cfg.cols, scene.image.shape[:2])
    label_grid(image[: cfg.rows * ph, : cfg.cols * pw], cfg.rows, cfg.cols, list(range(n)), copy=False)
    if cfg.ask_direction:
        ask = ("Give its label and the direction of the flip (horizontal = mirrored left-right, vertical = upside"
               f" down) separated by a comma and a space, for example \\boxed{{1{SEQ_SEP}vertical}}.")
    else:
        ask = "Answer with its label only, for example \\boxed{1}."
    body = (
        f"The image was cut into a grid of {cfg.rows} rows and {cfg.cols} columns of patches, labelled 0 to {n - 1}"
        " at their top-left corners in reading order. Exactly one patch has been flipped (mirrored) in place."
        f" Which patch was flipped? {ask}"
    )
    meta = {"rows": cfg.rows, "cols": cfg.cols, "index": index, "direction": direction,
            "ask_direction": cfg.ask_direction, "patch_hw": [ph, pw]}
    return Sample(NAME, question(body), answer_from_meta(meta), [image], meta)


def answer_from_meta(meta: dict[str, Any]) -> str:
    return f"{meta['index']}{SEQ_SEP}{meta['direction']}" if meta["ask_direction"] else str(meta["index"])


def answer_space_size(meta: dict[str, Any]) -> int:
    return meta["rows"] * meta["cols"] * (len(DIRECTIONS) if meta["ask_direction"] else 1)


def rationale(meta: dict[str, Any]) -> str:
    """A reasoning trace for the SFT cold start (``ssrl coldstart``): which patch breaks continuity, and how."""
    how = "mirrored left-right" if meta["direction"] == "horizontal" else "turned upside down"
    return (f"Every patch continues into its neighbours except patch {meta['index']}: its content is {how}, so"
            f" lines and edges at its borders do not meet those around it, and it reads correctly only when"
            f" flipped {meta['direction']}ly back. The answer is {answer_from_meta(meta)}.")
