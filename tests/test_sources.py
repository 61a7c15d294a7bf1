"""Discovering images (folders, globs, list files) and pairing them with depth and masks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ssrl.errors import ConfigError
from ssrl.sources.discover import DEFAULT_RULES, PairingRule, Source, discover, parse_rules
from tests.badcorpus import build_bad_corpus
from tests.conftest import REFERENCE

NUMBERED = r"(?P<pre>.*)_img(?P<n>\d+)\.\w+$"


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")  # discovery never reads contents


def ids(sources: list[Source]) -> list[str]:
    return [s.id for s in sources]


def test_folder_is_recursive_sorted_and_filters_extensions(tmp_path: Path) -> None:
    touch(tmp_path, "b.jpg", "a/c.PNG", "a/d.webp", "z.gif", "notes.txt", "e.JPEG", "f.tif", "g.tiff", "h.bmp")
    out = discover([str(tmp_path)])
    assert ids(out) == ["a/c.PNG", "a/d.webp", "b.jpg", "e.JPEG", "f.tif", "g.tiff", "h.bmp"]
    assert all(os.path.isabs(s.image) and s.depth is None and s.mask is None for s in out)
    assert out[0].image == str(tmp_path / "a" / "c.PNG")


def test_hidden_files_and_folders_are_skipped(tmp_path: Path) -> None:
    touch(tmp_path, "a.jpg", "._a.jpg", ".cache/b.jpg")
    assert ids(discover([str(tmp_path)])) == ["a.jpg"]


def test_diode_pairing_with_mask_and_companions_not_listed(tmp_path: Path) -> None:
    touch(tmp_path, "s/x.png", "s/x_depth.npy", "s/x_depth_mask.npy", "s/y.png", "s/y_depth.npy")
    out = {s.id: s for s in discover([str(tmp_path)])}
    assert sorted(out) == ["s/x.png", "s/y.png"]
    assert out["s/x.png"].depth == str(tmp_path / "s/x_depth.npy")
    assert out["s/x.png"].mask == str(tmp_path / "s/x_depth_mask.npy")
    assert out["s/y.png"].depth == str(tmp_path / "s/y_depth.npy") and out["s/y.png"].mask is None


def test_png_depth_files_are_not_images(tmp_path: Path) -> None:
    touch(tmp_path, "x.jpg", "x_depth.png", "orphan_depth.png")
    out = {s.id: s for s in discover([str(tmp_path)])}
    assert sorted(out) == ["orphan_depth.png", "x.jpg"]  # an unpaired *_depth.png is just an image
    assert out["x.jpg"].depth == str(tmp_path / "x_depth.png")


def test_megadepth_layouts(tmp_path: Path) -> None:
    touch(tmp_path, "0001/dense0/imgs/a.jpg", "0001/dense0/depths/a.h5", "0001/dense0/imgs/b.jpg",
          "flat/c.jpg", "flat/c.h5")
    out = {s.id: s for s in discover([str(tmp_path)])}
    assert out["0001/dense0/imgs/a.jpg"].depth == str(tmp_path / "0001/dense0/depths/a.h5")
    assert out["0001/dense0/imgs/b.jpg"].depth is None
    assert out["flat/c.jpg"].depth == str(tmp_path / "flat/c.h5")
    # The depths folder may also be outside the input: the images folder alone is a valid input.
    only_imgs = discover([str(tmp_path / "0001/dense0/imgs")])
    assert ids(only_imgs) == ["a.jpg", "b.jpg"] and only_imgs[0].depth.endswith("depths/a.h5")


def test_first_rule_with_existing_depth_wins(tmp_path: Path) -> None:
    touch(tmp_path, "x.jpg", "x.h5", "x_depth.png")
    assert discover([str(tmp_path)])[0].depth == str(tmp_path / "x.h5")  # .h5 rule precedes _depth.png
    rules = [PairingRule(image=".*", depth="{stem}_depth.png"), *DEFAULT_RULES]
    assert discover([str(tmp_path)], rules)[0].depth == str(tmp_path / "x_depth.png")


def test_custom_numbered_rule_in_subfolders(tmp_path: Path) -> None:
    touch(tmp_path, "scene/RGB-D_img1.jpg", "scene/RGB-D_depth1.h5", "scene/RGB-D_img3.png",
          "scene/RGB-D_depth3.npy", "scene/RGB-D_depth_mask3.npy", "scene/RGB-D_img4.png")
    rules = [
        PairingRule(image=NUMBERED, depth="{pre}_depth{n}.h5"),
        PairingRule(image=NUMBERED, depth="{pre}_depth{n}.npy", mask="{pre}_depth_mask{n}.npy"),
    ]
    out = {s.id: s for s in discover([str(tmp_path)], rules)}
    assert sorted(out) == ["scene/RGB-D_img1.jpg", "scene/RGB-D_img3.png", "scene/RGB-D_img4.png"]
    assert out["scene/RGB-D_img1.jpg"].depth == str(tmp_path / "scene/RGB-D_depth1.h5")
    assert out["scene/RGB-D_img3.png"].mask == str(tmp_path / "scene/RGB-D_depth_mask3.npy")
    assert out["scene/RGB-D_img4.png"].depth is None


def test_rule_with_slash_sees_the_relative_path(tmp_path: Path) -> None:
    touch(tmp_path, "rgb/a/x.jpg", "depth/a/x.npy", "rgb/b/y.jpg")
    rule = PairingRule(image=r"^rgb/(?P<scene>[^/]+)/(?P<base>[^/]+)\.jpg$", depth="../../depth/{scene}/{base}.npy")
    out = {s.id: s for s in discover([str(tmp_path)], [rule])}
    assert sorted(out) == ["rgb/a/x.jpg", "rgb/b/y.jpg"]
    assert out["rgb/a/x.jpg"].depth == str(tmp_path / "depth/a/x.npy")
    assert out["rgb/b/y.jpg"].depth is None


def test_templates_offer_name_stem_ext(tmp_path: Path) -> None:
    touch(tmp_path, "x.jpg", "x.jpg.depth.npy", "x.jpg.mask.npy")
    rule = PairingRule(image=".*", depth="{name}.depth.npy", mask="{stem}{ext}.mask.npy")
    out = discover([str(tmp_path)], [rule])
    assert out[0].depth == str(tmp_path / "x.jpg.depth.npy") and out[0].mask == str(tmp_path / "x.jpg.mask.npy")
    missing_mask = discover([str(tmp_path)], [PairingRule(image=".*", depth="{name}.depth.npy", mask="{stem}.m.npy")])
    assert missing_mask[0].depth and missing_mask[0].mask is None  # a mask is attached only if it exists


def test_glob_input(tmp_path: Path) -> None:
    touch(tmp_path, "data/a/1.jpg", "data/b/2.jpg", "data/b/3.png", "data/4.jpg")
    out = discover([str(tmp_path / "data/**/*.jpg")])
    assert ids(out) == ["4.jpg", "a/1.jpg", "b/2.jpg"]  # ids relative to the glob's fixed part
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert ids(discover(["data/*/*.png"])) == ["b/3.png"]
    finally:
        os.chdir(cwd)


def test_list_file_input(tmp_path: Path) -> None:
    touch(tmp_path, "imgs/a.jpg", "imgs/b.jpg", "other/c.png", "imgs/a_depth.npy")
    lst = tmp_path / "imgs" / "train.lst"
    lst.write_text(f"# training images\n\na.jpg\n  b.jpg  \n../other/c.png\n{tmp_path / 'imgs/a.jpg'}\n")
    out = {s.id: s for s in discover([str(lst)])}
    assert sorted(out) == ["a.jpg", "b.jpg", str(tmp_path / "other/c.png").lstrip("/")]
    assert out["a.jpg"].depth == str(tmp_path / "imgs/a_depth.npy")


def test_list_file_problems_are_all_reported(tmp_path: Path) -> None:
    touch(tmp_path, "a.jpg", "notes.md")
    lst = tmp_path / "l.txt"
    lst.write_text("a.jpg\nmissing.jpg\nnotes.md\n")
    with pytest.raises(ConfigError) as info:
        discover([str(lst)])
    assert len(info.value.problems) == 2
    assert "l.txt:2: 'missing.jpg' does not exist" in str(info.value)
    assert "l.txt:3: 'notes.md' is not an image file" in str(info.value)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="lists no images"):
        discover([str(empty)])


def test_single_image_input(tmp_path: Path) -> None:
    touch(tmp_path, "x.jpg", "x_depth.npy")
    out = discover([str(tmp_path / "x.jpg")])
    assert ids(out) == ["x.jpg"] and out[0].depth == str(tmp_path / "x_depth.npy")


def test_missing_and_empty_inputs_raise_config_error_naming_them(tmp_path: Path) -> None:
    touch(tmp_path, "empty_dir/readme.md", "ok/a.jpg")
    with pytest.raises(ConfigError) as info:
        discover([str(tmp_path / "nope"), str(tmp_path / "empty_dir"), str(tmp_path / "x/*.jpg"),
                  str(tmp_path / "ok")])
    problems = info.value.problems
    assert len(problems) == 3
    assert f"input {str(tmp_path / 'nope')!r} does not exist" in problems[0]
    assert "empty_dir" in problems[1] and "no image files" in problems[1]
    assert "matches no image files" in problems[2]
    with pytest.raises(ConfigError, match="is not a folder, glob, list file"):
        discover([str(tmp_path / "empty_dir/readme.md")])


def test_id_collisions_across_inputs_are_prefixed_with_input_index(tmp_path: Path) -> None:
    touch(tmp_path, "one/a.jpg", "one/b.jpg", "two/a.jpg", "two/c.jpg")
    out = discover([str(tmp_path / "one"), str(tmp_path / "two")])
    assert ids(out) == ["b.jpg", "c.jpg", "input0/a.jpg", "input1/a.jpg"]
    assert {s.id: s.image for s in out}["input1/a.jpg"] == str(tmp_path / "two/a.jpg")
    assert len(set(ids(out))) == len(out)


def test_same_file_from_two_inputs_is_listed_once(tmp_path: Path) -> None:
    touch(tmp_path, "d/a.jpg", "d/b.jpg")
    out = discover([str(tmp_path / "d"), str(tmp_path / "d/*.jpg"), str(tmp_path / "d/a.jpg")])
    assert ids(out) == ["a.jpg", "b.jpg"]


def test_result_independent_of_listing_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path, *[f"s{i % 3}/img{i}.jpg" for i in range(20)], "s1/img4_depth.npy")
    first = discover([str(tmp_path)])
    real_walk, real_listdir = os.walk, os.listdir

    def reversed_walk(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        for folder, dirs, files in real_walk(*args, **kwargs):  # type: ignore[arg-type]
            dirs.reverse()
            yield folder, dirs, files[::-1]

    monkeypatch.setattr(os, "walk", reversed_walk)
    monkeypatch.setattr(os, "listdir", lambda p: real_listdir(p)[::-1])
    assert discover([str(tmp_path)]) == first


def test_symlink_loops_terminate(tmp_path: Path) -> None:
    touch(tmp_path, "d/a.jpg")
    os.symlink(tmp_path / "d", tmp_path / "d" / "loop")
    assert ids(discover([str(tmp_path / "d")])) == ["a.jpg"]


def test_corpus_pairs_with_default_rules(tmp_path: Path) -> None:
    expected = build_bad_corpus(tmp_path)
    out = {s.id: s for s in discover([str(tmp_path)])}
    assert sorted(out) == sorted(expected)
    assert out["diode_good.png"].mask is not None and out["mega_good.jpg"].depth.endswith(".h5")
    assert out["depth_8bit.png"].depth.endswith("depth_8bit_depth.png")
    assert all(out[name].depth for name, kind in expected.items() if kind.startswith("depth_reject"))


# --------------------------------------------------------------------------------------------- rules


def test_rule_validation() -> None:
    with pytest.raises(ConfigError, match="bad image regex"):
        PairingRule(image="(", depth="{stem}.h5")
    with pytest.raises(ConfigError, match=r"unknown placeholder \{n\}"):
        PairingRule(image=".*", depth="{stem}_{n}.h5")
    with pytest.raises(ConfigError, match="malformed braces"):
        PairingRule(image=".*", depth="{stem.h5")
    with pytest.raises(ConfigError, match="format spec"):
        PairingRule(image="(?P<n>\\d+)", depth="{n:03}.h5")
    with pytest.raises(ConfigError, match="unknown placeholder"):
        PairingRule(image=".*", depth="{}.h5")
    with pytest.raises(ConfigError, match="empty"):
        PairingRule(image=".*", depth=" ")


def test_parse_rules_reports_every_problem() -> None:
    rules = parse_rules([{"image": NUMBERED, "depth": "{pre}_depth{n}.h5"},
                         {"image": NUMBERED, "depth": "{pre}_depth{n}.npy", "mask": "{pre}_depth_mask{n}.npy"}])
    assert rules[1].mask == "{pre}_depth_mask{n}.npy"
    with pytest.raises(ConfigError) as info:
        parse_rules([{"image": "(", "depth": "x"}, {"image": ".*"}, {"image": ".*", "depth": "{q}", "extra": 1},
                     "not a mapping", {"image": ".*", "depth": "{bad}"}])
    problems = info.value.problems
    assert [p.split(":")[0] for p in problems] == [f"pairing rule {i}" for i in (0, 1, 2, 3, 4)]
    assert "bad image regex" in problems[0] and "missing depth" in problems[1]
    assert "unknown keys extra" in problems[2] and "unknown placeholder {bad}" in problems[4]
    with pytest.raises(ConfigError, match="must be a list"):
        parse_rules({"image": ".*"})  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- reference


def test_reference_samples_pair_with_a_custom_rule() -> None:
    if not REFERENCE.is_dir():
        pytest.skip(f"{REFERENCE} not present")
    rules = parse_rules([
        {"image": NUMBERED, "depth": "{pre}_depth{n}.h5"},
        {"image": NUMBERED, "depth": "{pre}_depth{n}.npy", "mask": "{pre}_depth_mask{n}.npy"},
    ])
    for found in (discover([str(REFERENCE)], rules), discover([str(REFERENCE)])):  # defaults know it too
        out = {s.id: s for s in found}
        assert sorted(out) == ["RGB-D_img1.jpg", "RGB-D_img2.jpg", "RGB-D_img3.png", "RGB_img.png"]
        assert out["RGB-D_img1.jpg"].depth == str(REFERENCE / "RGB-D_depth1.h5")
        assert out["RGB-D_img2.jpg"].depth == str(REFERENCE / "RGB-D_depth2.h5")
        assert out["RGB-D_img3.png"].depth == str(REFERENCE / "RGB-D_depth3.npy")
        assert out["RGB-D_img3.png"].mask == str(REFERENCE / "RGB-D_depth_mask3.npy")
        assert out["RGB_img.png"].depth is None
