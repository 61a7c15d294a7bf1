import numpy as np
import pytest

from ssrl.errors import ConfigError, RejectError
from ssrl.tasks import crop
from ssrl.tasks.base import LETTERS, Scene
from tests.conftest import textured


@pytest.mark.parametrize(("h", "w"), [(252, 336), (300, 200), (224, 224)])
def test_invariants(h: int, w: int) -> None:
    img = textured(h, w, seed=h)
    for seed in range(8):
        s = crop.generate(Scene("x", img), np.random.default_rng(seed), crop.Config())
        y, x, side = s.meta["box"]
        assert side == int(min(h, w) / 2) // 16 * 16 and y % 16 == 0 and x % 16 == 0
        masked, *options = s.images
        assert len(options) == 4 and s.problem.count("<image>") == 5
        assert (masked[y : y + side, x : x + side] == 0).all()
        keep = np.ones((h, w), dtype=bool)
        keep[y : y + side, x : x + side] = False
        np.testing.assert_array_equal(masked[keep], img[keep])
        truth = img[y : y + side, x : x + side]
        assert all(o.shape == (side, side, 3) for o in options)
        equal = [i for i, o in enumerate(options) if np.array_equal(o, truth)]
        assert equal == [LETTERS.index(s.answer)]
        distractors = [o for o in s.meta["options"] if o != "crop"]
        assert len(set(distractors)) == 3 and set(distractors) <= set(crop.TRANSFORMS)
        assert crop.answer_from_meta(s.meta) == s.answer


def test_transforms_match_their_definition() -> None:
    img = textured(200, 200)
    y, x, side = 40, 60, 80
    c = img[y : y + side, x : x + side]
    np.testing.assert_array_equal(crop.transform(img, y, x, side, "left_rotate"), np.rot90(c, 1))
    np.testing.assert_array_equal(crop.transform(img, y, x, side, "right_rotate"), np.rot90(c, -1))
    for name in ("interior", "large1", "large2"):
        assert crop.transform(img, y, x, side, name).shape == (side, side, 3)


def test_featureless_and_config() -> None:
    with pytest.raises(RejectError):
        crop.generate(Scene("x", np.zeros((224, 224, 3), np.uint8)), np.random.default_rng(0), crop.Config())
    with pytest.raises(RejectError, match="min_side"):
        crop.generate(Scene("x", textured(40, 40)), np.random.default_rng(0), crop.Config())
    with pytest.raises(ConfigError):
        crop.Config(distractors=("interior", "interior"))
