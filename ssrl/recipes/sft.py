"""``ssrl sft``: the optional supervised cold start (paper §3.2) with TRL's SFT trainer.

Some work finds a cold start hurts later RL; the paper uses ~3.6k reasoning traces so rollouts produce
well-formed answers. Users bring their own conversations file:

- LLaMA-Factory rows (the paper's ``SFT-coldstart.json``): ``instruction``, ``input``, ``output``, ``images``;
- or chat rows: ``messages`` (user then assistant; ``<image>`` placeholders in the user text) and ``images``.

Image paths are relative to the file's folder. Checkpoints are committed to the store as in ``ssrl train``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssrl.errors import ConfigError, SSRLError
from ssrl.recipes.data import to_prompt
from ssrl.tasks.base import IMAGE_TOKEN


@dataclass
class SFTRunConfig:
    """Cold-start SFT; paper values (7B, LoRA 128) where they apply."""

    model: str = "store/models/tiny"
    data: str = "data/sft.json"
    """JSON list or JSONL of LLaMA-Factory or chat rows."""
    output: str = "store/checkpoints/sft"
    work_dir: str = ""
    max_steps: int = -1
    num_train_epochs: float = 5.0
    learning_rate: float = 1e-5
    warmup_ratio: float = 0.1
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 8
    max_length: int = 4096
    min_pixels: int = 262_144
    max_pixels: int = 262_144
    lora_r: int = 0
    """The paper uses LoRA rank 128 on all linear layers (then merges); 0 = full fine-tuning."""
    merge: bool = False
    """With lora_r: merge the adapter into the base weights after training and commit the merged model to
    ``<output>/merged``, a plain model folder GRPO loads with ``from_pretrained`` (the paper's flow)."""
    save_steps: int = 50
    keep_checkpoints: int = 3
    bf16: str = "auto"
    gradient_checkpointing: str = "auto"
    seed: int = 0
    trust_remote_code: bool = False
    attn_implementation: str = "sdpa"
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])

    def __post_init__(self) -> None:
        if self.max_length < 64:
            raise ConfigError(f"max_length must be >= 64, got {self.max_length}")
        if self.merge and not self.lora_r:
            raise ConfigError("merge needs lora_r > 0: full fine-tuning already saves plain weights")


def read_conversations(path: str | Path) -> list[dict[str, Any]]:
    """Rows as {prompt, completion, images (paths)}; every bad row reported at once."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"SFT data {path} cannot be read: {e.strerror}") from None
    try:
        rows = json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines()
                                                                       if x.strip()]
    except ValueError as e:
        raise ConfigError(f"SFT data {path} is not JSON or JSONL: {e}") from None
    out, problems = [], []
    for i, row in enumerate(rows):
        try:
            out.append(_row(row, path.parent))
        except (KeyError, TypeError, ValueError) as e:
            problems.append(f"{path}:{i}: {e}")
    if problems:
        raise ConfigError(problems[:20] + ([f"... {len(problems) - 20} more"] if len(problems) > 20 else []))
    if not out:
        raise ConfigError(f"SFT data {path} has no rows")
    return out


def _row(row: dict[str, Any], root: Path) -> dict[str, Any]:
    if "messages" in row:
        user = next(m for m in row["messages"] if m["role"] == "user")["content"]
        answer = next(m for m in row["messages"] if m["role"] == "assistant")["content"]
    else:
        user = (row["instruction"] + ("\n" + row["input"] if row.get("input") else "")).strip()
        answer = row["output"]
    images = [str((root / p).resolve()) if not Path(p).is_absolute() else p for p in row.get("images", [])]
    if user.count(IMAGE_TOKEN) == 0 and images:
        user = IMAGE_TOKEN * len(images) + user
    if user.count(IMAGE_TOKEN) != len(images):
        raise ValueError(f"{user.count(IMAGE_TOKEN)} <image> placeholders for {len(images)} images")
    for p in images:
        if not Path(p).is_file():
            raise ValueError(f"image {p} does not exist")
    return {"prompt": to_prompt(user), "completion": [{"role": "assistant", "content": [{"type": "text",
                                                                                          "text": answer}]}],
            "images": images}


def main(cfg: SFTRunConfig) -> dict[str, Any]:
    import datasets
    import torch
    from trl import SFTConfig, SFTTrainer

    from ssrl.recipes.callbacks import StoreCheckpointCallback
    from ssrl.recipes.modeling import (
        load_model_and_processor,
        lora_config,
        resolve_attention,
        resolve_model,
        run_scratch,
    )
    from ssrl.recipes.train_grpo import bf16_weights, flag
    from ssrl.store import open_store
    from ssrl.store.checkpoints import list_steps

    rows = read_conversations(cfg.data)
    gpu = torch.cuda.is_available()
    scratch = run_scratch(cfg.output, cfg.work_dir)
    scratch.mkdir(parents=True, exist_ok=True)
    model, processor = load_model_and_processor(resolve_model(cfg.model, scratch), min_pixels=cfg.min_pixels,
                                                max_pixels=cfg.max_pixels,
                                                bf16=bf16_weights(flag(cfg.bf16, gpu), "none", cfg.lora_r),
                                                trust_remote_code=cfg.trust_remote_code,
                                                attn_implementation=resolve_attention(cfg.attn_implementation, gpu))
    dataset = datasets.Dataset.from_list(rows).cast_column("images", datasets.Sequence(datasets.Image()))
    peft_config = lora_config(cfg.lora_r)
    args = SFTConfig(
        output_dir=str(scratch / "sft"), max_steps=cfg.max_steps, num_train_epochs=cfg.num_train_epochs,
        learning_rate=cfg.learning_rate, warmup_steps=cfg.warmup_ratio, lr_scheduler_type="cosine",
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, max_length=cfg.max_length,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=cfg.keep_checkpoints, seed=cfg.seed,
        bf16=flag(cfg.bf16, gpu), use_cpu=not gpu, gradient_checkpointing=flag(cfg.gradient_checkpointing, gpu),
        report_to=list(cfg.report_to), logging_steps=1,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor,
                         peft_config=peft_config)
    trainer.add_callback(StoreCheckpointCallback(cfg.output, cfg.keep_checkpoints, {"stage": "sft"}))
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    if not losses:
        raise SSRLError("SFT logged no loss")
    merged = merge_adapter(trainer, processor, scratch / "merged", cfg.output) if cfg.merge else None
    return {"global_step": trainer.state.global_step, "losses": losses,
            "checkpoints": list_steps(open_store(cfg.output)), "merged": merged}


def merge_adapter(trainer: Any, processor: Any, local: Path, output: str) -> str | None:
    """Fold the LoRA adapter into the base weights (W + B A x alpha/r), save safetensors with the processor and
    commit the folder to ``<output>/merged``; returns its URL (None on ranks other than 0)."""
    from ssrl.store import open_store
    from ssrl.store.models import push_model

    if not trainer.is_world_process_zero():
        return None
    merged = trainer.model.merge_and_unload()
    merged.save_pretrained(local, safe_serialization=True)
    processor.save_pretrained(local)
    store = open_store(output.rstrip("/") + "/merged")
    push_model(local, store)
    return store.url
