import json
import math
from collections import Counter

import numpy as np
import pytest

from ssrl.dataset.generate import GenerateConfig, run
from ssrl.dataset.report import uniformity
from ssrl.dataset.shards import iter_rows
from ssrl.errors import RejectError
from ssrl.sources.synth import SynthConfig, render_scene, synthesize
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


def _truth(synth, meta: dict) -> tuple[float, float]:
    """(dX, dZ) of target minus camera from the renderer's exact ray-hit points."""
    c = meta["camera"]
    pc, pt = synth.points[tuple(meta["centres"][c])], synth.points[tuple(meta["centres"][1 - c])]
    return float(pt[0] - pc[0]), float(pt[2] - pc[2])


#: The issue's default rules (issue 14 §1), the defaults of ``single_ratio`` and ``diagonal_share``.
RATIO, SHARE = 0.5, 0.2


def _unambiguous(meta: dict, dx: float, dz: float) -> bool:
    """The rules written out independently of ``position.forms``: a one-word answer only when the other axis'
    offset is at most RATIO of the named one; a diagonal only when each part is at least SHARE of the larger."""
    ax, az = abs(dx), abs(dz)
    if meta["use_x"] and meta["use_z"]:
        return min(ax, az) >= SHARE * max(ax, az) > 0
    if meta["use_x"]:
        return az <= RATIO * ax and ax > 0
    return ax <= RATIO * az and az > 0


def _right(meta: dict, answer: str, dx: float, dz: float) -> bool:
    return meta["options"][LETTERS.index(answer)] == position.relation(meta["facing"], dx, dz, meta["use_x"],
                                                                       meta["use_z"])


@pytest.mark.slow
def test_no_ambiguous_question_and_every_answer_right(synth_scenes) -> None:
    """On 12 synthetic scenes x 20 seeds, against the renderer's exact 3-D points: every sample is unambiguous
    by the rules, its answer is the true relation, the answer letters pass the report's chi-square uniformity
    test, and all three question forms (near lateral, far depth-only, far diagonal) occur.

    Acceptance measured here: 240 of 240 (scene, seed) draws give a sample; before these rules the same draws
    gave 240 samples of which 65 were ambiguous by them (all right by sign, none wrong). On the paper's
    reference images (no intrinsics, 60 degrees assumed): 100 of 100 draws per source for MegaDepth 1, 2 and
    DIODE, where the old rule gave 36, 45 and 59 ambiguous questions of 100."""
    cfg = position.Config()
    assert (cfg.single_ratio, cfg.diagonal_share) == (RATIO, SHARE)
    forms, letters, made = Counter(), Counter(), 0
    for scene, synth in synth_scenes:
        for seed in range(20):
            s = position.generate(scene, np.random.default_rng([int(scene.source_id.split("-")[1]), seed]), cfg)
            m = s.meta
            dx, dz = _truth(synth, m)
            assert _unambiguous(m, dx, dz), (scene.source_id, seed, m, dx, dz)
            assert _right(m, s.answer, dx, dz)
            assert m["fx"] == pytest.approx(synth.fx)
            forms[(m["kind"], m["use_x"], m["use_z"])] += 1
            letters[s.answer] += 1
            made += 1
    assert made == 240
    assert set(forms) == {("near", True, False), ("far", False, True), ("far", True, True)}, forms
    balance = uniformity(dict(letters), 4)
    assert balance["p_value"] > 0.05, (letters, balance)


def test_without_intrinsics_a_60_degree_field_of_view_is_assumed(synth_scenes) -> None:
    scene, _ = synth_scenes[0]
    bare = Scene(scene.source_id, scene.image, scene.depth)
    s = position.generate(bare, np.random.default_rng(0), position.Config())
    w = scene.image.shape[1]
    assert s.meta["cx"] == w / 2 and s.meta["fx"] == pytest.approx(w / 2 / math.tan(math.radians(30)))
    s = position.generate(bare, np.random.default_rng(0), position.Config(hfov_deg=90))
    assert s.meta["fx"] == pytest.approx(w / 2)


def _slanted_wall(h: int = 168, w: int = 224, slope: float = 1.0) -> np.ndarray:
    """z-depth of a wall Z = 4 + slope * X seen through a 60-degree camera: side-by-side regions on it always
    differ in depth by ``slope`` times their lateral offset."""
    f = w / 2 / math.tan(math.radians(30))
    u = (np.arange(w) + 0.5 - w / 2) / f
    return np.broadcast_to(4.0 / (1 - slope * u), (h, w)).astype(np.float32).copy()


def test_ambiguous_near_pairs_are_rejected_with_a_reason() -> None:
    """On a wall receding as fast as it extends sideways, every near pair is as much "Back" as "Right": the
    published rule asks its lateral side anyway; this generator finds no unambiguous pair and says so."""
    scene = Scene("wall", textured(168, 224), _slanted_wall())
    cfg = position.Config(pair_kinds=("near",))
    for seed in range(5):
        with pytest.raises(RejectError, match="no unambiguous near pair"):
            position.generate(scene, np.random.default_rng(seed), cfg)
    # a gentle slope leaves the depth part under half the lateral one: near questions are asked
    s = position.generate(Scene("wall", textured(168, 224), _slanted_wall(slope=0.2)), np.random.default_rng(0), cfg)
    dx, dz = position.offsets(s.meta)
    assert s.meta["kind"] == "near" and abs(dz) <= 0.5 * abs(dx)


def test_pair_invariants(synth_scenes) -> None:
    cfg = position.Config()
    made = 0
    for scene, _ in synth_scenes[:6]:
        h, w = scene.depth.shape
        lo, hi = np.nanmin(scene.depth), np.nanmax(scene.depth)
        dn = (scene.depth - lo) / (hi - lo)
        for seed in range(4):
            s = position.generate(scene, np.random.default_rng(seed), cfg)
            made += 1
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
    assert made == 24


def test_pairs_are_drawn_uniformly_among_usable_pairs() -> None:
    """The random-batch draw and the full enumeration it falls back to pick each usable pair equally often."""
    cfg = position.Config(pair_kinds=("near",))
    cand = np.array([[50, 20, 0.1, 0.1], [50, 60, 0.1, 0.1], [52, 100, 0.1, 0.1], [51, 140, 0.1, 0.1]], float)
    lateral, depth = (cand[:, 1] - 80) / 100, np.full(4, 1.0)
    counts = Counter(position._draw_pair(cand, lateral, depth, "near", cfg, 168, 224, np.random.default_rng(k))[:2]
                     for k in range(600))
    assert len(counts) == 6 and min(counts.values()) > 70, counts  # 6 pairs, 100 expected each
    # only one usable pair, far from the others, found by enumeration when random draws miss it
    depth = np.array([1.0, 1.0, 9.0, 9.0])
    assert position._draw_pair(cand, lateral, depth, "near", cfg, 168, 224, np.random.default_rng(0))[:2] in {
        (0, 1), (2, 3)}


@pytest.mark.slow
def test_camera_json_intrinsics_reach_the_question(tmp_path) -> None:
    """Through the real generator: the synth scenes' camera.json gives fx (scaled with the image), so every
    position answer agrees with the renderer's exact points re-rendered from the same seed."""
    synthesize(tmp_path / "src", 6, seed=5, cfg=SynthConfig(width=336, height=252))
    res = run(GenerateConfig(inputs=[str(tmp_path / "src")], output=str(tmp_path / "ds"), tasks=["position"],
                             samples_per_task=3, min_pixels=50_000, max_pixels=90_000))
    assert res.manifest["tasks"]["position"]["samples"] == 18
    rows = list(iter_rows(str(tmp_path / "ds")))
    for row in rows:
        i = int(row["source_id"].split("-")[1].split(".")[0])
        synth = render_scene(np.random.default_rng([5, i]), SynthConfig(width=336, height=252))
        m = json.loads(row["meta"])
        assert m["fx"] == pytest.approx(synth.fx) and m["cx"] == 168
        dx, dz = _truth(synth, m)
        assert _unambiguous(m, dx, dz)
        assert _right(m, row["answer"], dx, dz)
    # half the resolution: fx and cx scale with it
    res = run(GenerateConfig(inputs=[str(tmp_path / "src")], output=str(tmp_path / "half"), tasks=["position"],
                             min_pixels=3136, max_pixels=21_168))
    m = json.loads(next(iter_rows(str(tmp_path / "half")))["meta"])
    w = 168
    assert m["cx"] == pytest.approx(w / 2) and m["fx"] == pytest.approx(render_scene(
        np.random.default_rng([5, 0]), SynthConfig(width=336, height=252)).fx * w / 336)


def test_no_pairs_rejected() -> None:
    with pytest.raises(RejectError, match="position: fewer than two flat regions"):
        noise = np.random.default_rng(0).random((120, 160)).astype(np.float32) + 1
        position.generate(Scene("x", textured(120, 160), noise), np.random.default_rng(0), position.Config())


def test_folder_camera_json_and_bad_camera_files(tmp_path) -> None:
    """A folder-wide camera.json serves images without their own; a broken one rejects the depth tasks of
    that source with a one-line reason while its RGB tasks still run."""
    paths = synthesize(tmp_path / "src", 2, seed=5, cfg=SynthConfig(width=168, height=112))
    (tmp_path / "src" / "synth-00000.camera.json").unlink()
    (tmp_path / "src" / "camera.json").write_text(json.dumps({"fx": 100.0, "cx": 84.0}))
    (tmp_path / "src" / "synth-00001.camera.json").write_text('{"fx": "wide"}')
    assert len(paths) == 2
    run(GenerateConfig(inputs=[str(tmp_path / "src")], output=str(tmp_path / "ds"), tasks=["shuffle", "position"],
                       min_pixels=3136, max_pixels=18_816))
    rows = {(r["source_id"], r["task"]): r for r in iter_rows(str(tmp_path / "ds"))}
    assert json.loads(rows[("synth-00000.png", "position")]["meta"])["fx"] == 100.0
    assert ("synth-00001.png", "shuffle") in rows and ("synth-00001.png", "position") not in rows
    rejects = [json.loads(x) for x in (tmp_path / "ds" / "rejects.jsonl").open()]
    assert [(r["source_id"], r["task"], r["reason"]) for r in rejects] == [
        ("synth-00001.png", "position", "depth: camera: fx must be a positive number, got 'wide'")]
