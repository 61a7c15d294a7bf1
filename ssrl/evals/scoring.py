r"""Answer extraction and accuracy: pure functions over predictions, so ``ssrl eval score`` can re-score.

Multiple choice: the last ``\boxed{}`` after the reasoning wins; without one, the last ``Answer: B`` /
``answer is (B)`` / ``(B)`` / ``B.`` style mention; the option's text instead of its letter counts when it
names exactly one option. Anything else is unparsed: counted wrong and listed. Pretext tasks are scored by
the task's own ``verify``, the reward the model was trained on.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from ssrl.tasks import get_task
from ssrl.tasks.base import answer_part, extract_boxed

_LETTER_ONLY = re.compile(r"^\(?\s*([A-J])\s*\)?[.:)]?$")
_LETTER_LEAD = re.compile(r"^\(?([A-J])[.):]\s+\S")
_OPTION_WORD = re.compile(r"^(?i:option|choice)\s*\(?([A-J])\)?\.?$")
# Letters are capitals only: "the answer is a cat" names no option.
_MENTIONS = re.compile(
    r"(?i:answer|option|choice)\s*(?i:is)?\s*[:=]?\s*\(?\s*([A-J])\b\)?|\(([A-J])\)|^\s*([A-J])[.)]\s|^\s*([A-J])\s*$",
    re.MULTILINE,
)
_LATEX_TEXT = re.compile(r"\\text\{([^{}]*)\}")


def _norm(text: str) -> str:
    return re.sub(r"[\s.,;:!?\"'`*]+", " ", _LATEX_TEXT.sub(r"\1", text)).strip().lower()


def _letter(candidate: str, options: dict[str, str]) -> str | None:
    """A letter from a short answer string: ``B``, ``(B)``, ``B. text``, ``Option B`` or the option's text."""
    text = _LATEX_TEXT.sub(r"\1", candidate).strip().strip("*").strip()
    for pattern in (_LETTER_ONLY, _LETTER_LEAD, _OPTION_WORD):
        m = pattern.match(text)
        if m and m.group(1).upper() in options:
            return m.group(1).upper()
    norm = _norm(text)
    matches = [k for k, v in options.items() if _norm(v) == norm and norm]
    return matches[0] if len(matches) == 1 else None


def extract_choice(response: str, options: dict[str, str]) -> str | None:
    r"""The option letter a response chose, or None when it cannot be told.

    >>> opts = {"A": "left", "B": "right", "C": "above"}
    >>> [extract_choice(r, opts) for r in (r"<think>..</think>\boxed{B}", "Answer: C", "I pick (A).",
    ...  r"\boxed{A} no wait \boxed{C}", r"\boxed{\text{right}}", "It is above the cup.", "maybe",
    ...  "the answer is a cup", "left or right?")]
    ['B', 'C', 'A', 'C', 'B', 'C', None, None, None]
    """
    tail = answer_part(response)
    boxed = extract_boxed(tail)
    if boxed is not None:
        return _letter(boxed, options)
    mentions = [next(g for g in m.groups() if g).upper() for m in _MENTIONS.finditer(tail)]
    mentions = [m for m in mentions if m in options]
    if mentions:
        return mentions[-1]
    whole = _letter(tail, options)
    if whole is not None:
        return whole
    # The option's text somewhere in a sentence: only when exactly one option's text appears.
    norm = f" {_norm(tail)} "
    found = [k for k, v in options.items() if _norm(v) and f" {_norm(v)} " in norm]
    return found[0] if len(found) == 1 else None


def score_prediction(pred: dict[str, Any]) -> dict[str, Any]:
    """Fill ``prediction`` and ``correct`` of a saved prediction from its ``response`` (idempotent)."""
    response = pred.get("response") or ""
    if pred.get("options"):
        choice = extract_choice(response, pred["options"])
        pred["prediction"] = choice
        pred["correct"] = choice is not None and choice == pred["answer"]
    else:
        pred["prediction"] = extract_boxed(answer_part(response))
        verify = get_task(pred["task"]).verify if pred.get("task") else None
        score = verify(response, {"answer": pred["answer"]}) if verify else float(pred["prediction"] == pred["answer"])
        pred["correct"] = bool(score)
    return pred


def summarize(preds: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy overall and per category, plus which items could not be parsed.

    >>> summarize([{"id": "1", "category": "a", "correct": True, "prediction": "A"},
    ...            {"id": "2", "category": "b", "correct": False, "prediction": None}])["per_category"]
    {'a': {'n': 1, 'correct': 1, 'accuracy': 1.0}, 'b': {'n': 1, 'correct': 0, 'accuracy': 0.0}}
    """
    by_cat: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for p in preds:
        cell = by_cat[p.get("category") or "all"]
        cell[0] += 1
        cell[1] += int(bool(p["correct"]))
    n = len(preds)
    correct = sum(int(bool(p["correct"])) for p in preds)
    return {
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else 0.0,
        "per_category": {c: {"n": v[0], "correct": v[1], "accuracy": v[1] / v[0]} for c, v in sorted(by_cat.items())},
        "unparsed": [p["id"] for p in preds if p.get("prediction") is None],
    }
