"""Shared types of the pretext tasks: what a task gets (a Scene) and what it returns (a Sample).

Tasks are pure: arrays and a seeded ``numpy.random.Generator`` in, a ``Sample`` out. No I/O, no clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ssrl.errors import RejectError

#: The paper's format instruction (§3.4), appended after the question with one space.
FORMAT_INSTRUCTION = (
    "You FIRST think about the reasoning process as an internal monologue and then provide the final answer. "
    "The reasoning process MUST BE enclosed within <think> </think> tags. "
    "The final answer MUST BE put in \\boxed{}."
)
#: Placeholder marking where each image goes in ``problem`` (EasyR1 / verl layout).
IMAGE_TOKEN = "<image>"
LETTERS = "ABCDEFGHIJ"
#: Separator of sequence answers ("1, 3, 0, 2"); the prompt states it and the reward matches it exactly.
SEQ_SEP = ", "


@dataclass
class Scene:
    """One decoded source: an RGB image and, for RGB-D sources, depth aligned with it.

    ``depth`` is float32 (H, W), larger = farther from the camera, NaN where invalid. ``cx`` is the principal
    point's column in pixel units (pixel centres at x + 0.5); it defaults to the image centre. ``fx`` is the
    focal length in pixels at this image's size, when the source's intrinsics are known.
    """

    source_id: str
    image: np.ndarray
    depth: np.ndarray | None = None
    cx: float | None = None
    fx: float | None = None

    def __post_init__(self) -> None:
        if self.image.dtype != np.uint8 or self.image.ndim != 3 or self.image.shape[2] != 3:
            raise ValueError(f"Scene.image must be uint8 (H, W, 3), got {self.image.dtype} {self.image.shape}")
        if self.depth is not None and self.depth.shape != self.image.shape[:2]:
            raise ValueError(f"Scene.depth shape {self.depth.shape} != image shape {self.image.shape[:2]}")

    @property
    def principal_x(self) -> float:
        return self.image.shape[1] / 2 if self.cx is None else self.cx


@dataclass
class Sample:
    """One verifiable question: images, the question text (with one ``<image>`` per image), the answer.

    ``meta`` holds every parameter needed to re-derive the answer (JSON-serialisable values only).
    """

    task: str
    problem: str
    answer: str
    images: list[np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.problem.count(IMAGE_TOKEN)
        if n != len(self.images):
            raise ValueError(f"{self.task}: problem has {n} {IMAGE_TOKEN} placeholders for {len(self.images)} images")


def reject(reason: str) -> RejectError:
    """A task cannot use this scene (too small, no flat region...): the generator records the reason."""
    return RejectError(reason)


def question(body: str, n_images: int = 1) -> str:
    """Prefix ``n_images`` placeholders (0 when the body places them itself), then the format instruction."""
    return IMAGE_TOKEN * n_images + body.strip() + " " + FORMAT_INSTRUCTION


def options_text(options: list[str]) -> str:
    return " ".join(f"{LETTERS[i]}. {opt}" for i, opt in enumerate(options))


def seq(values: list[int] | np.ndarray) -> str:
    return SEQ_SEP.join(str(int(v)) for v in values)


# --------------------------------------------------------------------------------------------- answers
_WS_AROUND_TAGS = re.compile(r"\s*([<>/])\s*")
_FORMAT = re.compile(r"^<think>.*</think>.*\\boxed\{.*\}.*$", re.DOTALL)


def extract_boxed(text: str) -> str | None:
    r"""Content of the LAST ``\boxed{...}``, braces balanced, whitespace stripped; None if absent or unclosed.

    >>> extract_boxed(r"<think>\boxed{A}</think> so \boxed{ {B} }")
    '{B}'
    >>> extract_boxed("no box") is None
    True
    """
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None


def format_ok(response: str) -> bool:
    r"""The paper's format check: ``<think>...</think>`` then ``\boxed{...}`` (spaces around tags ignored).

    >>> format_ok(r"<think> a </think> \boxed{B}"), format_ok(r"\boxed{B}")
    (True, False)
    """
    return bool(_FORMAT.match(_WS_AROUND_TAGS.sub(r"\1", response)))


def answer_part(response: str) -> str:
    """The text after the last ``</think>`` (the whole response when there is none): a box written only
    inside the reasoning is not an answer."""
    _, sep, tail = response.rpartition("</think>")
    return tail if sep else response


def exact_match(response: str, answer: str) -> float:
    r"""1.0 iff the last boxed answer equals ``answer`` exactly (the paper's rule: no case folding).

    >>> exact_match(r"<think>x</think>\boxed{B}", "B"), exact_match(r"\boxed{b}", "B"), exact_match("", "B")
    (1.0, 0.0, 0.0)
    >>> exact_match(r"<think>it is \boxed{B}</think> so", "B")
    0.0
    """
    got = extract_boxed(answer_part(response))
    return 1.0 if got is not None and got == answer else 0.0


def answer_of(sample: Sample | dict[str, Any]) -> str | None:
    return sample.answer if isinstance(sample, Sample) else sample.get("answer")


def verify_exact(response: str, sample: Sample | dict[str, Any]) -> float | None:
    r"""The paper's accuracy reward for any task: exact match of the last box; None if the sample has no answer.

    >>> verify_exact(r"<think>...</think>\boxed{2, 0, 1}", {"answer": "2, 0, 1"})
    1.0
    """
    answer = answer_of(sample)
    return None if answer is None else exact_match(response, answer)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference in grey levels; how visible a transform of a patch is.

    ``cv2.absdiff`` works in uint8 without int16 copies and reads image crops in place (it copies reversed or
    rotated views itself), ``cv2.sumElems`` adds up per channel: 3-4x faster than contiguous copies and numpy's
    mean, and as exact (float64 sums of integers, divided once).

    >>> mean_abs_diff(np.array([[[0, 0, 0], [9, 9, 9]]], np.uint8), np.zeros((1, 2, 3), np.uint8))
    4.5
    """
    diff = cv2.absdiff(a, b)
    return float(sum(cv2.sumElems(diff))) / diff.size


# --------------------------------------------------------------------------------------------- geometry
#: Patch sides and crop boxes are multiples of this many pixels. A JPEG source's 8x8 DCT blocks (16x16 chroma
#: blocks under 4:2:0) leave a faint grid in its pixels; moving or mirroring a patch whose side is not on that
#: grid would shift the grid's phase inside the patch and tell where it came from or whether it was flipped.
BLOCK = 16


def aligned(length: int, block: int = BLOCK) -> int:
    """``length`` rounded down to a multiple of ``block``, unless that would cut more than a quarter of it.

    Patches under 4 blocks (64 px) only occur with pixel budgets far below the default; they stay unaligned
    rather than shrink below the tasks' minimum sizes.

    >>> aligned(574), aligned(434), aligned(63), aligned(574, 1)
    (560, 432, 63, 574)
    """
    return length - length % block if length >= 4 * block else length


def grid_patches(image: np.ndarray, rows: int, cols: int, block: int = BLOCK) -> tuple[np.ndarray, int, int]:
    """Cut into rows x cols patches, row-major; remainder pixels on the right/bottom are dropped (paper §2.1).

    Patch sides are rounded down to multiples of ``block`` (see ``BLOCK``). Returns (patches[n, ph, pw, 3],
    ph, pw) as a view-free copy.
    """
    h, w = image.shape[:2]
    ph, pw = aligned(h // rows, block), aligned(w // cols, block)
    if ph < 1 or pw < 1:
        raise reject(f"image {w}x{h} too small for a {rows}x{cols} grid")
    cropped = image[: rows * ph, : cols * pw]
    patches = cropped.reshape(rows, ph, cols, pw, -1).swapaxes(1, 2).reshape(rows * cols, ph, pw, -1)
    return patches.copy(), ph, pw


def assemble(patches: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Inverse of ``grid_patches``: row-major patches back into one image."""
    _n, ph, pw, c = patches.shape
    return patches.reshape(rows, cols, ph, pw, c).swapaxes(1, 2).reshape(rows * ph, cols * pw, c)


def grid_views(image: np.ndarray, rows: int, cols: int, block: int = BLOCK) -> tuple[list[np.ndarray], int, int]:
    """The patches of ``grid_patches`` as views (no copy), row-major."""
    h, w = image.shape[:2]
    ph, pw = aligned(h // rows, block), aligned(w // cols, block)
    if ph < 1 or pw < 1:
        raise reject(f"image {w}x{h} too small for a {rows}x{cols} grid")
    return [image[r * ph : (r + 1) * ph, c * pw : (c + 1) * pw] for r in range(rows) for c in range(cols)], ph, pw


def compose(shown: list[np.ndarray | None], cols: int, hw: tuple[int, int]) -> np.ndarray:
    """A new (H, W, 3) image with ``shown[k]`` in grid slot k (row-major); None slots and the remainder white.

    One pass over the output instead of assembling patches and padding them (each a full-image copy).
    """
    ph, pw = next(p.shape[:2] for p in shown if p is not None)
    rows = len(shown) // cols
    out = np.empty((hw[0], hw[1], 3), np.uint8)
    out[rows * ph :], out[: rows * ph, cols * pw :] = 255, 255
    for k, patch in enumerate(shown):
        r, c = divmod(k, cols)
        out[r * ph : (r + 1) * ph, c * pw : (c + 1) * pw] = 255 if patch is None else patch
    return out
