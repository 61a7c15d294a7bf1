"""Generated task shards -> a Hugging Face dataset of conversational prompts with images, for TRL.

Only committed shards are read; shards in an object store are downloaded once per node (by its first process)
into a local cache and checked against their commit records.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ssrl.dataset.shards import committed_shards, in_holdout, record_key
from ssrl.errors import SSRLError
from ssrl.recipes.dist import once_per_node
from ssrl.store import open_store
from ssrl.store.transfer import fetch_verified
from ssrl.tasks.base import IMAGE_TOKEN


def to_prompt(problem: str) -> list[dict[str, Any]]:
    """The question as one user turn, images where its ``<image>`` placeholders are.

    >>> to_prompt("<image>Which? A. <image>")[0]["content"]
    [{'type': 'image'}, {'type': 'text', 'text': 'Which? A. '}, {'type': 'image'}]
    """
    content: list[dict[str, Any]] = []
    for i, text in enumerate(problem.split(IMAGE_TOKEN)):
        if i:
            content.append({"type": "image"})
        if text:
            content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}]


def local_shards(dataset_url: str, cache: Path) -> list[Path]:
    """Paths of the dataset's committed shards on this machine: downloaded and verified when remote, unless a verified
    copy is already in ``cache`` (a restarted pod, or the node's first process got there first)."""
    store = open_store(dataset_url)
    keys = committed_shards(store)
    if not keys:
        raise SSRLError(f"{store.url} holds no committed shards: run `ssrl generate -o {dataset_url}` first")
    paths = []
    for key in keys:
        local = store.local_path(key)
        if local is None:
            record = json.loads(store.read_bytes(record_key(key)))
            local = cache / "shards" / hashlib.sha256(store.url.encode()).hexdigest()[:16] / key
            fetch_verified(store, key, local, record["bytes"], record["sha256"])
        paths.append(local)
    return paths


def load_task_dataset(dataset_url: str, cache: Path, *, tasks: list[str] | None = None, limit_images: int = 5,
                      max_samples: int | None = None, seed: int = 0, holdout: float = 0.0,
                      split: str = "train") -> Any:
    """Columns TRL needs: ``prompt`` (conversational), ``images`` (PIL, decoded lazily), plus ``answer`` and
    ``task`` for the rewards. Rows with more than ``limit_images`` images are dropped, and so are rows from the
    held-out sources (``holdout``: the fraction ``ssrl eval --set holdout=...`` evaluates on)."""
    import datasets

    files = [str(p) for p in once_per_node(lambda: local_shards(dataset_url, cache))]
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(cache / "hf"))
    if holdout > 0:
        # split="holdout": only those sources (validation during training, as ``ssrl eval --set holdout`` sees them)
        ds = ds.filter(lambda s: in_holdout(s, holdout) == (split == "holdout"), input_columns=["source_id"])
    keep = [c for c in ds.column_names if c in ("problem", "images", "answer", "task")]
    ds = ds.select_columns(keep)
    if tasks:
        ds = ds.filter(lambda t: t in tasks, input_columns=["task"])
    ds = ds.filter(lambda p: p.count(IMAGE_TOKEN) <= limit_images, input_columns=["problem"])
    if len(ds) == 0:
        raise SSRLError(f"no samples in {dataset_url} for tasks {tasks or 'all'} with <= {limit_images} images")
    ds = ds.map(lambda p: {"prompt": to_prompt(p)}, input_columns=["problem"], remove_columns=["problem"])
    ds = ds.shuffle(seed=seed)
    if max_samples:
        ds = ds.select(range(min(max_samples, len(ds))))
    return ds
