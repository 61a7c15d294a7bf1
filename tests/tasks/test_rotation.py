import numpy as np
import pytest

from ssrl.errors import RejectError
from ssrl.tasks import rotation
from ssrl.tasks.base import LETTERS, Scene
from tests.conftest import textured


@pytest.mark.parametrize("mode", ["square", "image"])
def test_rotating_back_restores(mode: str) -> None:
    img = textured(168, 224)
    seen = set()
    for seed in range(16):
        s = rotation.generate(Scene("x", img), np.random.default_rng(seed), rotation.Config(mode=mode))
        angle = int(s.meta["options"][LETTERS.index(s.answer)].split()[0])
        assert angle == s.meta["angle"]
        view = rotation._view(img, mode)
        np.testing.assert_array_equal(np.rot90(s.images[0], -angle // 90), view)
        seen.add(angle)
    assert seen == {0, 90, 180, 270}


def test_rotation_symmetric_rejected() -> None:
    with pytest.raises(RejectError):
        rotation.generate(Scene("x", np.full((100, 100, 3), 9, np.uint8)), np.random.default_rng(0), rotation.Config())
