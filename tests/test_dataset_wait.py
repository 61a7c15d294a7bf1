"""The trainer and the evaluator wait (bounded) for the dataset's manifest.json, so a generator started beside them
(one Helm release, one kustomization) is never read half-done (issue 12 item 4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ssrl.cli import main as cli
from ssrl.dataset.generate import GenerateConfig, run
from ssrl.dataset.shards import committed_shards, wait_for_manifest
from ssrl.errors import SSRLError
from ssrl.store import open_store

FAST = ["--set", "max_completion_length=8", "--set", "min_pixels=3136", "--set", "max_pixels=12544",
        "--set", "per_device_train_batch_size=2", "--set", "num_generations=2", "--set", "report_to=[]"]
GEN = ["--tasks", "flip", "--shard-size", "4", "--num-shards", "2", "--set", "min_pixels=3136",
       "--set", "max_pixels=12544", "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture
def half(tmp_path: Path, synth_dir: Path) -> Path:
    """A dataset whose generator has committed shard 0 of 2: no manifest yet."""
    out = tmp_path / "tasks"
    run(GenerateConfig(inputs=[str(synth_dir)], output=str(out), tasks=["flip"], shard_size=4, shard_index=0,
                       num_shards=2, min_pixels=3136, max_pixels=12544))
    assert committed_shards(open_store(out)) == ["shard-00000.parquet"] and not (out / "manifest.json").exists()
    return out


def test_wait_returns_when_the_manifest_lands_and_backs_off(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.write_bytes("generation.json", b"{}")
    requests = []
    exists = store.exists
    store.exists = lambda key: requests.append(time.monotonic()) or exists(key)  # count polls on the real store
    writer = threading.Timer(1.5, lambda: store.write_bytes("manifest.json", json.dumps({"rows": 7}).encode()))
    start = time.monotonic()
    writer.start()
    assert wait_for_manifest(store, timeout=60) == {"rows": 7}
    took = time.monotonic() - start
    assert 1.5 <= took < 5, took  # polls at 0, 1, 3 s (backoff 1, 2)
    assert len(requests) == 3, [round(t - start, 1) for t in requests]


def test_wait_times_out_naming_the_manifest_and_the_timeout(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(SSRLError) as e:
        wait_for_manifest(str(tmp_path), timeout=1.5)
    assert 1.5 <= time.monotonic() - start < 2.5
    assert f"{tmp_path.as_uri()}/manifest.json did not appear within 1.5 s" in str(e.value)
    with pytest.raises(SSRLError, match="does not exist"):  # a typo in a local path fails at once
        wait_for_manifest(str(tmp_path / "typo"), timeout=3600)


@pytest.mark.slow  # imports torch and TRL
def test_train_and_eval_time_out_with_one_clear_line(half: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Before the fix the trainer trained on shard 0 alone; now it stops before loading anything."""
    url = half.as_uri()
    for argv in (["train", "--model", str(tmp_path / "no-model"), "--dataset", str(half), "--output",
                  str(tmp_path / "run"), "--set", "dataset_wait=1", *FAST],
                 ["eval", "-m", str(tmp_path / "no-model"), "-b", str(half), "-o", str(tmp_path / "ev"),
                  "--set", "dataset_wait=1"]):
        capsys.readouterr()
        start = time.monotonic()
        assert cli(argv) == 1, argv[0]
        assert time.monotonic() - start >= 1.0
        err = " ".join(capsys.readouterr().err.split())
        assert f"error: {url}/manifest.json did not appear within 1 s (dataset_wait)" in err, err
        assert f"`ssrl generate -o {url}` still running" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "ev").exists()


@pytest.mark.slow
def test_trainer_waits_for_the_generator_to_finish(half: Path, tmp_path: Path, synth_dir: Path) -> None:
    """Real processes: the trainer starts on a half-generated dataset and waits; the generator's second shard
    commits the manifest; the trainer then trains on the complete dataset."""
    from ssrl.recipes.tiny_model import build_tiny_model

    build_tiny_model(tmp_path / "tiny")
    log = tmp_path / "train.log"
    with log.open("w") as f:
        trainer = subprocess.Popen([sys.executable, "-m", "ssrl", "train", "--model", str(tmp_path / "tiny"),
                                    "--dataset", str(half), "--output", str(tmp_path / "run"), "--max-steps", "1",
                                    "--set", "save_steps=1", "--set", "dataset_wait=300", *FAST],
                                   stdout=f, stderr=subprocess.STDOUT, env=ENV)
    try:
        deadline = time.monotonic() + 120
        while "waiting up to 300 s" not in log.read_text():
            assert trainer.poll() is None, f"the trainer exited instead of waiting:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        time.sleep(1.5)
        assert trainer.poll() is None and not (tmp_path / "run").exists(), "it went on without the manifest"
        generator = subprocess.run([sys.executable, "-m", "ssrl", "generate", "-i", str(synth_dir), "-o", str(half),
                                    "--shard-index", "1", *GEN], capture_output=True, text=True, env=ENV, timeout=300)
        assert generator.returncode == 0, generator.stderr[-2000:]
        manifest = json.loads((half / "manifest.json").read_text())
        assert trainer.wait(300) == 0, log.read_text()[-3000:]
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait()
    text = log.read_text()
    assert "manifest.json appeared after" in text
    assert len(committed_shards(open_store(half))) == 2 and manifest["shards"] == 2
    assert (tmp_path / "run" / "step-1" / "_COMMIT.json").exists()
