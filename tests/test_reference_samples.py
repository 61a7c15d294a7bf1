"""The paper's published sample files (COCO / MegaDepth / DIODE formats) through the whole generator."""

from __future__ import annotations

import json
from pathlib import Path

from ssrl.dataset.generate import GenerateConfig, run
from ssrl.dataset.shards import iter_rows
from ssrl.tasks import get_task

TASKS = ["shuffle", "flip", "crop", "depth_order", "position", "rotation"]


def test_reference_samples_generate(reference: Path, tmp_path: Path) -> None:
    res = run(GenerateConfig(inputs=[str(reference)], output=str(tmp_path / "ds"), tasks=TASKS, samples_per_task=2))
    m = res.manifest
    assert m["sources"]["count"] == 4
    rows = list(iter_rows(str(tmp_path / "ds")))
    by = {(r["source_id"], r["task"]) for r in rows}
    for rgbd in ("RGB-D_img1.jpg", "RGB-D_img2.jpg", "RGB-D_img3.png"):
        assert (rgbd, "depth_order") in by or (rgbd, "position") in by
    for task in ("shuffle", "flip", "crop", "rotation"):
        assert ("RGB_img.png", task) in by
    rejects = [json.loads(x) for x in (tmp_path / "ds" / "rejects.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rejects if r["source_id"] == "RGB_img.png"} == {"depth_order", "position"}
    for r in rows:
        task = get_task(r["task"])
        assert task.answer_from_meta(json.loads(r["meta"])) == r["answer"]
    sources = [json.loads(x) for x in (tmp_path / "ds" / "sources.jsonl").read_text().splitlines()]
    assert sum("depth_sha256" in s for s in sources) == 3
