"""Task 1, shuffled patch reordering (paper §2.1): restore a grid of shuffled, labelled patches."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ssrl.errors import ConfigError
from ssrl.tasks.base import Sample, Scene, compose, grid_views, question, reject, seq, verify_exact
from ssrl.tasks.draw import label_grid

NAME = "shuffle"
REQUIRES_DEPTH = False
verify = verify_exact


@dataclass
class Config:
    rows: int = 2
    cols: int = 2
    mosaic: bool = False
    """Blank one displayed patch white (the paper's mosaic variant)."""
    min_patch: int = 28
    """Smallest patch side in pixels; smaller images are rejected."""

    def __post_init__(self) -> None:
        if self.rows < 1 or self.cols < 1 or self.rows * self.cols < 2 or self.rows * self.cols > 10:
            raise ConfigError(f"shuffle.rows x shuffle.cols must give 2..10 patches, got {self.rows}x{self.cols}")


def generate(scene: Scene, rng: np.random.Generator, cfg: Config = Config()) -> Sample:
    patches, ph, pw = grid_views(scene.image, cfg.rows, cfg.cols)
    if min(ph, pw) < cfg.min_patch:
        raise reject(f"shuffle: patches {pw}x{ph} px are smaller than min_patch={cfg.min_patch}")
    n = cfg.rows * cfg.cols
    perm = rng.permutation(n)
    while np.array_equal(perm, np.arange(n)):  # the identity is no puzzle
        perm = rng.permutation(n)
    shown: list[np.ndarray | None] = [patches[i] for i in perm]
    blank = None
    if cfg.mosaic:
        blank = int(rng.integers(n))
        shown[blank] = None  # left white
    image = compose(shown, cfg.cols, scene.image.shape[:2])
    label_grid(image[: cfg.rows * ph, : cfg.cols * pw], cfg.rows, cfg.cols, list(range(n)), copy=False)
    blank_text = (" One patch has been replaced by a blank white patch; it keeps its label and still has a"
                  " correct position.") if cfg.mosaic else ""
    body = (
        f"The image was cut into a grid of {cfg.rows} rows and {cfg.cols} columns of patches, and the patches were"
        f" shuffled. Each patch carries its label (0 to {n - 1}) at its top-left corner.{blank_text}"
        " Restore the original image: reading the restored image row by row, left to right and top to bottom,"
        " list the label of the patch that belongs at each position. Write the labels separated by a comma and"
        f" a space, for example \\boxed{{{seq(range(n))}}}."
    )
    meta: dict[str, Any] = {"rows": cfg.rows, "cols": cfg.cols, "permutation": perm.tolist(), "blank": blank,
                            "patch_hw": [ph, pw]}
    return Sample(NAME, question(body), answer_from_meta(meta), [image], meta)


def answer_from_meta(meta: dict[str, Any]) -> str:
    """Displayed position k shows original patch perm[k], so original slot i is restored by label argsort[i]."""
    return seq(np.argsort(meta["permutation"]))


def answer_space_size(meta: dict[str, Any]) -> int:
    """Every permutation but the identity is a possible answer."""
    return math.factorial(meta["rows"] * meta["cols"]) - 1


def rationale(meta: dict[str, Any]) -> str:
    """A reasoning trace for the SFT cold start (``ssrl coldstart``): where each shown patch belongs."""
    cols, blank = meta["cols"], meta.get("blank")
    steps = [f"row {p // cols + 1}, column {p % cols + 1} takes patch {label}"
             + (" (the blank one, by elimination)" if label == blank else "")
             for p, label in enumerate(np.argsort(meta["permutation"]).tolist())]
    return ("I match the patches so that edges, lines, colours and textures continue across every border: "
            + "; ".join(steps) + f". Reading the restored grid row by row, the answer is {answer_from_meta(meta)}.")
