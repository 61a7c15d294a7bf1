import numpy as np
import pytest

from ssrl.errors import RejectError
from ssrl.tasks import flip
from ssrl.tasks.base import Scene, grid_patches
from tests.conftest import textured


def comparable(h: int, w: int, direction: str) -> np.ndarray:
    """Pixels untouched by border and label, both as drawn and after flipping back."""
    m = np.ones((h, w), dtype=bool)
    m[:3], m[-3:], m[:, :3], m[:, -3:] = False, False, False, False
    m[: h // 3, : w // 3] = False  # label corner
    return m & flip.flip_patch(m, direction)


@pytest.mark.parametrize("direction", ["horizontal", "vertical"])
def test_flipping_back_restores(direction: str) -> None:
    img = textured(252, 336, seed=1)
    orig, ph, pw = grid_patches(img, 2, 2)
    mask = comparable(ph, pw, direction)
    for seed in range(8):
        s = flip.generate(Scene("x", img), np.random.default_rng(seed), flip.Config(directions=(direction,)))
        shown, _, _ = grid_patches(s.images[0], 2, 2)
        changed = [i for i in range(4) if not np.array_equal(shown[i][mask], orig[i][mask])]
        assert changed == [int(s.answer)] == [s.meta["index"]]
        restored = flip.flip_patch(shown[changed[0]], direction)
        np.testing.assert_array_equal(restored[mask], orig[changed[0]][mask])
        assert s.meta["direction"] == direction


def test_direction_variant_answer() -> None:
    s = flip.generate(Scene("x", textured(224, 224)), np.random.default_rng(0), flip.Config(ask_direction=True))
    index, direction = s.answer.split(", ")
    assert int(index) == s.meta["index"] and direction == s.meta["direction"]
    assert flip.verify(f"<think>.</think>\\boxed{{{s.answer}}}", s) == 1.0
    assert flip.answer_space_size(s.meta) == 8


def test_symmetric_image_rejected() -> None:
    flat = np.full((224, 224, 3), 120, dtype=np.uint8)
    with pytest.raises(RejectError, match="same when flipped"):
        flip.generate(Scene("x", flat), np.random.default_rng(0), flip.Config())


def test_acceptance_does_not_depend_on_answer() -> None:
    """Top half flat sky, bottom textured: a script that skipped invisible flips would never answer 0 or 1."""
    img = textured(224, 224)
    img[:112] = 200
    with pytest.raises(RejectError):
        flip.generate(Scene("x", img), np.random.default_rng(0), flip.Config())
