"""Rewards in TRL's plain shape: ``reward(completions, **columns) -> list[float | None]``.

Accuracy calls the task's own ``verify`` (the same function the tests check samples with); the format
reward is the paper's ``<think>...</think>`` then ``\\boxed{...}``. The paper weights them 0.9 / 0.1.
Rewards are classes with ``__name__``, not closures, so rollout workers can pickle them.
"""

from __future__ import annotations

from typing import Any

from ssrl.tasks import get_task
from ssrl.tasks.base import format_ok

__all__ = ["REWARDS", "AccuracyReward", "FormatReward", "completion_text", "get_reward"]


def completion_text(completion: Any) -> str:
    """A completion as text, whether TRL passes a string or a list of chat messages.

    >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "hi"}]}])
    'hi'
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    parts = []
    for message in completion:
        content = message.get("content", "") if isinstance(message, dict) else message
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type", "text") == "text"]
    return "".join(parts)


class FormatReward:
    r"""1.0 when the completion is ``<think>...</think>`` followed by a ``\boxed{...}`` answer, else 0.0.

    >>> FormatReward()([r"<think>a</think> \boxed{B}", r"\boxed{B}", ""])
    [1.0, 0.0, 0.0]
    """

    __name__ = "format"

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float | None]:
        return [1.0 if format_ok(completion_text(c)) else 0.0 for c in completions]


class AccuracyReward:
    r"""The task's ``verify``: 1.0 when the last box after the reasoning is exactly the answer; None when a
    row has no answer (TRL then skips it for this reward).

    >>> AccuracyReward()([r"<think>.</think>\boxed{2, 0, 1}", r"\boxed{A}", r"<think>\boxed{B}</think>"],
    ...                  answer=["2, 0, 1", "B", "B"], task=["depth_order", "crop", "crop"])
    [1.0, 0.0, 0.0]
    """

    __name__ = "accuracy"

    def __init__(self, on_score: Any = None):
        self.on_score = on_score  # e.g. per-task accuracy bookkeeping in the trainer

    def __call__(self, completions: list[Any], answer: list[str | None] | None = None,
                 task: list[str] | None = None, **kwargs: Any) -> list[float | None]:
        if answer is None:
            return [None] * len(completions)
        tasks = task or ["shuffle"] * len(completions)  # every task verifies by exact match of the box
        scores = [get_task(t).verify(completion_text(c), {"answer": a}) for c, a, t in
                  zip(completions, answer, tasks, strict=True)]
        if self.on_score is not None:
            for t, s in zip(tasks, scores, strict=True):
                if s is not None:
                    self.on_score(t, s)
        return scores


REWARDS = {"format": FormatReward, "accuracy": AccuracyReward}


def get_reward(name: str) -> Any:
    """A reward by registry name, or a dotted path ``package.module.Class`` for experiments."""
    if name in REWARDS:
        return REWARDS[name]()
    if "." in name:
        import importlib

        module, _, attr = name.rpartition(".")
        obj = getattr(importlib.import_module(module), attr)
        return obj() if isinstance(obj, type) else obj
    raise ValueError(f"unknown reward {name!r}; known rewards: {', '.join(sorted(REWARDS))} (or a dotted path)")
