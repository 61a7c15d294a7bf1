"""Who does what when a run spans processes and nodes (torchrun's environment): one process per node moves
files, the others wait at a barrier, then every process reads what that one left on the node's disk.

Every function is a no-op between single processes, so the same recipe runs under ``python`` and ``torchrun``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def node_ranks() -> list[int]:
    """Global ranks of this node's processes (torchrun numbers a node's workers consecutively)."""
    first = rank() - local_rank()
    return list(range(first, first + int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def _group() -> Any:
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    return dist if dist.is_available() and dist.is_initialized() else None


def barrier() -> None:
    if (dist := _group()) is not None:
        dist.barrier()


def all_gather(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order (just ``[obj]`` in one process)."""
    if (dist := _group()) is None:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def once_per_node(fetch: Callable[[], T]) -> T:
    """``fetch`` on the node's local rank 0 first, then, after a barrier, on the other local ranks, which find its
    files present and verified (``fetch`` must skip those) instead of racing on the same paths. A failure on local
    rank 0 still reaches the barrier, so the other ranks fail on their own attempt rather than hang."""
    if local_rank() != 0:
        barrier()
        return fetch()
    try:
        return fetch()
    finally:
        barrier()
