"""Sources too small for the pixel budget are rejected, not blown up (issue 14 §2), through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssrl.dataset.shards import iter_rows
from tests.conftest import textured
from tests.test_cli import ssrl


def _rgbd(folder: Path, stem: str, h: int, w: int) -> None:
    """An image with a DIODE-layout depth map of the same size (a ramp: flat blocks and depth order exist)."""
    Image.fromarray(textured(h, w)).save(folder / f"{stem}.png")
    depth = np.broadcast_to(np.linspace(2.0, 9.0, h, dtype=np.float32)[:, None], (h, w))[..., None]
    np.save(folder / f"{stem}_depth.npy", np.ascontiguousarray(depth))


@pytest.mark.slow
def test_sources_needing_more_than_max_upscale_are_rejected(tmp_path: Path) -> None:
    """At the default budget (min 262,144 pixels): a 12x9 image would need 51x (sides rounded up to 28), a
    150x200 RGB-D source with its depth map 3.1x; both are refused with the reason in rejects.jsonl, while a
    300x400 source (1.5x) is used for every task. Depth maps must match their image's size, so the image's
    check covers them."""
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(textured(9, 12)).save(src / "tiny.png")
    _rgbd(src, "small_rgbd", 150, 200)
    _rgbd(src, "fine", 300, 400)
    r = ssrl("generate", "-i", str(src), "-o", str(tmp_path / "ds"), "--tasks", "shuffle,depth_order")
    assert r.returncode == 0, r.stderr
    rejects = {json.loads(x)["source_id"]: json.loads(x) for x in (tmp_path / "ds" / "rejects.jsonl").open()}
    assert rejects["tiny.png"]["task"] is None
    assert rejects["tiny.png"]["reason"] == ("image 12x9 too small: reaching min_pixels needs a 51.3x upscale "
                                             "(max_upscale 2)")
    assert rejects["small_rgbd.png"]["task"] is None and "3.1x upscale" in rejects["small_rgbd.png"]["reason"]
    assert "fine.png" not in rejects
    rows = list(iter_rows(str(tmp_path / "ds")))
    assert sorted((r["source_id"], r["task"]) for r in rows) == [("fine.png", "depth_order"), ("fine.png", "shuffle")]
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["rejects"]["sources_rejected"] == 2 and manifest["config"]["max_upscale"] == 2.0

    # the knob: allowing 3.2x takes the RGB-D source in, depth tasks included
    r = ssrl("generate", "-i", str(src), "-o", str(tmp_path / "ds3"), "--tasks", "shuffle,depth_order",
             "--set", "max_upscale=3.2")
    assert r.returncode == 0, r.stderr
    got = {(r["source_id"], r["task"]) for r in iter_rows(str(tmp_path / "ds3"))}
    assert {("small_rgbd.png", "shuffle"), ("small_rgbd.png", "depth_order")} <= got
    assert not any(s == "tiny.png" for s, _ in got)


def test_max_upscale_below_one_is_a_config_error(tmp_path: Path) -> None:
    r = ssrl("generate", "-i", str(tmp_path), "--set", "max_upscale=0.5")
    assert r.returncode == 2 and "max_upscale must be >= 1, got 0.5" in r.stderr
