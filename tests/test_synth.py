"""The synthetic renderer: determinism, exact camera geometry, the DIODE file layout, and scene content that the
depth-ordering and patch tasks can use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from ssrl.errors import ConfigError
from ssrl.sources.synth import SynthConfig, SynthScene, _atomic_write, render_scene, synthesize, write_scene

SEEDS = range(20)
SMALL = SynthConfig(width=96, height=72)


@pytest.fixture(scope="module")
def scenes() -> list[SynthScene]:
    return [render_scene(np.random.default_rng([seed, 0])) for seed in SEEDS]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --------------------------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_scene() -> None:
    a, b = (render_scene(np.random.default_rng(7), SMALL) for _ in range(2))
    assert a.image.tobytes() == b.image.tobytes()
    assert a.depth.tobytes() == b.depth.tobytes() and a.points.tobytes() == b.points.tobytes()
    assert a.objects == b.objects and (a.fx, a.cx, a.cy) == (b.fx, b.cx, b.cy)


def test_different_seeds_differ() -> None:
    a, b = (render_scene(np.random.default_rng(s), SMALL) for s in (1, 2))
    assert not np.array_equal(a.image, b.image)


def test_synthesize_is_byte_identical_and_scene_i_ignores_count(tmp_path: Path) -> None:
    synthesize(tmp_path / "a", 3, seed=5, cfg=SMALL)
    synthesize(tmp_path / "b", 3, seed=5, cfg=SMALL)
    synthesize(tmp_path / "c", 1, seed=5, cfg=SMALL)
    a, b, c = (_files(tmp_path / d) for d in "abc")
    assert a == b
    assert set(c) == {n for n in a if n.startswith("synth-00000")}
    assert all(c[n] == a[n] for n in c)
    assert a["synth-00000.png"] != a["synth-00001.png"]


def test_synthesize_names_progress_and_count(tmp_path: Path) -> None:
    calls: list[int] = []
    paths = synthesize(tmp_path, 2, seed=1, cfg=SMALL, progress=calls.append)
    assert [p.name for p in paths] == ["synth-00000.png", "synth-00001.png"]
    assert calls == [1, 1]
    assert synthesize(tmp_path / "none", 0) == []
    with pytest.raises(ConfigError):
        synthesize(tmp_path, -1)


# --------------------------------------------------------------------------------------------- geometry
def _check_geometry(scene: SynthScene, width: int, height: int) -> None:
    assert scene.image.shape == (height, width, 3) and scene.image.dtype == np.uint8
    assert scene.depth.shape == (height, width) and scene.depth.dtype == np.float32
    assert scene.points.shape == (height, width, 3) and scene.points.dtype == np.float32
    assert scene.fx == scene.fy and scene.cx == width / 2 and scene.cy == height / 2
    valid = np.isfinite(scene.depth)
    assert valid.any()
    assert (scene.depth[valid] > 0).all()
    assert np.isnan(scene.points[~valid]).all()
    assert np.isfinite(scene.points[valid]).all()
    np.testing.assert_array_equal(scene.points[..., 2], scene.depth)
    ys, xs = np.nonzero(valid)
    z = scene.depth[valid].astype(np.float64)
    for axis, pix, c in ((0, xs, scene.cx), (1, ys, scene.cy)):
        expected = (pix + 0.5 - c) * z / scene.fx
        np.testing.assert_allclose(scene.points[..., axis][valid], expected, rtol=1e-4, atol=1e-4 * z.max())


def test_geometry_default_size(scenes: list[SynthScene]) -> None:
    for scene in scenes[:5]:
        _check_geometry(scene, 640, 480)


@pytest.mark.parametrize("size", [(64, 48), (63, 47), (33, 80)])
def test_geometry_other_sizes(size: tuple[int, int]) -> None:
    w, h = size
    for seed in range(3):
        _check_geometry(render_scene(np.random.default_rng(seed), SynthConfig(width=w, height=h)), w, h)


def test_focal_length_follows_field_of_view(scenes: list[SynthScene]) -> None:
    lo, hi = (320 / np.tan(np.radians(a) / 2) for a in (75.0, 55.0))
    assert all(lo <= s.fx <= hi for s in scenes)


def test_ground_and_wall_are_exact_planes() -> None:
    """Ground hits lie on Y = camera height and a closed scene ends at the wall's z: checkable geometry."""
    scene = render_scene(np.random.default_rng(3), SynthConfig(sky_probability=0.0))
    ground = next(o for o in scene.objects if o["type"] == "ground")
    wall = next(o for o in scene.objects if o["type"] == "wall")
    assert np.isfinite(scene.depth).all()
    np.testing.assert_allclose(np.nanmax(scene.depth), wall["z"], rtol=1e-5)
    bottom_y = scene.points[-1, :, 1]
    assert np.mean(np.abs(bottom_y - ground["y"]) < 1e-4 * ground["y"]) > 0.3


def test_sky_probability_controls_open_scenes() -> None:
    open_ = render_scene(np.random.default_rng(4), SynthConfig(width=96, height=72, sky_probability=1.0))
    closed = render_scene(np.random.default_rng(4), SynthConfig(width=96, height=72, sky_probability=0.0))
    assert np.isnan(open_.depth[0]).any()
    assert np.isfinite(closed.depth).all()


def test_objects_describe_the_scene(scenes: list[SynthScene]) -> None:
    cfg = SynthConfig()
    for scene in scenes:
        json.dumps(scene.objects)
        kinds = [o["type"] for o in scene.objects]
        assert kinds[0] == "ground" and kinds[1] in {"wall", "skyline"}
        assert 1 <= len(kinds) - 2 <= cfg.max_objects
        assert set(kinds[2:]) <= {"box", "building", "sphere"}


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError) as err:
        SynthConfig(min_objects=5, max_objects=2, sky_probability=2.0)
    assert len(err.value.problems) == 2


# --------------------------------------------------------------------------------------------- content
def _flat_bands(depth: np.ndarray, bands: tuple[tuple[float, float], ...], size: int = 25,
                tol: float = 0.05) -> list[bool]:
    """Per band: is there a size x size window of valid, robustly normalised depth with range < tol?"""
    valid = np.isfinite(depth)
    lo, hi = np.percentile(depth[valid], (0.5, 99.5))
    dn = np.where(valid & (depth >= lo) & (depth <= hi), (depth - lo) / (hi - lo), np.nan)
    bad = ~np.isfinite(dn)
    top = ndimage.maximum_filter(np.where(bad, np.inf, dn), size=size, mode="constant", cval=np.inf)
    bottom = ndimage.minimum_filter(np.where(bad, -np.inf, dn), size=size, mode="constant", cval=-np.inf)
    flat = top - bottom < tol
    return [bool((flat & (dn >= a) & (dn <= b)).any()) for a, b in bands]


def test_wide_depth_range_with_flat_windows_near_mid_far(scenes: list[SynthScene]) -> None:
    bands = ((0.0, 0.30), (0.35, 0.65), (0.70, 1.0))
    ok = 0
    for scene in scenes:
        valid = scene.depth[np.isfinite(scene.depth)]
        lo, hi = np.percentile(valid, (0.5, 99.5))
        ok += hi / lo > 4 and hi - lo > 15 and all(_flat_bands(scene.depth, bands))
    assert ok >= 0.8 * len(scenes)


def test_images_are_textured_and_not_mirror_symmetric(scenes: list[SynthScene]) -> None:
    rng = np.random.default_rng(0)
    for scene in scenes[:5]:
        img = scene.image.astype(np.int16)
        assert img.std() > 10
        assert np.mean(np.abs(np.diff(img, axis=1)).sum(axis=-1) > 0) > 0.5
        asymmetric = 0
        for _ in range(40):
            y, x = rng.integers(0, 480 - 48), rng.integers(0, 640 - 48)
            patch = img[y : y + 48, x : x + 48]
            asymmetric += np.abs(patch - patch[:, ::-1]).mean() > 2
        assert asymmetric >= 36


# --------------------------------------------------------------------------------------------- files
def test_write_scene_diode_layout(tmp_path: Path) -> None:
    scene = render_scene(np.random.default_rng(2), SynthConfig(width=96, height=72, sky_probability=1.0))
    paths = write_scene(scene, tmp_path / "out", "x")
    assert [p.name for p in paths] == ["x.png", "x_depth.npy", "x_depth_mask.npy", "x.camera.json"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths)

    with Image.open(paths[0]) as im:
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), scene.image)
    depth = np.load(paths[1], allow_pickle=False)
    mask = np.load(paths[2], allow_pickle=False)
    assert depth.shape == (72, 96, 1) and depth.dtype == np.float32
    assert mask.shape == (72, 96) and mask.dtype == np.float32
    assert set(np.unique(mask)) == {0.0, 1.0}
    np.testing.assert_array_equal(mask == 0, depth[..., 0] == 0)
    np.testing.assert_array_equal(mask == 1, np.isfinite(scene.depth))
    np.testing.assert_array_equal(depth[..., 0][mask == 1], scene.depth[mask == 1])

    text = paths[3].read_text()
    camera = json.loads(text)
    assert set(camera) == {"fx", "fy", "cx", "cy", "width", "height", "objects"}
    assert (camera["width"], camera["height"], camera["cx"], camera["cy"]) == (96, 72, 48.0, 36.0)
    assert camera["fx"] == scene.fx and camera["objects"] == scene.objects
    assert text == json.dumps(camera, sort_keys=True, indent=2) + "\n"


def test_atomic_write_leaves_no_temp_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def fail(fh: object) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        _atomic_write(target, fail)
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
    assert target.read_bytes() == b"old"
    _atomic_write(target, lambda fh: fh.write(b"new"))
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"] and target.read_bytes() == b"new"
