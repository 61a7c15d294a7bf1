import numpy as np
import pytest

from ssrl.errors import ConfigError, RejectError
from ssrl.tasks import shuffle
from ssrl.tasks.base import Scene, grid_patches
from tests.conftest import textured

CASES = [(2, 2, False), (2, 3, False), (3, 3, False), (2, 2, True), (3, 2, True)]


def interior(p: np.ndarray) -> np.ndarray:
    """The part of a patch no marker touches: below the label, inside the border."""
    h, w = p.shape[:2]
    return p[h // 2 : h - 3, 3 : w - 3]


@pytest.mark.parametrize(("rows", "cols", "mosaic"), CASES)
def test_answer_restores_image(rows: int, cols: int, mosaic: bool) -> None:
    img = textured(250, 333, seed=rows * 10 + cols)
    cfg = shuffle.Config(rows=rows, cols=cols, mosaic=mosaic)
    for seed in range(5):
        s = shuffle.generate(Scene("x", img), np.random.default_rng(seed), cfg)
        n = rows * cols
        gt = [int(v) for v in s.answer.split(", ")]
        assert sorted(gt) == list(range(n)) and gt != list(range(n))
        out = s.images[0]
        assert out.shape == img.shape  # the remainder dropped to align patches is filled, not cut
        assert all(v % 16 == 0 for v in s.meta["patch_hw"])
        shown, _, _ = grid_patches(out, rows, cols)
        orig, _, _ = grid_patches(img, rows, cols)
        blank = s.meta["blank"]
        for i in range(n):
            if mosaic and gt[i] == blank:
                assert (interior(shown[gt[i]]) == 255).all()
            else:
                np.testing.assert_array_equal(interior(shown[gt[i]]), interior(orig[i]))
        assert shuffle.answer_from_meta(s.meta) == s.answer
        assert shuffle.verify(f"<think>ok</think>\\boxed{{{s.answer}}}", s) == 1.0
        assert shuffle.verify(f"<think>ok</think>\\boxed{{{s.answer.replace(', ', ',')}}}", s) == 0.0


def test_mosaic_blanks_exactly_one_patch() -> None:
    img = textured(224, 224)
    s = shuffle.generate(Scene("x", img), np.random.default_rng(3), shuffle.Config(mosaic=True))
    shown, _, _ = grid_patches(s.images[0], 2, 2)
    assert sum(bool((interior(p) == 255).all()) for p in shown) == 1


def test_too_small_and_bad_config() -> None:
    with pytest.raises(RejectError, match="min_patch"):
        shuffle.generate(Scene("x", textured(40, 40)), np.random.default_rng(0), shuffle.Config())
    with pytest.raises(ConfigError):
        shuffle.Config(rows=1, cols=1)
