"""``ssrl train``: GRPO on generated pretext tasks with TRL (+ DeepSpeed), checkpoints committed to the store.

Features, each tied to its ``TrainConfig`` field:

- paper hyperparameters as defaults (§3.3): group size 5, lr 1e-6, KL 0.01 (k3), temperature 1.0,
  rewards 0.9 accuracy + 0.1 format, 5 images per prompt;
- ``deepspeed``: ``zero2`` / ``zero3`` (configs shipped in ``ssrl/configs``) or a JSON path;
- ``freeze_vision``, ``lora_r`` (peft), ``gradient_checkpointing`` and bf16 on GPU, ``use_vllm`` when
  vLLM and a GPU are present;
- ``output``: a store URL; every ``save_steps`` the Hugging Face checkpoint (safetensors + optimizer,
  scheduler and RNG state) is committed as ``step-<n>/`` and ``latest`` moves; ``resume=auto`` pulls the
  latest committed step and continues from it;
- metrics: TRL's (reward per function, KL, completion length, ``frac_reward_zero_std``) plus accuracy per
  task, to TensorBoard and ``metrics.jsonl``.

Raises ``ConfigError`` for every bad combination before a model is loaded.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ssrl import __version__
from ssrl.config import to_dict
from ssrl.errors import ConfigError

DEEPSPEED_PRESETS = ("none", "zero2", "zero3")


@dataclass
class TrainConfig:
    """GRPO training. Field names follow TRL's ``GRPOConfig`` where they map one to one."""

    model: str = "store/models/tiny"
    """Folder (or store URL) of a Hugging Face checkpoint: Qwen2.5-VL / Qwen3-VL class."""
    dataset: str = "store/tasks/demo"
    """Generated tasks (folder or store URL)."""
    dataset_wait: float = 3600.0
    """Seconds to wait for the dataset's manifest.json (a generator started beside the trainer); 0: don't wait."""
    output: str = "store/checkpoints/demo"
    """Run folder in the store: step-<n>/ checkpoints, latest, metrics.jsonl."""
    work_dir: str = ""
    """Local scratch for the Trainer (default: <output>/.. when local, else ~/.cache/ssrl/runs/<name>)."""
    tasks: list[str] = field(default_factory=list)
    """Train on these tasks only (default: all in the dataset)."""
    max_samples: int = 0
    holdout: float = 0.0
    eval_steps: int = 0
    """Validate every this many optimiser updates (0: never) on ``val_dataset``, or else on the ``holdout`` split,
    with one completion per prompt at ``val_temperature``/``val_top_p``. The paper: every 5 rollouts (10 updates)."""
    val_dataset: str = ""
    val_samples: int = 0
    """Validate on the first N prompts only (0: all)."""
    val_temperature: float = 0.6
    val_top_p: float = 0.95
    """Leave this fraction of the dataset's sources out (by a hash of their id) for ``ssrl eval``."""
    seed: int = 0
    max_steps: int = -1
    """Stop after this many optimiser steps (-1: run num_train_epochs)."""
    num_train_epochs: float = 10.0
    learning_rate: float = 1e-6
    weight_decay: float = 1e-2
    warmup_ratio: float = 0.0
    """Share of the steps spent warming the learning rate up (the paper: none)."""
    max_grad_norm: float = 1.0
    per_device_train_batch_size: int = 5
    """Completions per device per micro-step (a multiple of num_generations keeps groups on one rank)."""
    gradient_accumulation_steps: int = 1
    """Micro-steps per optimiser update: one update sees per_device_train_batch_size x ranks x this completions."""
    steps_per_generation: int = 0
    """Micro-steps one rollout feeds (0: gradient_accumulation_steps, i.e. one update per rollout). The paper's
    256-prompt rollout with 128-prompt updates is twice gradient_accumulation_steps: 2 updates per rollout."""
    num_iterations: int = 1
    """Passes over each rollout (GRPO's mu); the paper: 1."""
    num_generations: int = 5
    temperature: float = 1.0
    top_p: float = 1.0
    beta: float = 0.01
    """KL coefficient (TRL uses the k3 / low-variance estimator)."""
    loss_type: str = "dapo"
    max_completion_length: int = 2048
    max_prompt_length: int = 4096
    """Checked by --preflight: every sample's prompt (text + image tokens) must fit."""
    min_pixels: int = 262_144
    max_pixels: int = 4_194_304
    limit_images: int = 5
    rewards: list[str] = field(default_factory=lambda: ["accuracy", "format"])
    reward_weights: list[float] = field(default_factory=lambda: [0.9, 0.1])
    save_steps: int = 5
    keep_checkpoints: int = 3
    logging_steps: int = 1
    deepspeed: str = "none"
    """none, zero2, zero3, or a path to a DeepSpeed JSON."""
    freeze_vision: bool = False
    lora_r: int = 0
    """0: full fine-tuning; > 0: LoRA adapters of this rank on all linear layers of the language model."""
    gradient_checkpointing: str = "auto"
    bf16: str = "auto"
    """auto: on when a CUDA GPU is present."""
    use_vllm: str = "auto"
    """auto: vLLM rollouts when vllm is installed and a GPU is present."""
    resume: str = "none"
    """none, auto (latest committed step in ``output``), or a step number."""
    trust_remote_code: bool = False
    attn_implementation: str = "sdpa"
    """sdpa, flash_attention_2 (a CUDA GPU and ``ssrl[flash]``; else sdpa with a warning) or eager."""
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    """tensorboard, wandb (``pip install 'ssrl[wandb]'``; WANDB_* variables, WANDB_MODE=offline without network)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Any other GRPOConfig field, passed through (e.g. {scale_rewards: batch})."""

    def __post_init__(self) -> None:
        problems = []
        if len(self.rewards) != len(self.reward_weights):
            problems.append(f"rewards ({len(self.rewards)}) and reward_weights ({len(self.reward_weights)}) "
                            "must have the same length")
        if self.num_generations < 2:
            problems.append(f"num_generations must be >= 2 for group-relative advantages, got {self.num_generations}")
        if self.per_device_train_batch_size % self.num_generations and self.gradient_accumulation_steps == 1:
            problems.append(f"per_device_train_batch_size ({self.per_device_train_batch_size}) should be a multiple "
                            f"of num_generations ({self.num_generations}) so every group is complete")
        if self.deepspeed not in DEEPSPEED_PRESETS and not Path(self.deepspeed).is_file():
            problems.append(f"deepspeed must be one of {DEEPSPEED_PRESETS} or an existing JSON file, "
                            f"got {self.deepspeed!r}")
        for name in ("gradient_checkpointing", "bf16", "use_vllm"):
            if getattr(self, name) not in ("auto", "true", "false", True, False):
                problems.append(f"{name} must be auto, true or false, got {getattr(self, name)!r}")
        if self.resume not in ("none", "auto") and not str(self.resume).isdigit():
            problems.append(f"resume must be none, auto or a step number, got {self.resume!r}")
        if self.lora_r and self.deepspeed == "zero3":
            problems.append("lora_r with deepspeed=zero3 is not supported here; use zero2 for LoRA")
        if not 0 <= self.holdout < 1:
            problems.append(f"holdout must be in [0, 1), got {self.holdout}")
        if self.eval_steps and not (self.val_dataset or self.holdout):
            problems.append("eval_steps needs held-out prompts: set holdout (e.g. 0.05) or val_dataset")
        if self.steps_per_generation and self.steps_per_generation % self.gradient_accumulation_steps:
            problems.append(f"steps_per_generation ({self.steps_per_generation}) must be a multiple of "
                            f"gradient_accumulation_steps ({self.gradient_accumulation_steps}): whole updates per "
                            "rollout")
        if self.attn_implementation not in ("sdpa", "flash_attention_2", "eager"):
            problems.append(f"attn_implementation must be sdpa, flash_attention_2 or eager, got "
                            f"{self.attn_implementation!r}")
        if self.limit_images < 1:
            problems.append(f"limit_images must be >= 1, got {self.limit_images}")
        if self.dataset_wait < 0:
            problems.append(f"dataset_wait must be >= 0 seconds, got {self.dataset_wait}")
        if problems:
            raise ConfigError(problems)


def flag(value: str | bool, auto: bool) -> bool:
    return auto if value == "auto" else value in (True, "true")


def deepspeed_config(name: str) -> str | None:
    if name == "none":
        return None
    if name in DEEPSPEED_PRESETS:
        return str(resources.files("ssrl") / "configs" / f"{name}.json")
    return name


def ensure_distributed_env() -> None:
    """DeepSpeed under a bare ``python`` looks for MPI; give it a one-process torchrun environment."""
    if "RANK" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})


def work_dir(cfg: TrainConfig) -> Path:
    from ssrl.recipes.modeling import run_scratch

    return run_scratch(cfg.output, cfg.work_dir)


def build_grpo_args(cfg: TrainConfig, out_dir: Path, gpu: bool) -> Any:
    from trl import GRPOConfig

    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    unknown = sorted(set(cfg.extra) - fields)
    if unknown:
        raise ConfigError(f"extra: unknown GRPOConfig fields {unknown}")
    use_vllm = flag(cfg.use_vllm, gpu and _has("vllm"))
    return GRPOConfig(
        output_dir=str(out_dir), seed=cfg.seed, max_steps=cfg.max_steps, num_train_epochs=cfg.num_train_epochs,
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_ratio,
        max_grad_norm=cfg.max_grad_norm, lr_scheduler_type="constant" if cfg.warmup_ratio == 0 else "cosine",
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, num_generations=cfg.num_generations,
        steps_per_generation=cfg.steps_per_generation or None, num_iterations=cfg.num_iterations,
        temperature=cfg.temperature, top_p=cfg.top_p, beta=cfg.beta, loss_type=cfg.loss_type,
        max_completion_length=cfg.max_completion_length, reward_weights=list(cfg.reward_weights),
        # keep_checkpoints prunes the store and every node's scratch (StoreCheckpointCallback); the Trainer's own
        # rotation would prune rank 0's node only, possibly a folder still uploading.
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=None,
        logging_steps=cfg.logging_steps, report_to=list(cfg.report_to),
        eval_strategy="steps" if cfg.eval_steps else "no", eval_steps=cfg.eval_steps or None, num_generations_eval=1,
        bf16=flag(cfg.bf16, gpu), use_cpu=not gpu,
        gradient_checkpointing=flag(cfg.gradient_checkpointing, gpu),
        deepspeed=deepspeed_config(cfg.deepspeed), use_vllm=use_vllm, remove_unused_columns=False,
        disable_tqdm=False,
        # vLLM sizes its KV cache for this context instead of the model's full one (32k-128k for Qwen-VL).
        **({} if "vllm_max_model_length" in cfg.extra else
           {"vllm_max_model_length": cfg.max_prompt_length + cfg.max_completion_length}),
        **cfg.extra,
    )


def suppression_kwargs(token_ids: list[int], use_vllm: bool) -> dict[str, Any]:
    """``generation_kwargs`` that keep rollouts from sampling ``token_ids``, in the sampler's own terms.

    transformers' ``generate`` takes ``suppress_tokens``; vLLM's ``SamplingParams`` (colocate) and its server's
    request (server mode) have no such field and would reject or silently ignore it, so there the tokens get
    vLLM's strongest ``logit_bias``, -100 (its clamp): their odds shrink by e^-100 (about 4e-44).

    >>> suppression_kwargs([151655, 151652], use_vllm=True)
    {'logit_bias': {151655: -100.0, 151652: -100.0}}
    """
    if not token_ids:
        return {}
    if use_vllm:
        return {"logit_bias": {int(t): -100.0 for t in token_ids}}
    return {"suppress_tokens": [int(t) for t in token_ids]}


def rollout_layout(args: Any, world_size: int) -> dict[str, float]:
    """Prompts per rollout and per optimiser update, and updates per rollout, from TRL's GRPOConfig semantics:
    a rollout fills ``steps_per_generation`` micro-steps, an update takes ``gradient_accumulation_steps`` of them,
    and the rollout is replayed ``num_iterations`` times. The paper (EasyR1): 256 prompts, 128 per update, 2.
    ``args`` is a GRPOConfig or a TrainConfig (whose steps_per_generation 0 means gradient_accumulation_steps)."""
    micro = args.per_device_train_batch_size * world_size
    per_rollout = args.steps_per_generation or args.gradient_accumulation_steps
    return {"prompts_per_rollout": micro * per_rollout / args.num_generations,
            "prompts_per_update": micro * args.gradient_accumulation_steps / args.num_generations,
            "updates_per_rollout": per_rollout * args.num_iterations / args.gradient_accumulation_steps}


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def bf16_weights(bf16: bool, deepspeed: str, lora_r: int) -> bool:
    """Load bf16 weights only where an fp32 copy of what trains exists: DeepSpeed's bf16 optimizer keeps fp32
    master weights, LoRA trains fp32 adapters over a frozen base. Otherwise the weights load in fp32 and the
    Trainer autocasts (``bf16=True``): AdamW steps of ~lr = 1e-6 are below bf16's resolution (2^-8 relative),
    so plain bf16 weights barely move (measured: 2% of them changed after 3 steps; fp32 + autocast: 84%)."""
    return bf16 and (deepspeed != "none" or lora_r > 0)


def load_model_and_processor(cfg: TrainConfig, path: str, gpu: bool) -> tuple[Any, Any]:
    from ssrl.recipes.modeling import load_model_and_processor as load
    from ssrl.recipes.modeling import resolve_attention

    return load(path, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels,
                bf16=bf16_weights(flag(cfg.bf16, gpu), cfg.deepspeed, cfg.lora_r),
                trust_remote_code=cfg.trust_remote_code, freeze_vision=cfg.freeze_vision,
                attn_implementation=resolve_attention(cfg.attn_implementation, gpu))


def validation_sampling(trainer: Any, temperature: float, top_p: float, accuracy: Any) -> None:
    """Validate at the paper's validation sampling (temperature 0.6, top_p 0.95; TRL samples evaluation like the
    rollouts) and score it apart from the rollouts (``eval_accuracy/<task>``)."""
    evaluate = trainer.evaluate

    def run(*args: Any, **kwargs: Any) -> Any:
        samplers = [o for o in (trainer, getattr(trainer, "generation_config", None),
                                getattr(trainer, "vllm_generation", None)) if hasattr(o, "temperature")]
        saved = [(o.temperature, o.top_p) for o in samplers]
        for o in samplers:
            o.temperature, o.top_p = temperature, top_p
        accuracy.mode = "eval"
        try:
            return evaluate(*args, **kwargs)
        finally:
            accuracy.mode = "train"
            for o, (t, p) in zip(samplers, saved, strict=True):
                o.temperature, o.top_p = t, p

    trainer.evaluate = run


def seed_each_epoch(trainer: Any) -> None:
    """Make a resumed run draw each epoch's prompt order exactly as an uninterrupted one. TRL's ``RepeatSampler``
    draws every epoch from one generator seeded once; a run resumed in epoch k skips the earlier epochs without
    drawing them, so it got epoch 0's order again. Its ``set_epoch(k)`` here reseeds and discards k draws (the
    uninterrupted order is unchanged), called at every epoch's start by a callback: the Trainer's own ``set_epoch``
    does not reach the sampler through a resumed multi-process run's wrappers (``SkipBatchSampler`` over
    ``BatchSamplerShard``)."""
    import math

    import torch
    from transformers import TrainerCallback

    samplers: list[Any] = []
    make = trainer._get_train_sampler

    def sampler(*args: Any, **kwargs: Any) -> Any:
        s = make(*args, **kwargs)
        if getattr(s, "generator", None) is not None and s.seed is not None and not hasattr(s, "set_epoch"):
            def set_epoch(epoch: int) -> None:
                s.generator.manual_seed(s.seed)
                for _ in range(epoch):
                    torch.randperm(s.num_samples, generator=s.generator)

            s.set_epoch = set_epoch
            samplers.append(s)
        return s

    class EpochSeed(TrainerCallback):
        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            for s in samplers:  # state.epoch: an integer at an epoch's start, k.fraction when resumed inside epoch k
                s.set_epoch(math.floor(state.epoch + 1e-6))

    trainer._get_train_sampler = sampler
    trainer.add_callback(EpochSeed())


def run_metadata(cfg: TrainConfig) -> dict[str, Any]:
    """What every checkpoint records next to its weights, so a resume can tell what changed."""
    from ssrl.tasks import available_tasks

    return {"config": to_dict(cfg), "seed": cfg.seed, "ssrl_version": __version__, "tasks": available_tasks()}


def main(cfg: TrainConfig) -> dict[str, Any]:
    """Set up, train, commit the final checkpoint; returns the last logged metrics."""
    import torch
    from trl import GRPOTrainer

    from ssrl.dataset.shards import wait_for_manifest
    from ssrl.recipes.callbacks import JobProgressCallback, MetricsCallback, StoreCheckpointCallback, TaskAccuracy
    from ssrl.recipes.data import load_task_dataset
    from ssrl.recipes.dist import node_ranks, once_per_node
    from ssrl.recipes.modeling import lora_config, resolve_model, restore_weights, vision_token_ids
    from ssrl.recipes.rewards import AccuracyReward, get_reward
    from ssrl.store import open_store
    from ssrl.store.checkpoints import latest_step, list_steps, pull_checkpoint

    gpu = torch.cuda.is_available()
    if cfg.deepspeed != "none":
        ensure_distributed_env()
    scratch = work_dir(cfg)
    scratch.mkdir(parents=True, exist_ok=True)
    wait_for_manifest(cfg.dataset, cfg.dataset_wait)  # before anything loads: a complete dataset, or a clear error
    # The process group and DeepSpeed's config exist before anything loads: downloads run once per node, and under
    # ZeRO-3 from_pretrained partitions the weights as they load instead of holding a full copy on every rank.
    args = build_grpo_args(cfg, scratch / "trainer", gpu)
    if cfg.deepspeed != "none":  # DeepSpeed's view of the process group accelerate made: without it zero.Init (policy
        import deepspeed  # and TRL's reference model) sizes the batch for one rank and fails its batch check

        deepspeed.init_distributed()
    model_path = resolve_model(cfg.model, scratch)
    model, processor = load_model_and_processor(cfg, model_path, gpu)
    if suppress := vision_token_ids(model.config):
        args.generation_kwargs = {**(args.generation_kwargs or {}), **suppression_kwargs(suppress, args.use_vllm)}
    dataset = load_task_dataset(cfg.dataset, scratch, tasks=cfg.tasks or None, limit_images=cfg.limit_images,
                                max_samples=cfg.max_samples or None, seed=cfg.seed, holdout=cfg.holdout)
    accuracy = TaskAccuracy()
    rewards = [AccuracyReward(on_score=accuracy.add) if name == "accuracy" else get_reward(name)
               for name in cfg.rewards]
    peft_config = lora_config(cfg.lora_r)
    run = open_store(cfg.output)
    resume_from = None
    if cfg.resume != "none":
        step = latest_step(run) if cfg.resume == "auto" else int(cfg.resume)
        if step is not None:  # each node pulls what its ranks resume from (their optimizer shards, not all)
            resume_from = scratch / "trainer" / f"checkpoint-{step}"
            once_per_node(lambda: pull_checkpoint(run, resume_from, step, ranks=node_ranks()))
    val = None
    if cfg.eval_steps:
        val = load_task_dataset(cfg.val_dataset or cfg.dataset, scratch, tasks=cfg.tasks or None,
                                limit_images=cfg.limit_images, max_samples=cfg.val_samples or None, seed=cfg.seed,
                                holdout=0.0 if cfg.val_dataset else cfg.holdout, split="holdout")
    trainer = GRPOTrainer(model=model, reward_funcs=rewards, args=args, train_dataset=dataset, eval_dataset=val,
                          processing_class=processor, peft_config=peft_config)
    seed_each_epoch(trainer)
    validation_sampling(trainer, cfg.val_temperature, cfg.val_top_p, accuracy)
    resume_step = int(resume_from.name.split("-")[-1]) if resume_from else None
    metrics = MetricsCallback(scratch / "trainer" / "metrics.jsonl", accuracy, cfg.output, resume_step)
    trainer.callback_handler.callbacks.insert(0, metrics)  # before TensorBoard's, which logs what it adds
    trainer.add_callback(StoreCheckpointCallback(cfg.output, cfg.keep_checkpoints, run_metadata(cfg)))
    trainer.add_callback(JobProgressCallback.from_env())  # progress annotation on its PyTorchJob, in a cluster
    if resume_from is not None and cfg.deepspeed == "none" and not cfg.lora_r:
        restore_weights(trainer.model, resume_from)  # DeepSpeed restores its own; LoRA goes through load_adapter
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    # The Trainer saves at the last step too (save_strategy=steps), so the final state is committed.
    history = [h for h in trainer.state.log_history if "loss" in h or "reward" in h]
    precision = {"weights": str(next(trainer.model.parameters()).dtype).removeprefix("torch."),
                 "autocast": trainer.accelerator.mixed_precision}
    return {"global_step": trainer.state.global_step, "last": history[-1] if history else {}, "precision": precision,
            "run": run.url, "checkpoints": list_steps(run),
            "resumed_from": int(resume_from.name.split("-")[-1]) if resume_from else None}
