"""Checkpoints in a store: ``<run>/step-<n>/`` committed folders and a ``latest`` pointer.

The pointer moves only after the step's commit record exists, so a crash mid-upload leaves the previous
checkpoint as the latest; half-written steps are never listed, pulled or resumed from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ssrl.errors import StoreError
from ssrl.store import Store
from ssrl.store.models import is_weights_file
from ssrl.store.transfer import COMMIT, commit, pull_tree, read_commit, upload_tree

LATEST = "latest"
_STEP = re.compile(r"^step-(\d+)/" + re.escape(COMMIT) + "$")


def step_prefix(step: int) -> str:
    return f"step-{step}"


def list_steps(run: Store) -> list[int]:
    """Committed steps of a run, ascending."""
    return sorted(int(m.group(1)) for key in run.list() if (m := _STEP.match(key)))


def latest_step(run: Store) -> int | None:
    """The step the ``latest`` pointer names, if that step is committed; else the newest committed step.

    The pointer and one commit record are read first, so a run with hundreds of steps is not listed.
    """
    if run.exists(LATEST):
        try:
            step = int(json.loads(run.read_bytes(LATEST))["step"])
        except (ValueError, KeyError, TypeError):
            step = None
        if step is not None and read_commit(run, step_prefix(step)) is not None:
            return step
    steps = list_steps(run)
    return steps[-1] if steps else None


def save_checkpoint(run: Store, step: int, local: str | Path, *, progress: Callable[[int], None] | None = None,
                    **extra: Any) -> dict[str, Any]:
    """Upload a checkpoint folder, commit it, then move ``latest`` to it."""
    prefix = step_prefix(step)
    files = upload_tree(local, run, prefix, progress=progress)
    record = commit(run, prefix, files, step=step, **extra)
    current = latest_step(run)
    if current is None or step >= current:
        run.write_bytes(LATEST, json.dumps({"step": step}).encode())
    return record


def pull_checkpoint(run: Store, dest: str | Path, step: int | None = None, *,
                    progress: Callable[[int], None] | None = None, weights_only: bool = False) -> int:
    """Download a committed step (default: latest) into ``dest``; returns the step.

    ``weights_only``: the model alone (safetensors, config, processor, tokenizer, chat template), without the
    optimizer, scheduler and RNG states that only resuming needs (``is_weights_file``).
    """
    chosen = latest_step(run) if step is None else step
    if chosen is None:
        raise StoreError(f"{run.url} has no committed checkpoint")
    record = read_commit(run, step_prefix(chosen))
    if record is None:
        raise StoreError(f"{run.object_url(step_prefix(chosen))} is not a committed checkpoint "
                         f"(committed: {list_steps(run) or 'none'})")
    if weights_only:
        kept = [f for f in record["files"] if is_weights_file(f)]
        if not {"config.json", "adapter_config.json"} & set(kept) or not any(f.endswith(".safetensors") for f in kept):
            raise StoreError(f"{run.object_url(step_prefix(chosen))} has no config + safetensors weights at its top "
                             "level (a ZeRO-3 run saves them only with stage3_gather_16bit_weights_on_model_save)")
    pull_tree(run, step_prefix(chosen), dest, progress=progress, select=is_weights_file if weights_only else None)
    return chosen


def prune_checkpoints(run: Store, keep: int) -> list[int]:
    """Delete all but the newest ``keep`` committed steps; the commit record goes first, so a step vanishes
    atomically for readers. Returns the deleted steps."""
    steps = list_steps(run)
    latest = latest_step(run)
    doomed = [s for s in steps[: max(0, len(steps) - keep)] if s != latest]
    for step in doomed:
        prefix = step_prefix(step)
        run.delete(f"{prefix}/{COMMIT}")
        for key in run.list(prefix):
            run.delete(key)
    return doomed
