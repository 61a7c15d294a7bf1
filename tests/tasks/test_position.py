import numpy as np
import pytest

from ssrl.errors import RejectError
from ssrl.tasks import position
from ssrl.tasks.base import LETTERS, Scene
from tests.conftest import textured

# The paper's table (§2.5): (facing, dx >= 0, dz >= 0, use_x, use_z) -> answer.
TABLE = [
    # near pairs: lateral offset only
    ("left", True, None, "Back"), ("left", False, None, "Front"),
    ("right", True, None, "Front"), ("right", False, None, "Back"),
    ("viewer", True, None, "Left"), ("viewer", False, None, "Right"),
    ("away", True, None, "Right"), ("away", False, None, "Left"),
    # far pairs in the same column: depth offset only
    ("left", None, True, "Right"), ("left", None, False, "Left"),
    ("right", None, True, "Left"), ("right", None, False, "Right"),
    ("viewer", None, True, "Back"), ("viewer", None, False, "Front"),
    ("away", None, True, "Front"), ("away", None, False, "Back"),
    # far pairs apart in columns: both
    ("left", True, True, "Right-Back"), ("left", False, False, "Left-Front"),
    ("right", True, True, "Left-Front"), ("right", False, True, "Left-Back"),
    ("viewer", True, True, "Left-Back"), ("viewer", False, False, "Right-Front"),
    ("away", True, True, "Right-Front"), ("away", True, False, "Right-Back"),
]


@pytest.mark.parametrize(("facing", "dx_pos", "dz_pos", "expected"), TABLE)
def test_relation_table(facing: str, dx_pos: bool | None, dz_pos: bool | None, expected: str) -> None:
    dx = 0.0 if dx_pos is None else (2.0 if dx_pos else -2.0)
    dz = 0.0 if dz_pos is None else (3.0 if dz_pos else -3.0)
    assert position.relation(facing, dx, dz, dx_pos is not None, dz_pos is not None) == expected


OPPOSITE = {"Left": "Right", "Right": "Left", "Front": "Back", "Back": "Front"}


@pytest.mark.parametrize("facing", list(position.FACINGS))
def test_swapping_camera_and_target_gives_the_opposite(facing: str) -> None:
    for dx, dz, ux, uz in [(1, 0, True, False), (0, 2, False, True), (3, -1, True, True), (-2, 5, True, True)]:
        a = position.relation(facing, dx, dz, ux, uz)
        b = position.relation(facing, -dx, -dz, ux, uz)
        assert b == "-".join(OPPOSITE[p] for p in a.split("-"))


def test_answers_agree_with_3d_geometry(synth_scenes) -> None:
    """Truth from the renderer's ray-hit points, not from the generator's formula."""
    cfg = position.Config()
    kinds = set()
    made = 0
    for scene, synth in synth_scenes:
        for seed in range(6):
            try:
                s = position.generate(scene, np.random.default_rng(seed), cfg)
            except RejectError:
                continue
            m = s.meta
            c, t = m["camera"], 1 - m["camera"]
            pc, pt = synth.points[tuple(m["centres"][c])], synth.points[tuple(m["centres"][t])]
            truth = position.relation(m["facing"], float(pt[0] - pc[0]), float(pt[2] - pc[2]), m["use_x"], m["use_z"])
            assert m["options"][LETTERS.index(s.answer)] == truth
            kinds.add((m["kind"], m["use_x"], m["use_z"]))
            made += 1
    assert made >= 40
    assert {k[0] for k in kinds} == {"near", "far"}


def test_pair_invariants(synth_scenes) -> None:
    cfg = position.Config()
    for scene, _ in synth_scenes[:6]:
        h, w = scene.depth.shape
        dn = position._normalise(scene.depth)
        for seed in range(4):
            try:
                s = position.generate(scene, np.random.default_rng(seed), cfg)
            except RejectError:
                continue
            m = s.meta
            (y1, x1), (y2, x2) = m["centres"]
            wins = []
            for y, x in m["centres"]:
                assert abs(y + 0.5 - h / 2) <= cfg.central * h and abs(x + 0.5 - w / 2) <= cfg.central * w
                win = dn[y - 7 : y + 8, x - 7 : x + 8]
                assert np.isfinite(win).all() and win.max() - win.min() <= cfg.flat_range + 1e-6
                wins.append((win.min(), win.max()))
            (lo1, hi1), (lo2, hi2) = wins
            if m["kind"] == "near":
                assert abs(y1 - y2) < cfg.near_max_dy * h and abs(x1 - x2) >= cfg.min_distance * min(h, w)
                assert abs(hi1 - lo2) <= cfg.near_depth_gap + 1e-6 and abs(hi2 - lo1) <= cfg.near_depth_gap + 1e-6
                assert sorted(m["options"]) == sorted(position.SINGLE)
            else:
                assert max(lo1, lo2) - min(hi1, hi2) >= cfg.far_gap - 1e-6
                assert np.hypot(y1 - y2, x1 - x2) >= cfg.min_distance * min(h, w)
                strings = position.DIAGONAL if m["use_x"] else position.SINGLE
                assert sorted(m["options"]) == sorted(strings)
            assert position.answer_from_meta(m) == s.answer
            assert sorted(m["labels"]) == [1, 2]


def test_no_pairs_rejected() -> None:
    with pytest.raises(RejectError):
        noise = np.random.default_rng(0).random((120, 160)).astype(np.float32) + 1
        position.generate(Scene("x", textured(120, 160), noise), np.random.default_rng(0), position.Config())
