"""GRPO step time of ``ssrl train`` against a bare TRL GRPOTrainer on the same tiny model, data and settings,
and reward throughput.

    .venv/bin/python bench/bench_train.py [--steps 8] [--device cuda --hidden-size 1024 --layers 8]

Both runs happen in this process, one after the other, with OMP_NUM_THREADS=1 (as torchrun sets). The
ssrl run includes what the platform adds per step: per-task accuracy bookkeeping, the metrics log, and
committing checkpoints to the store (every ``--save-steps``); the bare run saves nothing. On ``--device cuda``
both run bf16 as ``ssrl train`` does without DeepSpeed (fp32 weights + autocast), and the model can be made larger
than the tiny default so that GPU work, not Python, dominates a step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

SETTINGS = {"max_completion_length": 32, "min_pixels": 3136, "max_pixels": 12544, "per_device_train_batch_size": 10,
            "num_generations": 5, "learning_rate": 1e-4, "beta": 0.01}


def prepare(root: Path, hidden_size: int = 64, layers: int = 2) -> tuple[Path, Path]:
    from ssrl.dataset.generate import GenerateConfig, run
    from ssrl.recipes.tiny_model import build_tiny_model
    from ssrl.sources.synth import SynthConfig, synthesize

    synthesize(root / "src", 16, seed=0, cfg=SynthConfig(width=336, height=252))
    run(GenerateConfig(inputs=[str(root / "src")], output=str(root / "tasks"), min_pixels=3136, max_pixels=12544))
    build_tiny_model(root / "tiny", hidden_size=hidden_size, layers=layers)
    return root / "tiny", root / "tasks"


def step_times(log_history: list[dict]) -> list[float]:
    return [h["step_time"] for h in log_history if "step_time" in h][1:]  # the first step warms caches


def run_ssrl(model: Path, tasks: Path, out: Path, steps: int, save_steps: int,
             device: str = "cpu") -> tuple[list[float], float]:
    from ssrl.recipes.train_grpo import TrainConfig, main

    t0 = time.perf_counter()
    result = main(TrainConfig(model=str(model), dataset=str(tasks), output=str(out), max_steps=steps,
                              save_steps=save_steps, report_to=[], bf16="true" if device == "cuda" else "false",
                              **SETTINGS))
    wall = time.perf_counter() - t0
    history = json.loads((out / f"step-{result['global_step']}" / "trainer_state.json").read_text())["log_history"]
    return step_times(history), wall


def run_bare(model: Path, tasks: Path, out: Path, steps: int, device: str = "cpu") -> tuple[list[float], float]:
    """TRL as a user would call it directly: same model, prompts, rewards and settings; no ssrl trainer code."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig, GRPOTrainer

    from ssrl.recipes.data import load_task_dataset
    from ssrl.recipes.rewards import AccuracyReward, FormatReward

    t0 = time.perf_counter()
    processor = AutoProcessor.from_pretrained(model, padding_side="left")
    processor.image_processor.size = {"shortest_edge": SETTINGS["min_pixels"], "longest_edge": SETTINGS["max_pixels"]}
    net = AutoModelForImageTextToText.from_pretrained(model, dtype=torch.float32)
    data = load_task_dataset(str(tasks), out / "cache")
    ids = sorted({net.config.image_token_id, net.config.video_token_id, net.config.vision_start_token_id,
                  net.config.vision_end_token_id})
    args = GRPOConfig(output_dir=str(out), max_steps=steps, use_cpu=device == "cpu", bf16=device == "cuda",
                      report_to=[], save_strategy="no", logging_steps=1, reward_weights=[0.9, 0.1],
                      remove_unused_columns=False, generation_kwargs={"suppress_tokens": ids},
                      lr_scheduler_type="constant", weight_decay=0.01,
                      max_completion_length=SETTINGS["max_completion_length"], beta=SETTINGS["beta"],
                      per_device_train_batch_size=SETTINGS["per_device_train_batch_size"],
                      num_generations=SETTINGS["num_generations"], learning_rate=SETTINGS["learning_rate"])
    trainer = GRPOTrainer(model=net, reward_funcs=[AccuracyReward(), FormatReward()], args=args, train_dataset=data,
                          processing_class=processor)
    trainer.train()
    return step_times(trainer.state.log_history), time.perf_counter() - t0


def reward_throughput(n: int = 20000) -> dict[str, float]:
    from ssrl.recipes.rewards import AccuracyReward, FormatReward

    completions = [r"<think>" + "the marked region is nearer " * 20 + r"</think> \boxed{2, 0, 3, 1}"] * n
    answers, tasks = ["2, 0, 3, 1"] * n, ["shuffle"] * n
    out = {}
    for name, fn, kw in (("accuracy", AccuracyReward(), {"answer": answers, "task": tasks}),
                         ("format", FormatReward(), {})):
        t0 = time.perf_counter()
        fn(completions, **kw)
        out[name] = n / (time.perf_counter() - t0)
    return out


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--save-steps", type=int, default=4)
    parser.add_argument("--ssrl-first", action="store_true", help="Run ssrl before bare TRL (order check).")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--hidden-size", type=int, default=64, help="Text model width (multiple of 16).")
    parser.add_argument("--layers", type=int, default=2, help="Text model layers.")
    parser.add_argument("--out", default="bench/results/train.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, tasks = prepare(root, args.hidden_size, args.layers)
        if args.ssrl_first:
            ours, ours_wall = run_ssrl(model, tasks, root / "ssrl", args.steps, args.save_steps, args.device)
        bare, bare_wall = run_bare(model, tasks, root / "bare", args.steps, args.device)
        if not args.ssrl_first:
            ours, ours_wall = run_ssrl(model, tasks, root / "ssrl", args.steps, args.save_steps, args.device)
    b, o = statistics.median(bare), statistics.median(ours)
    print(f"{'':24}{'median s/step':>15}{'mean s/step':>14}{'wall s':>9}")
    print(f"{'bare TRL GRPOTrainer':24}{b:>15.3f}{statistics.mean(bare):>14.3f}{bare_wall:>9.1f}")
    print(f"{'ssrl train':24}{o:>15.3f}{statistics.mean(ours):>14.3f}{ours_wall:>9.1f}")
    print(f"overhead per step (median): {100 * (o / b - 1):+.1f}%  (goal <= +10%)")
    for name, rate in reward_throughput().items():
        print(f"reward {name}: {rate:,.0f} completions/s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"bare": bare, "ssrl": ours, "bare_wall": bare_wall, "ssrl_wall": ours_wall,
                               "steps": args.steps, "device": device_name(args.device),
                               "hidden_size": args.hidden_size, "layers": args.layers}, indent=1))


if __name__ == "__main__":
    main()
