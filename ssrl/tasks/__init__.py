"""The task registry: a name maps to one module; a new pretext task is one module plus one line here.

Tasks are pure (arrays in, sample out); ``draw`` puts their markers and labels on images. May import only
``ssrl.errors`` and ``ssrl.config``.

A task module exposes:

- ``NAME: str`` and ``REQUIRES_DEPTH: bool``
- ``Config``: a dataclass of the task's difficulty knobs, paper values as defaults
- ``generate(scene, rng, cfg) -> Sample``: pure; raises ``RejectError`` when the scene cannot be used
- ``verify(response, sample) -> float | None``: the reward the trainer calls (1.0 right, 0.0 wrong)
- ``answer_from_meta(meta) -> str``: re-derives the answer from the recorded parameters
- ``answer_space_size(meta) -> int``: how many answers are possible (the dataset report tests uniformity)
- optional ``rationale(meta) -> str``: a deterministic reasoning trace that ends by naming the answer, for the
  SFT cold start (``ssrl coldstart``; a task without one is skipped there)

>>> available_tasks()[:3]
['crop', 'depth_order', 'flip']
>>> get_task("shuffle").NAME
'shuffle'
"""

from __future__ import annotations

import importlib
from types import MappingProxyType, ModuleType

__all__ = ["DEFAULT_TASKS", "available_tasks", "get_task", "register_task", "registry"]

_KNOWN: dict[str, str] = {
    "shuffle": "ssrl.tasks.shuffle",
    "flip": "ssrl.tasks.flip",
    "crop": "ssrl.tasks.crop",
    "depth_order": "ssrl.tasks.depth_order",
    "position": "ssrl.tasks.position",
    "rotation": "ssrl.tasks.rotation",
}
#: The paper's five tasks; ``rotation`` is ours and off by default.
DEFAULT_TASKS: tuple[str, ...] = ("shuffle", "flip", "crop", "depth_order", "position")

registry = MappingProxyType(_KNOWN)
_loaded: dict[str, ModuleType] = {}


def available_tasks() -> list[str]:
    return sorted(_KNOWN)


def register_task(name: str, module_path: str, clobber: bool = False) -> None:
    """Add a task by dotted module path (for tasks that live outside this package)."""
    if name in _KNOWN and not clobber:
        raise ValueError(f"task {name!r} is already registered as {_KNOWN[name]!r}; pass clobber=True to replace")
    _KNOWN[name] = module_path
    _loaded.pop(name, None)


def get_task(name: str) -> ModuleType:
    if name not in _KNOWN:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(available_tasks())}")
    if name not in _loaded:
        module = importlib.import_module(_KNOWN[name])
        missing = [a for a in ("NAME", "REQUIRES_DEPTH", "Config", "generate", "verify", "answer_from_meta",
                                                    "answer_space_size")
                   if not hasattr(module, a)]
        if missing:
            raise ImportError(f"task module {_KNOWN[name]} lacks {', '.join(missing)}")
        _loaded[name] = module
    return _loaded[name]
