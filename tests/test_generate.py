"""The generator end to end on real files: determinism, sharding, resume, bad input, the HF loader."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ssrl.dataset.generate import GenerateConfig, resolve_partition, run
from ssrl.dataset.shards import iter_rows, read_manifest
from ssrl.errors import ConfigError, RejectError
from tests.badcorpus import build_bad_corpus
from tests.conftest import wait_for

SMALL = {"min_pixels": 3136, "max_pixels": 50176}  # 56x56 .. 224x224: fast, still valid for every task


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def test_end_to_end_manifest_and_rows(synth_dir: Path, tmp_path: Path) -> None:
    cfg = GenerateConfig(inputs=[str(synth_dir)], output=str(tmp_path / "ds"), shard_size=3,
                         tasks=["shuffle", "flip", "crop", "depth_order", "position", "rotation"])
    result = run(cfg)
    m = result.manifest
    assert m is not None and m == read_manifest(str(tmp_path / "ds"))
    assert result.shards_total == 3 and len(m["shard_files"]) == 3
    rows = list(iter_rows(str(tmp_path / "ds")))
    assert len(rows) == m["num_samples"] == sum(t["samples"] for t in m["tasks"].values())
    assert {r["task"] for r in rows} == set(cfg.tasks)
    for task, t in m["tasks"].items():
        assert sum(t["answers"].values()) == t["samples"] == sum(r["task"] == task for r in rows)
        assert t["balance"]["space"] >= 4
    for r in rows:
        assert r["problem"].count("<image>") == len(r["images"]) == (5 if r["task"] == "crop" else 1)
        assert json.loads(r["meta"]) and r["id"].startswith(r["source_id"] + "#" + r["task"])
    assert m["config"]["seed"] == 0 and m["generator"]["name"] == "ssrl" and m["sources"]["count"] == 8
    lines = (tmp_path / "ds" / "sources.jsonl").read_text().splitlines()
    assert len(lines) == 8 and all(len(json.loads(x)["sha256"]) == 64 for x in lines)


def test_output_images_fit_the_pixel_budget(synth_dir: Path, tmp_path: Path) -> None:
    from io import BytesIO

    from PIL import Image

    run(GenerateConfig(inputs=[str(synth_dir)], output=str(tmp_path / "ds"), **SMALL))
    for r in iter_rows(str(tmp_path / "ds")):
        for im in r["images"]:
            w, h = Image.open(BytesIO(im["bytes"])).size
            assert w % 28 == 0 and h % 28 == 0 and SMALL["min_pixels"] <= w * h <= SMALL["max_pixels"]


def test_identical_whatever_shards_or_workers(synth_dir: Path, tmp_path: Path) -> None:
    base = {"inputs": [str(synth_dir)], "shard_size": 2, **SMALL}
    run(GenerateConfig(output=str(tmp_path / "one"), **base))
    for k in range(3):  # three "pods", in reverse order
        res = run(GenerateConfig(output=str(tmp_path / "three"), shard_index=2 - k, num_shards=3, **base))
        assert (res.manifest is None) == (k < 2)
    run(GenerateConfig(output=str(tmp_path / "workers"), workers=2, **base))
    one = files(tmp_path / "one")
    assert one == files(tmp_path / "three") == files(tmp_path / "workers")
    assert "manifest.json" in one and len([k for k in one if k.endswith(".parquet")]) == 4


def test_seed_changes_samples(synth_dir: Path, tmp_path: Path) -> None:
    run(GenerateConfig(inputs=[str(synth_dir)], output=str(tmp_path / "a"), **SMALL))
    run(GenerateConfig(inputs=[str(synth_dir)], output=str(tmp_path / "b"), seed=1, **SMALL))
    a = {r["id"]: r["answer"] for r in iter_rows(str(tmp_path / "a"))}
    b = {r["id"]: r["answer"] for r in iter_rows(str(tmp_path / "b"))}
    assert a.keys() == b.keys() and a != b


def test_rerun_skips_and_config_change_is_refused(synth_dir: Path, tmp_path: Path) -> None:
    cfg = GenerateConfig(inputs=[str(synth_dir)], output=str(tmp_path / "ds"), shard_size=4, **SMALL)
    run(cfg)
    before = files(tmp_path / "ds")
    again = run(cfg)
    assert again.shards_skipped == [0, 1] and files(tmp_path / "ds") == before
    with pytest.raises(ConfigError, match=r"config\.seed"):
        run(GenerateConfig(inputs=[str(synth_dir)], output=str(tmp_path / "ds"), shard_size=4, seed=9, **SMALL))
    run(GenerateConfig(inputs=[str(synth_dir)], output=str(tmp_path / "ds"), shard_size=4, seed=9, overwrite=True,
                       **SMALL))
    assert read_manifest(str(tmp_path / "ds"))["config"]["seed"] == 9


@pytest.mark.slow
def test_resume_after_kill_is_byte_identical(synth_dir: Path, tmp_path: Path) -> None:
    args = [sys.executable, "-m", "ssrl", "generate", "-q", "-i", str(synth_dir), "--shard-size", "1",
            "--set", f"min_pixels={SMALL['min_pixels']}", "--set", f"max_pixels={SMALL['max_pixels']}"]
    subprocess.run([*args, "-o", str(tmp_path / "clean")], check=True, capture_output=True)
    proc = subprocess.Popen([*args, "-o", str(tmp_path / "killed")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for("shard 2 committed", (tmp_path / "killed" / "shard-00002.json").exists, 60, every=0.02)
    assert proc.poll() is None, "the generator finished before it was killed"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    partial = files(tmp_path / "killed")
    assert "manifest.json" not in partial and "shard-00007.json" not in partial
    for name in partial:  # whatever is visible is complete and matches the clean run
        if name.endswith(".parquet") and name.replace(".parquet", ".json") in partial:
            assert partial[name] == files(tmp_path / "clean")[name]
    out = subprocess.run([*args, "-o", str(tmp_path / "killed")], check=True, capture_output=True, text=True)
    assert "already committed" in out.stderr
    assert files(tmp_path / "killed") == files(tmp_path / "clean")
    assert not [p for p in (tmp_path / "killed").iterdir() if p.name.startswith(".")]


def test_bad_inputs_become_rejects(tmp_path: Path) -> None:
    expected = build_bad_corpus(tmp_path / "bad")
    expected["tiny.png"] = "reject:upscale"  # decodes, but the generator refuses a 14x upscale (max_upscale)
    res = run(GenerateConfig(inputs=[str(tmp_path / "bad")], output=str(tmp_path / "ds"), **SMALL))
    m = res.manifest
    rejects = [json.loads(x) for x in (tmp_path / "ds" / "rejects.jsonl").read_text().splitlines()]
    assert m["rejects"]["count"] == len(rejects)
    by_source = {}
    for r in rejects:
        by_source.setdefault(Path(r["path"]).name, []).append(r)
    for name, outcome in expected.items():
        got = by_source.get(name, [])
        if outcome.startswith("reject:"):  # unreadable image: one source-level reject, no samples
            assert len(got) == 1 and got[0]["task"] is None and outcome.split(":", 1)[1] in got[0]["reason"]
        elif outcome.startswith("depth_reject:"):  # depth tasks rejected with the reason; RGB tasks still run
            depth = [r for r in got if r["task"] in ("depth_order", "position")]
            assert len(depth) == 2 and all(outcome.split(":", 1)[1] in r["reason"] for r in depth), (name, got)
        else:
            assert all(r["task"] is not None for r in got), (name, got)
    rows = list(iter_rows(str(tmp_path / "ds")))
    assert {r["source_id"] for r in rows} >= {"good.jpg", "cmyk.jpg", "exif_rotated.jpg", "gray16.png"}
    assert sum(1 for r in rows if r["source_id"] == "diode_good.png" and r["task"] == "position") <= 1
    assert m["rejects"]["sources_rejected"] == sum(o.startswith("reject:") for o in expected.values())


def test_images_without_depth_skip_depth_tasks(tmp_path: Path) -> None:
    build_bad_corpus(tmp_path / "bad")
    (tmp_path / "rgb").mkdir()
    (tmp_path / "rgb" / "a.jpg").write_bytes((tmp_path / "bad" / "good.jpg").read_bytes())
    m = run(GenerateConfig(inputs=[str(tmp_path / "rgb")], output=str(tmp_path / "ds"), **SMALL)).manifest
    assert m["tasks"]["depth_order"]["samples"] == 0 and m["tasks"]["depth_order"]["rejects"] == 1
    assert "no depth map" in (tmp_path / "ds" / "rejects.jsonl").read_text()


def test_strict_stops_without_partial_shard(tmp_path: Path) -> None:
    build_bad_corpus(tmp_path / "bad")
    with pytest.raises(RejectError, match=r"bilevel\.png|bomb\.png"):
        run(GenerateConfig(inputs=[str(tmp_path / "bad")], output=str(tmp_path / "ds"), strict=True, **SMALL))
    assert [p.name for p in (tmp_path / "ds").iterdir()] == ["generation.json"]


def test_hf_datasets_loads_mixed_image_counts(synth_dir: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    run(GenerateConfig(inputs=[str(synth_dir)], output=str(tmp_path / "ds"), shard_size=3, **SMALL))
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "ds" / "shard-*.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    counts = {len(row["images"]) for row in ds}
    assert counts == {1, 5}
    first = ds[0]["images"][0]
    assert first.size[0] % 28 == 0 and first.mode == "RGB"
    assert set(ds.column_names) >= {"problem", "answer", "images", "task", "source_id", "meta"}


@pytest.mark.parametrize(
    ("env", "flags", "expected"),
    [
        ({}, {}, (0, 1)),
        ({"JOB_COMPLETION_INDEX": "3"}, {"num_shards": 8}, (3, 8)),
        ({"JOB_COMPLETION_INDEX": "2", "SSRL_NUM_SHARDS": "4"}, {}, (2, 4)),
        ({"RANK": "1", "WORLD_SIZE": "2"}, {}, (1, 2)),
        ({"RANK": "1", "WORLD_SIZE": "2"}, {"shard_index": 0, "num_shards": 5}, (0, 5)),
    ],
)
def test_partition_from_environment(env: dict, flags: dict, expected: tuple[int, int]) -> None:
    assert resolve_partition(GenerateConfig(inputs=["x"], **flags), env) == expected


def test_partition_errors() -> None:
    with pytest.raises(ConfigError, match="SSRL_NUM_SHARDS"):
        resolve_partition(GenerateConfig(inputs=["x"]), {"JOB_COMPLETION_INDEX": "0"})
    with pytest.raises(ConfigError, match="shard_index"):
        resolve_partition(GenerateConfig(inputs=["x"], shard_index=4, num_shards=4), {})


def test_config_errors_are_all_reported() -> None:
    with pytest.raises(ConfigError) as e:
        GenerateConfig(inputs=["x"], tasks=["shuffle", "nope"], workers=0, image_format="gif",
                       task_options={"crop": {"side_fraction": 2.0}})
    text = str(e.value)
    for part in ("nope", "workers", "image_format", "task_options.crop"):
        assert part in text


def test_env_does_not_leak_between_tests() -> None:
    assert "JOB_COMPLETION_INDEX" not in os.environ


_FAULTS = """
import resource, sys
from ssrl.dataset.generate import GenerateConfig, _Context, keep_freed_memory, process_source
from ssrl.sources.discover import Source
if sys.argv[1] == "keep":
    assert keep_freed_memory()
ctx = _Context.build(GenerateConfig(tasks=["depth_order"]))
ref = sys.argv[2]
faults = []
for i in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rows, rejects, _ = process_source(Source(f"s{i}", f"{ref}/RGB-D_img3.png", f"{ref}/RGB-D_depth3.npy",
                                             f"{ref}/RGB-D_depth_mask3.npy"), ctx)
    assert len(rows) == 1 and not rejects
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults[2:]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_kept_memory_stops_page_faults_between_samples(reference: Path) -> None:
    """Without the allocator setting every DIODE sample faults its megabytes in again; with it, after warm-up,
    the samples reuse the heap (the 8-11 ms of system time per sample in bench/README.md)."""
    def faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode, str(reference)], capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
        return int(out.stdout.split()[-1])

    default, kept = faults("default"), faults("keep")
    assert default > 1000, default  # the fault this setting removes does happen
    assert kept < default // 20, (kept, default)
