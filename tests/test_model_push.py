"""``ssrl model push`` (a base model committed to the store) and ``ssrl ckpt pull --weights-only``, against a real
MinIO, loaded with the ordinary ``from_pretrained``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("safetensors")

from ssrl.cli import main as cli
from ssrl.store import open_store
from ssrl.store.transfer import COMMIT

MINIO = pytest.mark.parametrize("s3_server", ["minio"], indirect=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ssrl.recipes.tiny_model import build_tiny_model

    folder = tmp_path_factory.mktemp("push") / "tiny"
    build_tiny_model(folder)
    return folder


def copy(tiny: Path, dest: Path) -> Path:
    return Path(shutil.copytree(tiny, dest))


def state(folder: str | Path) -> dict:
    """Weights as from_pretrained loads them (it renames some keys of the file)."""
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(folder, use_safetensors=True).state_dict()


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


@MINIO
def test_push_then_train_resolution_loads_it(s3: str, tiny: Path, tmp_path: Path) -> None:
    """The URL ``train.model`` defaults to in the chart holds a commit record after one command, and the trainer's
    model resolution pulls it and loads it with from_pretrained, weights unchanged."""
    from ssrl.recipes.modeling import resolve_model
    from ssrl.recipes.train_grpo import TrainConfig, load_model_and_processor

    url = f"{s3}/models/base"
    assert cli(["model", "push", str(tiny), url]) == 0
    record = json.loads(open_store(url).read_bytes(COMMIT))
    assert record["kind"] == "hf-model" and record["model_type"] == "qwen2_5_vl"
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= set(record["files"])

    path = resolve_model(url, tmp_path / "scratch")
    model, processor = load_model_and_processor(TrainConfig(model=url), path, gpu=False)
    assert same(model.state_dict(), state(tiny))
    assert processor.tokenizer.padding_side == "left"


def test_push_refuses_unloadable_folders_and_uploads_nothing(tiny: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    cases: dict[str, tuple[Path, str]] = {}
    pickled = copy(tiny, tmp_path / "pickled")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    cases["pickle"] = (pickled, "pytorch_model.bin: loading them runs code")
    no_config = copy(tiny, tmp_path / "no-config")
    (no_config / "config.json").unlink()
    cases["config"] = (no_config, "no config.json")
    truncated = copy(tiny, tmp_path / "truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    cases["truncated"] = (truncated, "model.safetensors is not a complete safetensors file")
    only_bin = copy(tiny, tmp_path / "only-bin")
    (only_bin / "model.safetensors").rename(only_bin / "pytorch_model.bin")
    cases["only-bin"] = (only_bin, "no safetensors weights")
    sharded = copy(tiny, tmp_path / "sharded")
    (sharded / "model.safetensors").rename(sharded / "model-00001-of-00002.safetensors")
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    cases["shard"] = (sharded, "model-00002-of-00002.safetensors (named in model.safetensors.index.json) is missing")
    no_processor = copy(tiny, tmp_path / "no-processor")
    (no_processor / "processor_config.json").unlink()
    cases["processor"] = (no_processor, "no image processor")

    for name, (folder, reason) in cases.items():
        dest = tmp_path / "store" / name
        capsys.readouterr()
        assert cli(["model", "push", str(folder), str(dest)]) == 1, name
        err = " ".join(capsys.readouterr().err.split())
        assert reason in err and str(folder) in err, (name, err)
        assert not dest.exists() or not any(dest.iterdir()), f"{name}: something was uploaded"

    run = tmp_path / "store" / "run"  # a training run's folder is not overwritten by a model
    (run / "step-1").mkdir(parents=True)
    (run / "latest").write_text('{"step": 1}')
    assert cli(["model", "push", str(tiny), str(run)]) == 1
    assert "is a training run" in capsys.readouterr().err and sorted(run.iterdir()) == [run / "latest", run / "step-1"]

    assert cli(["model", "push", "--allow-pickle", str(pickled), str(tmp_path / "store" / "allowed")]) == 0
    assert "pytorch_model.bin" in json.loads((tmp_path / "store" / "allowed" / COMMIT).read_text())["files"]


def test_repush_replaces_the_model_and_drops_its_old_files(tiny: Path, tmp_path: Path) -> None:
    dest = tmp_path / "store" / "base"
    first = copy(tiny, tmp_path / "first")
    (first / "extra.json").write_text("{}")
    assert cli(["model", "push", str(first), str(dest)]) == 0
    second = copy(tiny, tmp_path / "second")
    (second / "generation_config.json").write_text(json.dumps({"max_new_tokens": 7}))
    assert cli(["model", "push", str(second), str(dest)]) == 0
    record = json.loads((dest / COMMIT).read_text())
    assert "extra.json" not in record["files"] and not (dest / "extra.json").exists()
    assert json.loads((dest / "generation_config.json").read_text()) == {"max_new_tokens": 7}


@MINIO
def test_resolve_model_says_how_to_push_when_nothing_is_committed(s3: str, tiny: Path, tmp_path: Path) -> None:
    """A half-uploaded model (files, no record) is refused with the command that commits it."""
    from ssrl.errors import StoreError
    from ssrl.recipes.modeling import resolve_model

    open_store(f"{s3}/models/base").put_file("config.json", tiny / "config.json")
    with pytest.raises(StoreError, match=r"no _COMMIT.json: put one there with `ssrl model push <folder> s3://"):
        resolve_model(f"{s3}/models/base", tmp_path / "cache")


@pytest.mark.slow
@MINIO
def test_train_from_pushed_model_then_pull_weights_only(s3: str, tiny: Path, tmp_path: Path, synth_dir: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """End to end through the store: push the base model, one real GRPO step from its URL with the checkpoint
    committed to MinIO, then ``ckpt pull --weights-only``: no optimizer, scheduler, RNG or trainer state comes back,
    and the folder loads with from_pretrained with the same weights as the full checkpoint."""
    from transformers import AutoProcessor

    from ssrl.dataset.generate import GenerateConfig, run
    from ssrl.recipes.train_grpo import TrainConfig, main

    assert cli(["model", "push", str(tiny), f"{s3}/models/base"]) == 0
    run(GenerateConfig(inputs=[str(synth_dir)], output=str(tmp_path / "tasks"), min_pixels=3136, max_pixels=12544,
                       tasks=["flip"]))
    cfg = TrainConfig(model=f"{s3}/models/base", dataset=str(tmp_path / "tasks"), output=f"{s3}/checkpoints/run",
                      work_dir=str(tmp_path / "work"), max_steps=1, save_steps=1, max_completion_length=8,
                      min_pixels=3136, max_pixels=12544, per_device_train_batch_size=2, num_generations=2,
                      learning_rate=1e-3, report_to=[])
    assert main(cfg)["checkpoints"] == [1]

    full, light = tmp_path / "full", tmp_path / "light"
    assert cli(["ckpt", "pull", f"{s3}/checkpoints/run", str(full)]) == 0
    assert cli(["ckpt", "pull", "--weights-only", f"{s3}/checkpoints/run", str(light)]) == 0
    full_files = {p.name for p in full.iterdir()}
    light_files = {p.name for p in light.iterdir()}
    assert {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= full_files  # they exist...
    assert not {f for f in light_files if f.endswith((".pt", ".pth", ".bin")) or f == "trainer_state.json"}
    assert {"model.safetensors", "config.json", "tokenizer.json", "processor_config.json",
            "chat_template.jinja"} <= light_files
    assert "(weights only)" in capsys.readouterr().err

    AutoProcessor.from_pretrained(light)
    trained = state(full)
    assert not same(trained, state(tiny)), "the step changed no weight"
    assert same(state(light), trained)


def test_push_follows_a_hub_cache_snapshot(tiny: Path, tmp_path: Path) -> None:
    """A Hugging Face cache snapshot is a folder of symlinks into ../../blobs: the files behind them are sent."""
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshots" / "abc123"
    shutil.copytree(tiny, blobs)
    snapshot.mkdir(parents=True)
    for f in blobs.iterdir():
        (snapshot / f.name).symlink_to(Path("../../blobs") / f.name)
    dest = tmp_path / "store" / "base"
    assert cli(["model", "push", str(snapshot), str(dest)]) == 0
    record = json.loads((dest / COMMIT).read_text())
    assert set(record["files"]) == {f.name for f in tiny.iterdir()}
    assert not (dest / "model.safetensors").is_symlink()
    assert (dest / "model.safetensors").read_bytes() == (tiny / "model.safetensors").read_bytes()
