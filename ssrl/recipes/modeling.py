"""Where a model comes from and how it is loaded: shared by training, SFT, preflight and evaluation.

A model location is a Hugging Face folder, a checkpoint run (``step-<n>/`` + ``latest``, local or in a
store: the latest committed step is used) or a store URL of either. Loading always goes through
``from_pretrained`` on a local folder, safetensors only, ``trust_remote_code`` off unless asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def resolve_model(location: str, cache: Path) -> str:
    """A local folder for ``from_pretrained``: a run's latest committed step, or a store URL pulled once per node
    (weights only, checksums verified; a verified copy already in ``cache`` is not pulled again)."""
    from ssrl.errors import SSRLError, StoreError
    from ssrl.recipes.dist import once_per_node
    from ssrl.store import open_store
    from ssrl.store.checkpoints import latest_step, step_prefix

    local = location.removeprefix("file://")
    if "://" not in local:
        if not Path(local).exists():
            raise SSRLError(f"model {local} does not exist (models load from a folder or a store URL; nothing is "
                            "downloaded from a hub)")
        if (Path(local) / "config.json").is_file():
            return local
        step = latest_step(open_store(local))
        if step is None:
            raise StoreError(f"{local} is neither a model folder (no config.json) nor a checkpoint run "
                             "(no committed step-<n>/)")
        return str(Path(local) / step_prefix(step))
    return once_per_node(lambda: _pull_model(location, cache))


def _pull_model(location: str, cache: Path) -> str:
    """A committed model or a run's latest step, weights only (no optimizer or RNG state), unless already here."""
    from ssrl.errors import StoreError
    from ssrl.store import open_store
    from ssrl.store.checkpoints import latest_step, pull_checkpoint
    from ssrl.store.transfer import COMMIT, pull_tree, read_commit

    store = open_store(location)
    name = location.rstrip("/").rsplit("/", 1)[-1]
    if read_commit(store, "") is not None:
        dest = cache / "models" / name
        pull_tree(store, "", dest)
        return str(dest)
    step = latest_step(store)
    if step is None:
        raise StoreError(f"{store.url} is neither a committed model (no {COMMIT}: put one there with `ssrl model push "
                         f"<folder> {location}`) nor a checkpoint run (no committed step-<n>/)")
    dest = cache / "models" / f"{name}-step-{step}"
    pull_checkpoint(store, dest, step, weights_only=True)
    return str(dest)


def vision_token_ids(model_config: Any) -> list[int]:
    """Special vision tokens generated text must never contain: a stray ``<|vision_start|>`` makes
    Qwen-VL's 3D positions count an image that has no features (random and early models do sample them)."""
    names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    ids = {getattr(model_config, n, None) for n in names}
    return sorted(i for i in ids if isinstance(i, int))


ATTENTION = ("sdpa", "flash_attention_2", "eager")


def resolve_attention(requested: str, gpu: bool) -> str:
    """The attention kernel to load with: ``flash_attention_2`` needs a CUDA GPU and the ``flash-attn`` package
    (``pip install 'ssrl[flash]'``); without them PyTorch's fused ``sdpa`` stands in, with a warning. ``eager``
    is the fallback for a model without an sdpa path (``load_model_and_processor`` retries with it)."""
    import importlib.util
    import logging

    if requested not in ATTENTION:
        raise ValueError(f"attn_implementation must be one of {ATTENTION}, got {requested!r}")
    if requested == "flash_attention_2" and not (gpu and importlib.util.find_spec("flash_attn")):
        logging.getLogger(__name__).warning("flash_attention_2 needs a CUDA GPU and flash-attn (%s); using sdpa",
                                            "no GPU" if not gpu else "flash-attn not installed")
        return "sdpa"
    return requested


def load_model_and_processor(path: str, *, min_pixels: int, max_pixels: int, bf16: bool = False,
                             trust_remote_code: bool = False, freeze_vision: bool = False,
                             attn_implementation: str = "sdpa") -> tuple[Any, Any]:
    import logging

    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    # Left padding, as batched generation needs (TRL's rollouts and evaluation alike) when prompts differ in
    # length: right padding misaligns Qwen-VL's multimodal token types with the prompt ids.
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code, padding_side="left",
                                              truncation_side="left")
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is not None:  # the paper's pixel range (Qwen-VL processors read it from `size`)
        image_processor.size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
        for attr in ("min_pixels", "max_pixels"):
            if getattr(image_processor, attr, None) is not None:
                setattr(image_processor, attr, None)
    dtype = torch.bfloat16 if bf16 else torch.float32
    kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code, "use_safetensors": True}
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, attn_implementation=attn_implementation, **kwargs)
    except (ValueError, ImportError) as e:
        if attn_implementation == "eager" or "attention" not in str(e).lower().replace("attn", "attention"):
            raise
        logging.getLogger(__name__).warning("%s attention unavailable for %s (%s); using eager", attn_implementation,
                                            path, str(e).splitlines()[0])
        model = AutoModelForImageTextToText.from_pretrained(path, attn_implementation="eager", **kwargs)
    if freeze_vision:
        for name, param in model.named_parameters():
            if "visual" in name or "vision_tower" in name:
                param.requires_grad_(False)
    return model, processor


def lora_config(rank: int) -> Any:
    """LoRA on every linear layer of the language model (the vision tower stays whole), alpha = 2 x rank, as
    the paper's cold start (rank 128); None for full fine-tuning (rank 0)."""
    if not rank:
        return None
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", exclude_modules=r".*visual.*",
                      task_type="CAUSAL_LM")


def run_scratch(output: str, work_dir: str = "") -> Path:
    """Local scratch of a training run: ``work_dir`` when set, else beside a local ``output``, else under
    ~/.cache/ssrl/runs/<run name> for a store URL."""
    if work_dir:
        return Path(work_dir)
    if "://" not in output:
        return Path(output).parent / f".work-{Path(output).name}"
    return Path("~/.cache/ssrl/runs").expanduser() / output.rstrip("/").rsplit("/", 1)[-1]


def restore_weights(model: Any, checkpoint: str | Path) -> None:
    """Load a checkpoint's weights into ``model`` through ``from_pretrained``, which maps the saved key names.

    Without DeepSpeed the Trainer resumes the weights with ``load_state_dict(strict=False)`` on the raw safetensors
    keys, which transformers 5 writes in the checkpoint layout (``model.layers.*``), not the module's
    (``model.language_model.layers.*``): 56 of the tiny Qwen2.5-VL's 57 tensors did not load, and the run went on
    from the base weights with the checkpoint's optimizer state. Here every key must match.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    saved = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=next(model.parameters()).dtype,
                                                        use_safetensors=True)
    with torch.no_grad():
        model.load_state_dict(saved.state_dict(), strict=True)
