"""``ssrl train`` and ``ssrl tiny-model``: thin wrappers over ``ssrl.recipes``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ssrl.cli.common import console, out
from ssrl.config import load_config, to_dict
from ssrl.errors import ConfigError


def train(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML file of TrainConfig fields."),
    model: str | None = typer.Option(None, "--model", help="Model folder or store URL."),
    dataset: str | None = typer.Option(None, "--dataset", help="Generated tasks (folder or store URL)."),
    output: str | None = typer.Option(None, "--output", "-o", help="Run folder in the store."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after N optimiser steps."),
    resume: str | None = typer.Option(None, "--resume", help="none, auto (latest committed step) or a step."),
    deepspeed: str | None = typer.Option(None, "--deepspeed", help="none, zero2, zero3 or a JSON path."),
    preflight: bool = typer.Option(False, "--preflight", help="Check model, processor and data; train nothing."),
    overrides: list[str] | None = typer.Option(None, "--set", "-s", help="Override any field: key=value."),
) -> None:
    """GRPO on generated pretext tasks (TRL + optional DeepSpeed); checkpoints are committed to the store."""
    from ssrl.recipes.train_grpo import TrainConfig

    cfg = load_config(TrainConfig, config, overrides, model=model, dataset=dataset, output=output,
                      max_steps=max_steps, resume=resume, deepspeed=deepspeed)
    console.print(f"[bold]ssrl train[/bold] {json.dumps(to_dict(cfg), sort_keys=True)}", highlight=False)
    if preflight:
        from ssrl.recipes.preflight import preflight as run_preflight

        raise typer.Exit(0 if run_preflight(cfg) else 1)
    from ssrl.recipes.train_grpo import main

    result = main(cfg)
    if result["resumed_from"] is not None:
        out.print(f"resumed from committed step {result['resumed_from']}")
    out.print(f"trained to step {result['global_step']}; committed checkpoints {result['checkpoints']} in "
              f"{result['run']}")


def sft(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML file of SFTRunConfig fields."),
    model: str | None = typer.Option(None, "--model", help="Model folder or store URL."),
    data: str | None = typer.Option(None, "--data", help="Conversations file (LLaMA-Factory or chat rows)."),
    output: str | None = typer.Option(None, "--output", "-o", help="Run folder in the store."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after N optimiser steps."),
    merge: bool | None = typer.Option(None, "--merge", help="With LoRA: merge the adapter into the base weights, "
                                      "committed as <output>/merged (the model GRPO starts from)."),
    overrides: list[str] | None = typer.Option(None, "--set", "-s", help="Override any field: key=value."),
) -> None:
    """Supervised cold start on reasoning traces (optional; the paper uses ~3.6k) with TRL's SFT trainer."""
    from ssrl.recipes.sft import SFTRunConfig, main

    cfg = load_config(SFTRunConfig, config, overrides, model=model, data=data, output=output, max_steps=max_steps,
                      merge=merge)
    result = main(cfg)
    out.print(f"SFT to step {result['global_step']} (loss {result['losses'][0]:.3f} -> {result['losses'][-1]:.3f}); "
              f"committed checkpoints {result['checkpoints']}" + (f"; merged model {result['merged']}"
                                                                  if result.get("merged") else ""))


def tiny_model(
    out_dir: Path = typer.Argument(..., help="Folder for the model, processor and tokenizer."),
    seed: int = typer.Option(0, "--seed"),
    arch: str = typer.Option("qwen2_5_vl", "--arch", help="qwen2_5_vl or qwen3_vl."),
) -> None:
    """Build a tiny randomly initialised Qwen2.5-VL or Qwen3-VL (real architecture, working processor) offline."""
    from ssrl.recipes.tiny_model import ARCHITECTURES, build_tiny_model

    if arch not in ARCHITECTURES:
        raise ConfigError(f"--arch must be one of {', '.join(ARCHITECTURES)}, got {arch!r}")
    path = build_tiny_model(out_dir, arch=arch, seed=seed)
    console.print(f"tiny model -> {path}")
