"""Checkpoints in a store: ``<run>/step-<n>/`` committed folders and a ``latest`` pointer.

The pointer moves only after the step's commit record exists, so a crash mid-upload leaves the previous
checkpoint as the latest; half-written steps are never listed, pulled or resumed from. Across nodes each node
uploads its own files and a part record; one commit record then covers every node's part (``commit_parts``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ssrl.errors import StoreError
from ssrl.store import Store
from ssrl.store.models import is_weights_file
from ssrl.store.transfer import COMMIT, commit, entry, pull_tree, read_commit, upload_tree

LATEST = "latest"
PARTS = "_parts"
_STEP = re.compile(r"^step-(\d+)/" + re.escape(COMMIT) + "$")
_RANK_FILE = re.compile(r"(?:^|/)(?:rng_state_(\d+)\.pth|[^/]*zero_pp_rank_(\d+)_[^/]*)$")


def step_prefix(step: int) -> str:
    return f"step-{step}"


def list_steps(run: Store) -> list[int]:
    """Committed steps of a run, ascending."""
    return sorted(int(m.group(1)) for key in run.list() if (m := _STEP.match(key)))


def latest_step(run: Store) -> int | None:
    """The step the ``latest`` pointer names, if that step is committed; else the newest committed step.

    The pointer is read and its step's commit record looked up first, so a run with hundreds of steps is not
    listed.
    """
    if run.exists(LATEST):
        try:
            step = int(json.loads(run.read_bytes(LATEST))["step"])
        except (ValueError, KeyError, TypeError):
            step = None
        if step is not None and run.exists(f"{step_prefix(step)}/{COMMIT}"):
            return step
    steps = list_steps(run)
    return steps[-1] if steps else None


def save_checkpoint(run: Store, step: int, local: str | Path, *, progress: Callable[[int], None] | None = None,
                    **extra: Any) -> dict[str, Any]:
    """Upload a checkpoint folder, commit it, then move ``latest`` to it."""
    files = upload_tree(local, run, step_prefix(step), progress=progress)
    return _commit_step(run, step, files, **extra)


def _commit_step(run: Store, step: int, files: dict[str, dict[str, Any]], **extra: Any) -> dict[str, Any]:
    record = commit(run, step_prefix(step), files, step=step, **extra)
    current = latest_step(run)
    if current is None or step >= current:
        run.write_bytes(LATEST, json.dumps({"step": step}).encode())
    return record


def part_key(step: int, node: int) -> str:
    return f"{step_prefix(step)}/{PARTS}/node-{node}.json"


def save_part(run: Store, step: int, local: str | Path, *, node: int, attempt: str,
              progress: Callable[[int], None] | None = None) -> dict[str, dict[str, Any]]:
    """Upload what one node wrote of a checkpoint (under DeepSpeed each rank writes its own optimizer shard and RNG
    state to its own disk), then the node's part record. A part is not a commit: readers ignore it until
    ``commit_parts`` covers every node's. ``attempt`` tells this run's parts from a killed run's at the same step."""
    files = upload_tree(local, run, step_prefix(step), progress=progress)
    part = {"attempt": attempt, "node": node, "files": {rel: entry(f) for rel, f in files.items()}}
    run.write_bytes(part_key(step, node), json.dumps(part, sort_keys=True).encode())
    return files


def commit_parts(run: Store, step: int, nodes: list[int], attempt: str, *, timeout: float = 1800.0,
                 poll: float = 0.2, **extra: Any) -> dict[str, Any]:
    """Wait for every node's part record of ``attempt``, then write one commit record covering all their files and
    move ``latest``. A node that has not reported within ``timeout`` seconds fails the commit (the previous step
    stays the latest)."""
    files: dict[str, dict[str, Any]] = {}
    pending = sorted(set(nodes))
    deadline = time.monotonic() + timeout
    while pending:
        for node in list(pending):
            key = part_key(step, node)
            if not run.exists(key):
                continue
            part = json.loads(run.read_bytes(key))
            if part.get("attempt") != attempt:
                continue  # a killed run's part at the same step: this run's will replace it
            for rel, f in part["files"].items():
                if files.setdefault(rel, f)["sha256"] != f["sha256"]:
                    raise StoreError(f"{run.object_url(step_prefix(step))}: nodes wrote different {rel}")
            pending.remove(node)
        if pending:
            if time.monotonic() > deadline:
                raise StoreError(f"{run.object_url(step_prefix(step))}: no upload from the nodes of ranks {pending} "
                                 f"after {timeout:.0f} s; step {step} is not committed")
            time.sleep(poll)
    return _commit_step(run, step, files, **extra)


def for_ranks(ranks: Iterable[int]) -> Callable[[str], bool]:
    """Which checkpoint files the processes of ``ranks`` read on resume: everything but other ranks' optimizer
    shards (``zero_pp_rank_<r>_*``) and RNG states (``rng_state_<r>.pth``), so a node pulls its share, not all.

    >>> keep = for_ranks([2, 3])
    >>> [keep(f) for f in ("model.safetensors", "rng_state_2.pth", "rng_state_1.pth",
    ...                    "global_step4/zero_pp_rank_3_mp_rank_00_optim_states.pt", "global_step4/zero_pp_rank_0_x")]
    [True, True, False, True, False]
    """
    wanted = set(ranks)

    def keep(rel: str) -> bool:
        m = _RANK_FILE.search(rel)
        return m is None or int(m.group(1) or m.group(2)) in wanted

    return keep


def pull_checkpoint(run: Store, dest: str | Path, step: int | None = None, *,
                    progress: Callable[[int], None] | None = None, weights_only: bool = False,
                    ranks: Iterable[int] | None = None) -> int:
    """Download a committed step (default: latest) into ``dest``; returns the step. Files already there and verified
    are not downloaded again.

    ``weights_only``: the model alone (safetensors, config, processor, tokenizer, chat template), without the
    optimizer, scheduler and RNG states that only resuming needs (``is_weights_file``). ``ranks``: only what these
    ranks resume from (``for_ranks``), e.g. one node's processes.
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
    rank_files = for_ranks(ranks) if ranks is not None else None
    select = [f for f in (is_weights_file if weights_only else None, rank_files) if f is not None]
    pull_tree(run, step_prefix(chosen), dest, progress=progress, record=record,
              select=(lambda rel: all(f(rel) for f in select)) if select else None)
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
