"""``ssrl train --preflight``: catch before any GPU time is spent what would fail or hang mid-run.

Loads the model and processor exactly as training does and one sample of every task, then checks that
the image placeholder tokens match the processor's image features, that every prompt fits
``max_prompt_length``, that a forward pass accepts each sample, and that the batch layout gives every
rank complete groups of prompts that all carry images (ranks without images hang under ZeRO-3).
"""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console
from rich.table import Table

from ssrl.recipes.modeling import resolve_model
from ssrl.recipes.train_grpo import TrainConfig, load_model_and_processor, rollout_layout, work_dir

out = Console(highlight=False)


def _image_token_id(processor: Any, model: Any) -> int:
    token = getattr(processor, "image_token", "<|image_pad|>")
    return int(getattr(model.config, "image_token_id", None) or processor.tokenizer.convert_tokens_to_ids(token))


def check_sample(row: dict[str, Any], processor: Any, model: Any, cfg: TrainConfig) -> dict[str, Any]:
    """One task's sample through the processor and the model; every problem in ``problems``."""
    import torch

    images = row["images"]
    text = processor.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
    inputs = processor(images=images, text=[text], return_tensors="pt")
    ids = inputs["input_ids"][0]
    image_tokens = int((ids == _image_token_id(processor, model)).sum())
    merge = getattr(processor.image_processor, "merge_size", 2)
    features = int((inputs["image_grid_thw"].prod(-1) // merge**2).sum()) if "image_grid_thw" in inputs else 0
    placeholders = sum(1 for part in row["prompt"][0]["content"] if part.get("type") == "image")
    problems = []
    if placeholders != len(images):
        problems.append(f"{placeholders} image placeholders for {len(images)} images")
    if image_tokens != features:
        problems.append(f"{image_tokens} image tokens but the processor made {features} image features")
    if len(ids) > cfg.max_prompt_length:
        problems.append(f"prompt is {len(ids)} tokens > max_prompt_length {cfg.max_prompt_length}")
    if not problems:
        with torch.no_grad():
            logits = model(**inputs).logits
        if not torch.isfinite(logits).all():
            problems.append("forward pass gave non-finite logits")
    return {"images": len(images), "tokens": len(ids), "image_tokens": image_tokens, "features": features,
            "problems": problems}


def layout_problems(cfg: TrainConfig, world_size: int) -> list[str]:
    """Batch arithmetic per rank: complete groups, and at least one prompt (with its images) on every rank."""
    problems = []
    per_step = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * world_size
    if per_step % cfg.num_generations:
        problems.append(f"{per_step} completions per step (per_device_train_batch_size x gradient_accumulation_"
                        f"steps x {world_size} ranks) is not a multiple of num_generations {cfg.num_generations}")
    if per_step // cfg.num_generations < 1 or cfg.per_device_train_batch_size < 1:
        problems.append("some rank would get no prompt, hence no images: ZeRO-3 would hang in the vision tower")
    return problems


def preflight(cfg: TrainConfig, world_size: int | None = None) -> bool:
    """Print a report; True when everything is ready."""
    import torch

    from ssrl.recipes.data import load_task_dataset

    world = world_size or int(os.environ.get("WORLD_SIZE", "1"))
    scratch = work_dir(cfg)
    scratch.mkdir(parents=True, exist_ok=True)
    model, processor = load_model_and_processor(cfg, resolve_model(cfg.model, scratch), torch.cuda.is_available())
    model.eval()
    dataset = load_task_dataset(cfg.dataset, scratch, tasks=cfg.tasks or None, limit_images=cfg.limit_images)
    first: dict[str, int] = {}
    for i, task in enumerate(dataset["task"]):
        first.setdefault(task, i)
    table = Table(title=f"preflight: {cfg.model} on {cfg.dataset}", title_justify="left")
    for col in ("task", "images", "prompt tokens", "image tokens", "image features", "result"):
        table.add_column(col, justify="left" if col in ("task", "result") else "right")
    problems = []
    for task, index in sorted(first.items()):
        r = check_sample(dataset[index], processor, model, cfg)
        problems += [f"{task}: {p}" for p in r["problems"]]
        table.add_row(task, str(r["images"]), str(r["tokens"]), str(r["image_tokens"]), str(r["features"]),
                      "[red]FAIL[/red]" if r["problems"] else "[green]ok[/green]")
    out.print(table)
    layout = rollout_layout(cfg, world)
    out.print(f"batch layout on {world} rank(s): {layout['prompts_per_rollout']:g} prompts per rollout, "
              f"{layout['prompts_per_update']:g} per optimiser update, {layout['updates_per_rollout']:g} updates per "
              "rollout")
    no_images = sum(1 for imgs in dataset["images"] if not imgs) if len(dataset) <= 100_000 else 0
    problems += layout_problems(cfg, world)
    if no_images:
        problems.append(f"{no_images} samples have no image: a rank given only those hangs under ZeRO-3")
    for p in problems:
        out.print(f"[red]✗[/red] {p}", soft_wrap=True)
    ok = not problems
    out.print(f"[green]✓ ready[/green] ({len(dataset)} samples, {world} rank(s))" if ok else "[red]✗ not ready[/red]")
    return ok
