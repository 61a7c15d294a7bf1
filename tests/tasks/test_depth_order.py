import numpy as np
import pytest

from ssrl.errors import RejectError
from ssrl.tasks import depth_order
from ssrl.tasks.base import Scene
from tests.conftest import textured


def test_invariants_on_synthetic_scenes(synth_scenes) -> None:
    cfg = depth_order.Config()
    made = 0
    for scene, _ in synth_scenes:
        for seed in range(3):
            try:
                s = depth_order.generate(scene, np.random.default_rng(seed), cfg)
            except RejectError:
                continue
            made += 1
            dn = depth_order.normalise(scene.depth, cfg.percentiles)
            markers = {m["label"]: m for m in s.meta["markers"]}
            assert sorted(markers) == [1, 2, 3]
            order = [int(v) for v in s.answer.split(", ")]
            depths = [scene.depth[tuple(markers[label]["yx"])] for label in order]
            assert depths[0] < depths[1] < depths[2]  # reading markers in answer order: nearer to farther
            for band, label in zip(cfg.bands, order, strict=True):
                y, x = markers[label]["yx"]
                assert band[0] <= dn[y, x] <= band[1]
                k = markers[label]["window"]
                thr = dict(cfg.windows)[k]
                win = dn[y - k // 2 : y + k // 2 + 1, x - k // 2 : x + k // 2 + 1]
                assert win.shape == (k, k) and np.isfinite(win).all() and win.max() - win.min() < thr
            ys = [m["yx"] for m in s.meta["markers"]]
            dists = [np.hypot(a[0] - b[0], a[1] - b[1]) for i, a in enumerate(ys) for b in ys[i + 1 :]]
            assert min(dists) >= cfg.min_separation * min(scene.depth.shape)
            assert depth_order.answer_from_meta(s.meta) == s.answer
            assert depth_order.verify(f"<think>.</think>\\boxed{{{s.answer}}}", s) == 1.0
    assert made >= 20


def test_ramp_depth_every_order_appears() -> None:
    h, w = 200, 300
    depth = np.tile(np.linspace(1, 10, w, dtype=np.float32), (h, 1))
    scene = Scene("ramp", textured(h, w), depth)
    answers = {depth_order.generate(scene, np.random.default_rng(s), depth_order.Config()).answer for s in range(60)}
    assert len(answers) == 6


@pytest.mark.parametrize(
    ("depth", "reason"),
    [
        (np.full((100, 100), np.nan, np.float32), "no valid depth"),
        (np.full((100, 100), 3.0, np.float32), "constant"),
        # two plateaus only: nothing in the middle band
        (np.where(np.arange(100)[None, :] < 50, 1.0, 9.0).repeat(100, 0).astype(np.float32), "band"),
    ],
)
def test_bad_depth_rejected(depth: np.ndarray, reason: str) -> None:
    with pytest.raises(RejectError, match=reason):
        depth_order.generate(Scene("x", textured(100, 100), depth), np.random.default_rng(0), depth_order.Config())


def test_no_depth_rejected() -> None:
    with pytest.raises(RejectError, match="no depth"):
        depth_order.generate(Scene("x", textured(100, 100)), np.random.default_rng(0), depth_order.Config())
