"""GRPO on the tiny model from generated tasks: real TRL (and DeepSpeed) steps on CPU, checkpoints in a store."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

from ssrl.dataset.generate import GenerateConfig, run
from ssrl.store import open_store
from ssrl.store.checkpoints import latest_step, list_steps
from tests.servers import JSONHandler

FAST = ["--set", "max_completion_length=16", "--set", "min_pixels=3136", "--set", "max_pixels=12544",
        "--set", "per_device_train_batch_size=4", "--set", "num_generations=2", "--set", "learning_rate=1e-4",
        "--set", "report_to=[]"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory, synth_dir: Path) -> dict[str, Path]:
    from ssrl.recipes.tiny_model import build_tiny_model

    root = tmp_path_factory.mktemp("train")
    build_tiny_model(root / "tiny")
    run(GenerateConfig(inputs=[str(synth_dir)], output=str(root / "tasks"), min_pixels=3136, max_pixels=12544))
    return {"model": root / "tiny", "tasks": root / "tasks", "root": root}


def train(assets: dict[str, Path], out: Path, *extra: str, launcher: list[str] | None = None,
          timeout: float = 300) -> subprocess.CompletedProcess[str]:
    cmd = [*(launcher or [sys.executable, "-m"]), "ssrl", "train", "--model", str(assets["model"]), "--dataset",
           str(assets["tasks"]), "--output", str(out), *FAST, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)


@pytest.mark.slow
def test_grpo_steps_commit_checkpoints_and_metrics(assets: dict[str, Path], tmp_path: Path) -> None:
    from ssrl.recipes.train_grpo import TrainConfig, main

    cfg = TrainConfig(model=str(assets["model"]), dataset=str(assets["tasks"]), output=str(tmp_path / "run"),
                      max_steps=3, save_steps=2, max_completion_length=16, min_pixels=3136, max_pixels=12544,
                      per_device_train_batch_size=4, num_generations=2, report_to=[])
    result = main(cfg)
    run_store = open_store(tmp_path / "run")
    assert result["global_step"] == 3 and list_steps(run_store) == [2, 3] and latest_step(run_store) == 3
    state = json.loads(run_store.read_bytes("step-3/trainer_state.json"))
    assert state["global_step"] == 3
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"} <= {
        k.split("/")[-1] for k in run_store.list("step-3")}
    lines = [json.loads(x) for x in run_store.read_bytes("metrics.jsonl").decode().splitlines()]
    keys = set().union(*lines)
    assert {"rewards/accuracy/mean", "rewards/format/mean", "kl", "frac_reward_zero_std",
            "completions/mean_length"} <= keys
    assert any(k.startswith("accuracy/") for k in keys)
    from transformers import AutoModelForImageTextToText

    pulled = tmp_path / "pulled"
    from ssrl.store.checkpoints import pull_checkpoint

    pull_checkpoint(run_store, pulled)
    model = AutoModelForImageTextToText.from_pretrained(pulled)
    assert sum(p.numel() for p in model.parameters()) > 100_000


@pytest.mark.slow
def test_kill_then_resume_auto_continues(assets: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ssrl", "train", "--model", str(assets["model"]), "--dataset", str(assets["tasks"]),
           "--output", str(out), *FAST, "--max-steps", "4", "--set", "save_steps=1"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / "step-1" / "_COMMIT.json").exists():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = latest_step(open_store(out))
    assert done is not None and done < 4
    # The restarted pod has an empty scratch (a new work_dir) and logs to TensorBoard.
    r = train(assets, out, "--max-steps", "4", "--set", "save_steps=1", "--resume", "auto",
              "--set", f"work_dir={tmp_path / 'fresh'}", "--set", "report_to=[tensorboard]")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from committed step {done}" in r.stdout
    assert list_steps(open_store(out))[-1] == 4
    state = json.loads((out / "step-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    # metrics.jsonl continues the first attempt's (appended, not replaced): every step logged once.
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "reward" in x] == [1, 2, 3, 4]
    # TensorBoard's event files travel with the checkpoints.
    events = [k for k in open_store(out).list("tensorboard") if "events.out.tfevents" in k]
    assert events and all(k.startswith("tensorboard/") for k in events)


GATHER = """
import json, sys
import torch.distributed as dist
from ssrl.recipes.callbacks import TaskAccuracy
dist.init_process_group("gloo")
acc, rank = TaskAccuracy(), dist.get_rank()
for task, value in ([("crop", 1.0)] if rank == 0 else [("crop", 0.0)] * 3 + [("flip", 1.0)]):
    acc.add(task, value)
result = {"rank": rank, "first": acc.drain(), "again": acc.drain()}
with open(f"{sys.argv[1]}/rank-{rank}.json", "w") as f:  # one file per rank: their shared stdout interleaves
    json.dump(result, f)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_task_accuracy_counts_every_rank(tmp_path: Path) -> None:
    """Rank 0 scored 1 crop right, rank 1 scored 3 crops wrong and 1 flip right: both report crop 1/4 and flip 1
    (before: rank 0 reported only its own share, crop 1.0 and no flip)."""
    (tmp_path / "gather.py").write_text(GATHER)
    torchrun = Path(sys.executable).parent / "torchrun"
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(tmp_path / "gather.py"),
                        str(tmp_path)], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    out = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("rank-*.json"))]
    assert sorted(o["rank"] for o in out) == [0, 1]
    assert all(o["first"] == {"accuracy/crop": 0.25, "accuracy/flip": 1.0} and o["again"] == {} for o in out)


@pytest.mark.slow
def test_two_processes_torchrun_gloo(assets: dict[str, Path], tmp_path: Path) -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    r = train(assets, tmp_path / "run", "--max-steps", "2", "--set", "save_steps=2",
              launcher=[str(torchrun), "--standalone", "--nproc_per_node", "2", "-m"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert list_steps(open_store(tmp_path / "run")) == [2]


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "nproc"), [("zero2", 1), ("zero2", 2), ("zero3", 1)])
def test_deepspeed(assets: dict[str, Path], tmp_path: Path, stage: str, nproc: int) -> None:
    pytest.importorskip("deepspeed")
    torchrun = Path(sys.executable).parent / "torchrun"
    r = train(assets, tmp_path / "run", "--max-steps", "2", "--set", "save_steps=2", "--deepspeed", stage,
              launcher=[str(torchrun), "--standalone", "--nproc_per_node", str(nproc), "-m"])
    assert r.returncode == 0, r.stderr[-4000:]
    assert list_steps(open_store(tmp_path / "run")) == [2]


@pytest.mark.slow
def test_preflight_reports_and_fails_clearly(assets: dict[str, Path], tmp_path: Path) -> None:
    r = train(assets, tmp_path / "run", "--preflight", "--set", "steps_per_generation=2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ready" in r.stdout and "crop" in r.stdout and "position" in r.stdout
    assert "4 prompts per rollout, 2 per optimiser update, 2 updates per rollout" in " ".join(r.stdout.split())
    r = train(assets, tmp_path / "run", "--preflight", "--set", "max_prompt_length=50")
    assert r.returncode == 1 and "max_prompt_length" in r.stdout and "not ready" in r.stdout
    from ssrl.recipes.preflight import layout_problems
    from ssrl.recipes.train_grpo import TrainConfig

    cfg = TrainConfig(per_device_train_batch_size=3, gradient_accumulation_steps=2, num_generations=4)
    assert any("not a multiple of num_generations" in p for p in layout_problems(cfg, world_size=1))
    assert layout_problems(TrainConfig(), world_size=8) == []


def test_bad_train_config_exit_2(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "ssrl", "train", "--deepspeed", "zero9", "--set", "rewards=[accuracy]",
                        "--set", "num_generations=1"], capture_output=True, text=True, env=ENV)
    assert r.returncode == 2
    for part in ("deepspeed", "reward_weights", "num_generations"):
        assert part in r.stderr


@pytest.mark.slow
def test_sft_cold_start_few_steps(assets: dict[str, Path], tmp_path: Path) -> None:
    """LLaMA-Factory rows (the paper's cold-start format) written from generated tasks."""
    from ssrl.dataset.shards import iter_rows

    rows = []
    for i, row in enumerate(iter_rows(str(assets["tasks"]), limit=8)):
        paths = []
        for j, im in enumerate(row["images"]):
            (tmp_path / f"{i}-{j}.png").write_bytes(im["bytes"])
            paths.append(f"{i}-{j}.png")
        rows.append({"instruction": row["problem"], "input": "", "images": paths,
                     "output": f"<think>I compare the regions.</think>\\boxed{{{row['answer']}}}"})
    (tmp_path / "sft.json").write_text(json.dumps(rows))
    r = subprocess.run([sys.executable, "-m", "ssrl", "sft", "--model", str(assets["model"]), "--data",
                        str(tmp_path / "sft.json"), "--output", str(tmp_path / "run"), "--max-steps", "3",
                        "--set", "per_device_train_batch_size=2", "--set", "gradient_accumulation_steps=1",
                        "--set", "min_pixels=3136", "--set", "max_pixels=12544", "--set", "save_steps=3",
                        "--set", "learning_rate=1e-3", "--set", "report_to=[]"],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "SFT to step 3" in r.stdout and list_steps(open_store(tmp_path / "run")) == [3]
    (tmp_path / "bad.json").write_text(json.dumps([{"instruction": "<image>x", "output": "y", "images": []}]))
    r = subprocess.run([sys.executable, "-m", "ssrl", "sft", "--data", str(tmp_path / "bad.json")],
                       capture_output=True, text=True, env=ENV)
    assert r.returncode == 2 and "1 <image> placeholders for 0 images" in r.stderr


@pytest.mark.slow
def test_lora_and_frozen_vision(assets: dict[str, Path], tmp_path: Path) -> None:

    from ssrl.recipes.train_grpo import TrainConfig, load_model_and_processor

    cfg = TrainConfig(model=str(assets["model"]), dataset=str(assets["tasks"]), output=str(tmp_path / "run"),
                      max_steps=1, save_steps=1, max_completion_length=16, min_pixels=3136, max_pixels=12544,
                      per_device_train_batch_size=4, num_generations=2, report_to=[], freeze_vision=True)
    model, _ = load_model_and_processor(cfg, str(assets["model"]), gpu=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any("visual" in n for n in trainable)
    assert any("visual" in n for n, _ in model.named_parameters())
    del model
    r = train(assets, tmp_path / "lora", "--max-steps", "1", "--set", "save_steps=1", "--set", "lora_r=4",
              "--set", "freeze_vision=true")
    assert r.returncode == 0, r.stderr[-3000:]
    files = open_store(tmp_path / "lora").list("step-1")
    assert "step-1/adapter_model.safetensors" in files and "step-1/adapter_config.json" in files


@pytest.mark.slow
def test_qwen3_vl_trains_and_evaluates(assets: dict[str, Path], tmp_path: Path) -> None:
    """The Qwen3-VL architecture (16-px patches, interleaved M-RoPE, DeepStack) through the same paths."""
    from ssrl.recipes.tiny_model import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny3", arch="qwen3_vl")
    r = subprocess.run([sys.executable, "-m", "ssrl", "train", "--model", str(model), "--dataset",
                        str(assets["tasks"]), "--output", str(tmp_path / "run"), "--max-steps", "1",
                        "--set", "save_steps=1", *FAST], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert list_steps(open_store(tmp_path / "run")) == [1]
    r = subprocess.run([sys.executable, "-m", "ssrl", "eval", "-m", f"base={model}", "-m",
                        f"trained={tmp_path / 'run'}", "-b", str(assets["tasks"]), "-o", str(tmp_path / "eval"),
                        "--limit", "3", "--max-new-tokens", "8", "--set", "min_pixels=3136",
                        "--set", "max_pixels=12544", "--set", f"work_dir={tmp_path / 'w'}"],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert {m: s["n"] for m, s in results["benchmarks"]["tasks"].items()} == {"base": 3, "trained": 3}


# ----------------------------------------------------------------------- updates reach the weights (issue 13)
class ShortCompletions:
    """A reward with variance for a random model (shorter is better), so advantages and gradients are not 0."""

    __name__ = "short"

    def __call__(self, completions: list, **kwargs: object) -> list[float]:
        from ssrl.recipes.rewards import completion_text

        return [-len(completion_text(c)) / 100 for c in completions]


def changed_fraction(before: Path, after: Path) -> float:
    """Share of parameters whose value differs between two model folders, loaded with from_pretrained (a ZeRO-3
    save names the tensors as the live modules do, e.g. model.model.layers.*) and compared in the saved dtype."""
    from transformers import AutoModelForImageTextToText

    a, b = (AutoModelForImageTextToText.from_pretrained(f, dtype="auto").state_dict() for f in (before, after))
    assert a.keys() == b.keys()
    changed = sum(int((a[k].to(b[k].dtype) != b[k]).sum()) for k in a)
    return changed / sum(v.numel() for v in a.values())


@pytest.mark.slow
@pytest.mark.parametrize(("bf16", "autocast"), [("false", "no"), ("true", "bf16")])
def test_every_precision_path_moves_the_weights(assets: dict[str, Path], tmp_path: Path, bf16: str,
                                                autocast: str) -> None:
    """At the paper's lr (1e-6) AdamW steps are below bf16's resolution: bf16 must mean fp32 weights + autocast
    (before the fix the weights loaded in bf16 and only 2% of them changed in 3 steps)."""
    from ssrl.recipes.train_grpo import TrainConfig, main

    cfg = TrainConfig(model=str(assets["model"]), dataset=str(assets["tasks"]), output=str(tmp_path / "run"),
                      max_steps=3, save_steps=3, max_completion_length=16, min_pixels=3136, max_pixels=12544,
                      per_device_train_batch_size=4, num_generations=2, report_to=[], learning_rate=1e-6,
                      bf16=bf16, rewards=[f"{__name__}.ShortCompletions"], reward_weights=[1.0])
    result = main(cfg)
    assert result["precision"] == {"weights": "float32", "autocast": autocast}
    assert changed_fraction(assets["model"], tmp_path / "run" / "step-3") > 0.5


def test_paper_config_two_updates_per_rollout(tmp_path: Path) -> None:
    """The paper (EasyR1): 256-prompt rollouts, 128-prompt updates, so 2 optimiser updates per rollout; read from
    the GRPOConfig TRL builds out of examples/train-paper.yaml (before: 1 update per 256-prompt step)."""
    from ssrl.config import load_config
    from ssrl.recipes.train_grpo import TrainConfig, build_grpo_args, rollout_layout

    paper = Path(__file__).parents[1] / "examples" / "train-paper.yaml"
    cfg = load_config(TrainConfig, paper, ["deepspeed=none"])  # ZeRO-3 would need 8 ranks to build the args
    args = build_grpo_args(cfg, tmp_path, gpu=False)
    assert (args.steps_per_generation, args.gradient_accumulation_steps, args.num_iterations) == (16, 8, 1)
    assert rollout_layout(args, world_size=8) == {"prompts_per_rollout": 256, "prompts_per_update": 128,
                                                  "updates_per_rollout": 2}
    assert (args.learning_rate, args.beta, args.num_generations, args.temperature) == (1e-6, 0.01, 5, 1.0)
    with pytest.raises(Exception, match="whole updates per rollout"):
        TrainConfig(gradient_accumulation_steps=8, steps_per_generation=12)


def write_sft_rows(tasks: Path, dest: Path, task: str) -> Path:
    """LLaMA-Factory rows (the paper's cold-start format) answering one task's samples in the paper's format."""
    from ssrl.dataset.shards import iter_rows

    rows = []
    for i, row in enumerate(r for r in iter_rows(str(tasks)) if r["task"] == task):
        paths = []
        for j, im in enumerate(row["images"]):
            (dest / f"{i}-{j}.png").write_bytes(im["bytes"])
            paths.append(f"{i}-{j}.png")
        rows.append({"instruction": row["problem"], "input": "", "images": paths,
                     "output": f"<think>ok</think>\\boxed{{{row['answer']}}}"})
    (dest / "sft.json").write_text(json.dumps(rows))
    return dest / "sft.json"


def rewards_by_step(metrics: Path) -> list[dict]:
    return [x for x in map(json.loads, metrics.read_text().splitlines()) if "reward" in x]


@pytest.mark.slow
def test_it_learns_sft_then_grpo_fp32_zero2_zero3(assets: dict[str, Path], tmp_path: Path) -> None:
    """A cold start teaches the paper's answer format (format reward 0 -> >= 0.5), then GRPO steps raise the mean
    reward and move the weights, under plain fp32, DeepSpeed ZeRO-2 and ZeRO-3, seeded. GRPO optimises a brevity
    reward here: on a 200k-parameter random model the paper's accuracy + format reward did not rise measurably
    within 12-30 steps (too noisy), while a reward the policy can reach proves the update has the right sign."""
    from ssrl.recipes.sft import SFTRunConfig
    from ssrl.recipes.sft import main as sft
    from ssrl.recipes.train_grpo import TrainConfig
    from ssrl.recipes.train_grpo import main as grpo

    data = write_sft_rows(assets["tasks"], tmp_path, "crop")
    sft(SFTRunConfig(model=str(assets["model"]), data=str(data), output=str(tmp_path / "sft"), max_steps=60,
                     per_device_train_batch_size=4, gradient_accumulation_steps=1, min_pixels=3136, max_pixels=12544,
                     save_steps=60, learning_rate=5e-3, warmup_ratio=0.0, report_to=[]))
    common = dict(model=str(tmp_path / "sft"), dataset=str(assets["tasks"]), tasks=["crop"], max_steps=10,
                  save_steps=10, max_completion_length=24, min_pixels=3136, max_pixels=12544,
                  per_device_train_batch_size=8, num_generations=4, learning_rate=1e-3, report_to=[],
                  rewards=["format", f"{__name__}.ShortCompletions"], reward_weights=[0.0, 1.0])
    grpo(TrainConfig(output=str(tmp_path / "fp32"), **common))
    torchrun = Path(sys.executable).parent / "torchrun"
    args = [f"{k}={json.dumps(v)}" for k, v in common.items() if k != "model"]
    for stage in ("zero2", "zero3"):
        r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "1", "-m", "ssrl", "train", "--model",
                            common["model"], "--output", str(tmp_path / stage), "--deepspeed", stage,
                            *[x for a in args for x in ("--set", a)]], capture_output=True, text=True,
                           env={**ENV, "PYTHONPATH": str(Path(__file__).parents[1])}, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
    sft_weights = tmp_path / "sft" / "step-60"
    for name in ("fp32", "zero2", "zero3"):
        logged = rewards_by_step(tmp_path / name / "metrics.jsonl")
        assert [x["step"] for x in logged] == list(range(1, 11))
        assert logged[0]["rewards/format/mean"] >= 0.5  # taught by the cold start (the random model scores 0)
        first = sum(x["reward"] for x in logged[:3]) / 3
        last = sum(x["reward"] for x in logged[-3:]) / 3
        assert last > first + 0.05, (name, " ".join(f"{x['reward']:.3f}" for x in logged))
        assert changed_fraction(sft_weights, tmp_path / name / "step-10") > 0.5


class SamplingProbe:
    """Records how the real trainer samples when it calls the rewards: (training?, temperature, top_p, n)."""

    __name__ = "probe"
    seen: ClassVar[list[tuple[bool, float, float, int]]] = []

    def __call__(self, completions: list, **kwargs: object) -> list[float]:
        import inspect

        from trl import GRPOTrainer

        for info in inspect.stack():
            trainer = info.frame.f_locals.get("self")
            if isinstance(trainer, GRPOTrainer):
                g = trainer.generation_config
                SamplingProbe.seen.append((trainer.model.training, g.temperature, g.top_p, len(completions)))
                break
        return [0.0] * len(completions)


@pytest.mark.slow
def test_validation_on_heldout_split_every_eval_steps(assets: dict[str, Path], tmp_path: Path) -> None:
    """Every eval_steps: one completion per held-out prompt at temperature 0.6 / top_p 0.95 (rollouts stay at
    1.0 / 1.0), per-task accuracy as eval_accuracy/<task> in metrics.jsonl and in the progress record."""
    from ssrl.cluster.client import build_progress
    from ssrl.recipes.train_grpo import TrainConfig, main

    SamplingProbe.seen.clear()
    cfg = TrainConfig(model=str(assets["model"]), dataset=str(assets["tasks"]), output=str(tmp_path / "run"),
                      max_steps=2, save_steps=2, eval_steps=2, holdout=0.4, val_samples=3, max_completion_length=8,
                      min_pixels=3136, max_pixels=12544, per_device_train_batch_size=4, num_generations=2,
                      report_to=[], rewards=["accuracy", "format", f"{__name__}.SamplingProbe"],
                      reward_weights=[0.9, 0.1, 0.0])
    main(cfg)
    train_calls = [s for s in SamplingProbe.seen if s[0]]
    val_calls = [s for s in SamplingProbe.seen if not s[0]]
    assert train_calls and all(s[1:3] == (1.0, 1.0) for s in train_calls)
    assert val_calls and all(s[1:3] == (0.6, 0.95) for s in val_calls)
    assert sum(s[3] for s in val_calls) == 3  # n=1 for each of the 3 held-out prompts
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [x for x in lines if "eval_reward" in x]
    assert [x["step"] for x in val] == [2]
    tasks = {k for k in val[0] if k.startswith("eval_accuracy/")}
    assert tasks and not any(k.startswith("accuracy/") for k in val[0])
    assert set(build_progress(2, 2, val[0])["validation"]) == {k.split("/", 1)[1] for k in tasks}
    with pytest.raises(Exception, match="eval_steps needs held-out prompts"):
        TrainConfig(eval_steps=5)


@pytest.mark.parametrize(("requested", "loaded"), [("sdpa", "sdpa"), ("eager", "eager"),
                                                   ("flash_attention_2", "sdpa")])
def test_attn_implementation(assets: dict[str, Path], requested: str, loaded: str,
                             caplog: pytest.LogCaptureFixture) -> None:
    """The kernel reaches the loaded model; flash_attention_2 without a GPU (or flash-attn) falls back to sdpa,
    saying so."""
    from ssrl.recipes.train_grpo import TrainConfig, load_model_and_processor

    cfg = TrainConfig(model=str(assets["model"]), attn_implementation=requested, min_pixels=3136, max_pixels=12544)
    model, _ = load_model_and_processor(cfg, str(assets["model"]), gpu=False)
    assert model.config._attn_implementation == loaded
    assert ("using sdpa" in caplog.text) == (requested != loaded)
    with pytest.raises(Exception, match="attn_implementation must be"):
        TrainConfig(attn_implementation="flash")


@pytest.mark.slow
def test_sft_lora_merge_then_grpo_loads_merged(assets: dict[str, Path], tmp_path: Path) -> None:
    """ssrl sft --merge: the adapter folded into the base weights, committed as <output>/merged; it loads with the
    plain from_pretrained, computes what base + adapter computes, and GRPO starts from it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from ssrl.recipes.train_grpo import TrainConfig, main

    data = write_sft_rows(assets["tasks"], tmp_path, "crop")
    out = tmp_path / "sft"
    r = subprocess.run([sys.executable, "-m", "ssrl", "sft", "--model", str(assets["model"]), "--data", str(data),
                        "--output", str(out), "--max-steps", "2", "--merge", "--set", "lora_r=4",
                        "--set", "per_device_train_batch_size=2", "--set", "gradient_accumulation_steps=1",
                        "--set", "min_pixels=3136", "--set", "max_pixels=12544", "--set", "save_steps=2",
                        "--set", "learning_rate=1e-2", "--set", "report_to=[]"],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "merged model" in r.stdout
    merged_files = open_store(out / "merged").list("")
    assert "model.safetensors" in merged_files and "_COMMIT.json" in merged_files
    assert not any("adapter" in k for k in merged_files)
    merged = AutoModelForImageTextToText.from_pretrained(out / "merged")
    base = AutoModelForImageTextToText.from_pretrained(assets["model"])
    adapted = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(assets["model"]), out / "step-2")
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        want, got, before = (m(input_ids=ids).logits for m in (adapted, merged, base))
    assert torch.allclose(got, want, atol=1e-4) and not torch.allclose(got, before, atol=1e-4)
    cfg = TrainConfig(model=str(out / "merged"), dataset=str(assets["tasks"]), output=str(tmp_path / "grpo"),
                      max_steps=1, save_steps=1, max_completion_length=8, min_pixels=3136, max_pixels=12544,
                      per_device_train_batch_size=4, num_generations=2, report_to=[])
    assert main(cfg)["global_step"] == 1
    r = subprocess.run([sys.executable, "-m", "ssrl", "sft", "--data", str(data), "--merge"], capture_output=True,
                       text=True, env=ENV)
    assert r.returncode == 2 and "merge needs lora_r" in r.stderr


@pytest.mark.slow
def test_wandb_offline_report(assets: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """report_to=[wandb] (the ssrl[wandb] extra) logs the run; WANDB_MODE=offline keeps it on disk, no network."""
    pytest.importorskip("wandb")
    from ssrl.recipes.train_grpo import TrainConfig, main

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_PROJECT", "ssrl-test")
    cfg = TrainConfig(model=str(assets["model"]), dataset=str(assets["tasks"]), output=str(tmp_path / "run"),
                      max_steps=1, save_steps=1, max_completion_length=8, min_pixels=3136, max_pixels=12544,
                      per_device_train_batch_size=4, num_generations=2, report_to=["wandb"])
    main(cfg)
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0


# ------------------------------------------------------------------ GPU checks (run where a CUDA device is present)
def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.slow
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(("deepspeed", "weights", "lr"), [("none", "float32", "1e-6"), ("zero2", "bfloat16", "1e-4"),
                                                          ("zero3", "bfloat16", "1e-4")])
def test_gpu_bf16_moves_the_weights(assets: dict[str, Path], tmp_path: Path, deepspeed: str, weights: str,
                                    lr: str) -> None:
    """On a GPU without DeepSpeed, bf16 is fp32 weights + autocast: at lr 1e-6 the weights move (flash_attention_2
    when flash-attn is installed, else sdpa). With DeepSpeed (NCCL) the saved weights are bf16 over fp32 master
    copies: a step of 1e-6 hides below bf16's resolution in the saved copy, so those runs use 1e-4."""
    torchrun = Path(sys.executable).parent / "torchrun"
    out = tmp_path / "run"
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "1", "-m", "ssrl", "train", "--model",
                        str(assets["model"]), "--dataset", str(assets["tasks"]), "--output", str(out),
                        "--max-steps", "3", "--deepspeed", deepspeed, "--set", "save_steps=3",
                        "--set", f"learning_rate={lr}", "--set", "bf16=true", "--set", "use_vllm=false",
                        "--set", "attn_implementation=flash_attention_2", "--set", "max_completion_length=16",
                        "--set", "min_pixels=3136", "--set", "max_pixels=12544", "--set", "report_to=[]",
                        "--set", "per_device_train_batch_size=4", "--set", "num_generations=2",
                        "--set", f"rewards=[{__name__}.ShortCompletions]", "--set", "reward_weights=[1.0]"],
                       capture_output=True, text=True, timeout=600,
                       env={**ENV, "PYTHONPATH": os.pathsep.join(filter(None, (str(Path(__file__).parents[1]),
                                                                               ENV.get("PYTHONPATH"))))})
    assert r.returncode == 0, r.stderr[-3000:]
    from safetensors import safe_open

    with safe_open(str(out / "step-3" / "model.safetensors"), "pt") as f:
        assert str(f.get_tensor(next(iter(f.keys()))).dtype) == f"torch.{weights}"
    assert changed_fraction(assets["model"], out / "step-3") > 0.5


@pytest.mark.slow
def test_two_updates_per_rollout_in_a_real_run(assets: dict[str, Path], tmp_path: Path) -> None:
    """steps_per_generation = 2 x gradient_accumulation_steps: 2 optimiser steps consume one rollout (the rewards
    score 4 prompts x 2 completions once), as the paper's 256-prompt rollout feeds two 128-prompt updates."""
    from ssrl.recipes.train_grpo import TrainConfig, main

    SamplingProbe.seen.clear()
    cfg = TrainConfig(model=str(assets["model"]), dataset=str(assets["tasks"]), output=str(tmp_path / "run"),
                      max_steps=2, save_steps=2, steps_per_generation=2, max_completion_length=8, min_pixels=3136,
                      max_pixels=12544, per_device_train_batch_size=4, num_generations=2, report_to=[],
                      rewards=["format", f"{__name__}.SamplingProbe"], reward_weights=[1.0, 0.0])
    assert main(cfg)["global_step"] == 2
    assert [s[3] for s in SamplingProbe.seen] == [8]


# ---------------------------------------------------------------- validation during training, end to end (item 10)
class Services(JSONHandler):
    """What a training pod talks to besides the store, recording every request: the Kubernetes API (the job's
    progress ConfigMap, patched by the real client through a kubeconfig) and a vLLM server (the routes TRL's real
    ``VLLMClient`` uses in server mode; each completion is the tokens of ``COMPLETION``)."""

    requests: ClassVar[list[tuple[str, str, dict]]] = []
    completion: ClassVar[list[int]] = []

    def do_GET(self) -> None:  # vLLM: /v1/models
        self._answer({"data": [{"id": "tiny"}]})

    def do_POST(self) -> None:
        body = self._record("POST")
        if self.path == "/v1/chat/completions/render":  # image features: one placeholder per image, placed by TRL
            images = [c for m in body["messages"] for c in m["content"] if c["type"].startswith("image")]
            self._answer({"features": {"mm_placeholders": {"image": [{"offset": 0, "length": 1}] * len(images)}}})
        else:  # /inference/v1/generate
            logprobs = [{"token": f"token_id:{t}", "logprob": -1.0, "top_logprobs": []} for t in Services.completion]
            choice = {"token_ids": Services.completion, "logprobs": {"content": logprobs}}
            self._answer({"choices": [choice] * body["sampling_params"]["n"]})

    def do_PATCH(self) -> None:  # Kubernetes: the progress ConfigMap
        body = self._record("PATCH")
        self._answer({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": self.path.rsplit("/", 1)[-1]},
                      **body})

    def _record(self, method: str) -> dict:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Services.requests.append((method, self.path, body))
        return body



COMPLETION = "<think>.</think>\\boxed{A}"


@pytest.fixture
def services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The recording services on a free port; the process is a training pod of job ``val/ns`` that finds the API
    server through its kubeconfig and reports progress at every log (interval 0)."""
    Services.requests.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Services)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    (tmp_path / "kubeconfig").write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "pod",
        "clusters": [{"name": "c", "cluster": {"server": url}}], "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "pod", "context": {"cluster": "c", "user": "u", "namespace": "ns"}}]}))
    for key, value in {"KUBECONFIG": str(tmp_path / "kubeconfig"), "SSRL_JOB_NAME": "val", "SSRL_JOB_NAMESPACE": "ns",
                       "SSRL_PROGRESS_INTERVAL": "0", "TENSORBOARD_LOGGING_DIR": str(tmp_path / "tb")}.items():
        monkeypatch.setenv(key, value)
    yield url
    server.shutdown()


def validate_every_step(assets: dict[str, Path], run: Path, **overrides: object) -> None:
    """Two GRPO steps validating after each (eval_steps=1) on 3 held-out prompts, logging to TensorBoard."""
    from ssrl.recipes.train_grpo import TrainConfig, main

    main(TrainConfig(model=str(assets["model"]), dataset=str(assets["tasks"]), output=str(run), max_steps=2,
                     save_steps=2, eval_steps=1, holdout=0.4, val_samples=3, max_completion_length=8, min_pixels=3136,
                     max_pixels=12544, per_device_train_batch_size=4, num_generations=2,
                     report_to=["tensorboard"], **overrides))


def assert_validation_reported(run: Path, tb: Path) -> None:
    """eval_accuracy/<task> after each of the 2 validations: in metrics.jsonl, as eval/accuracy/<task> scalars in the
    TensorBoard events (also mirrored to the run's store), and in the progress ConfigMap the last patch left."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ssrl.cluster.client import PROGRESS_KEY

    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    val = [x for x in lines if "eval_reward" in x]
    assert [x["step"] for x in val] == [1, 2]
    tasks = {k.split("/", 1)[1] for k in val[0] if k.startswith("eval_accuracy/")}
    assert tasks and all({f"eval_accuracy/{t}" for t in tasks} <= set(x) for x in val)
    assert not any(k.startswith("accuracy/") for x in val for k in x)  # held-out scores never mix with rollouts'
    (events,) = {f.parent for f in tb.rglob("events.out.tfevents.*")}
    acc = EventAccumulator(str(events))
    acc.Reload()
    for t in tasks:
        logged = [(e.step, round(e.value, 4)) for e in acc.Scalars(f"eval/accuracy/{t}")]
        assert logged == [(x["step"], round(x[f"eval_accuracy/{t}"], 4)) for x in val]
    assert any("events.out.tfevents" in k for k in open_store(run).list("tensorboard"))
    patches = [body for method, path, body in Services.requests
               if method == "PATCH" and path == "/api/v1/namespaces/ns/configmaps/val-progress"]
    progress = json.loads(patches[-1]["data"][PROGRESS_KEY])
    assert progress["step"] == 2
    assert progress["validation"] == {t: round(val[-1][f"eval_accuracy/{t}"], 4) for t in tasks}


@pytest.mark.slow
def test_validation_eager_generate_samples_at_paper_settings(assets: dict[str, Path], tmp_path: Path,
                                                             services: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without vLLM, validation goes through transformers' generate: the logits warpers its sampling loop actually
    applied are temperature 0.6 and top-p 0.95 (none at the rollouts' 1.0 / 1.0), one sequence per held-out prompt."""
    from transformers import GenerationMixin, TemperatureLogitsWarper, TopPLogitsWarper

    sampled: list[tuple[bool, int, float | None, float | None]] = []
    real = GenerationMixin._sample

    def record(self: Any, input_ids: Any, logits_processor: Any, *args: Any, **kwargs: Any) -> Any:
        warp = {type(p): p for p in logits_processor}
        t, p = warp.get(TemperatureLogitsWarper), warp.get(TopPLogitsWarper)
        sampled.append((self.training, input_ids.shape[0], t and t.temperature, p and p.top_p))
        return real(self, input_ids, logits_processor, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "_sample", record)
    validate_every_step(assets, tmp_path / "run")
    rollouts, held_out = [s for s in sampled if s[0]], [s for s in sampled if not s[0]]
    assert rollouts and all(s[2:] == (None, None) for s in rollouts)  # temperature 1.0, top_p 1.0: no warper
    assert held_out and all(s[2:] == (0.6, 0.95) for s in held_out)
    assert sum(s[1] for s in held_out) == 2 * 3  # n=1: one sequence per held-out prompt, at each of 2 validations
    assert_validation_reported(tmp_path / "run", tmp_path / "tb")


@pytest.mark.slow
def test_validation_vllm_server_requests_paper_settings(assets: dict[str, Path], tmp_path: Path, services: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """With vLLM (server mode), TRL's real client asks the server for validation completions with temperature 0.6,
    top_p 0.95, n=1 and for rollouts with 1.0 / 1.0 / num_generations, and the scores are reported as without vLLM.
    vLLM itself is the recording server: its package is not installed on CPU, so TRL's start-up check and NCCL
    weight sync are the two pieces replaced."""
    import requests
    from transformers import AutoTokenizer
    from trl.generation.vllm_client import VLLMClient
    from trl.generation.vllm_generation import VLLMGeneration

    def connect(self: VLLMGeneration) -> None:  # _init_vllm without the vllm package and the NCCL communicator
        self.vllm_client = VLLMClient.__new__(VLLMClient)
        self.vllm_client.session, self.vllm_client.base_url = requests.Session(), self.server_base_url
        self.vllm_client.model = self.vllm_client._get(f"{services}/v1/models")["data"][0]["id"]

    monkeypatch.setattr(VLLMGeneration, "_init_vllm", connect)
    monkeypatch.setattr(VLLMGeneration, "sync_weights", lambda self: None)
    Services.completion = AutoTokenizer.from_pretrained(assets["model"]).encode(COMPLETION)
    validate_every_step(assets, tmp_path / "run", use_vllm="true",
                        extra={"vllm_mode": "server", "vllm_server_base_url": services,
                               "vllm_importance_sampling_correction": False})
    asked = [body["sampling_params"] for method, path, body in Services.requests if path == "/inference/v1/generate"]
    rollouts = [s for s in asked if s["n"] == 2]
    held_out = [s for s in asked if s["n"] != 2]
    assert rollouts and all((s["temperature"], s["top_p"]) == (1.0, 1.0) for s in rollouts)
    assert held_out and all((s["n"], s["temperature"], s["top_p"]) == (1, 0.6, 0.95) for s in held_out)
    assert len(held_out) == 2 * 3  # one request per held-out prompt (server mode sends them one by one)
    assert all("suppress_tokens" not in s and s["logit_bias"] for s in asked)  # vLLM's form of the suppression
    assert_validation_reported(tmp_path / "run", tmp_path / "tb")
