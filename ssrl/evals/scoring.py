r"""Answer extraction and accuracy: pure functions over predictions, so ``ssrl eval score`` can re-score.

Multiple choice, in order (the shapes VLMEvalKit's ``can_infer`` matching accepts, plus the R1/Qwen ones):

1. the last ``\boxed{}`` after the reasoning (or inside ``<answer>…</answer>``): ``B``, ``(B)``, ``B. text``,
   ``\text{B}``, ``Option B`` or one option's text;
2. a keyword followed by one letter: ``Answer: B``, ``**Answer:** D``, ``The answer is (C).``,
   ``The correct option is **B**``, ``Final answer: [D]`` (markdown emphasis, brackets and ``$`` ignored);
3. exactly one option letter standing alone among the words (``I pick (A).``, ``B. right of the chair``);
4. exactly one option's text.

Ambiguity is unparsed, never a guess: two letters (``A or B``, ``Answer: B, C``), two options' texts. Letters
are capitals only, and a capital ``A``/``I`` followed by a lowercase word is an article or pronoun ("A cup is
left" names no option). Anything unparsed is counted wrong and listed. Pretext tasks are scored by the task's
own ``verify``, the reward the model was trained on.
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
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_MARKUP = re.compile(r"[*_`$#]+|\\text(?:bf)?\{([^{}]*)\}")
# "answer", "option", "choice" then an optional "is"/"would be"/":" and one letter that no other letter joins.
_KEYWORD = re.compile(
    r"(?i:answer|option|choice)(?i:\s+(?:is|would\s+be|should\s+be|must\s+be))?\s*[:=\-]?\s*"
    r"[(\[{]?\s*([A-J])\b\s*[)\]}]?(?!\s*(?:,|/|&|(?i:or|and)\b)\s*[(\[]?[A-J]\b)"
)
# A capital letter standing alone as a word, and the word after it when only a space separates them.
_LONE = re.compile(r"(?<![\w'\\])([A-J])(?![\w'])(?:\s([a-z]+))?")
_NOT_ARTICLE = {"is", "was", "seems", "appears", "would", "should", "must", "looks", "or", "and", "nor"}
_LATEX_TEXT = re.compile(r"\\text\{([^{}]*)\}")


def _norm(text: str) -> str:
    return re.sub(r"[\s.,;:!?\"'`*]+", " ", _LATEX_TEXT.sub(r"\1", text)).strip().lower()


def _unmark(text: str) -> str:
    """Markdown emphasis, code, headings, ``$`` and ``\text{}`` removed: ``**Answer:** D`` -> ``Answer: D``."""
    return _MARKUP.sub(lambda m: m.group(1) or "", text)


def _letter(candidate: str, options: dict[str, str]) -> str | None:
    """A letter from a short answer string: ``B``, ``(B)``, ``B. text``, ``Option B`` or the option's text."""
    text = _unmark(candidate).strip()
    for pattern in (_LETTER_ONLY, _LETTER_LEAD, _OPTION_WORD):
        m = pattern.match(text)
        if m and m.group(1).upper() in options:
            return m.group(1).upper()
    norm = _norm(text)
    matches = [k for k, v in options.items() if _norm(v) == norm and norm]
    return matches[0] if len(matches) == 1 else None


def _lone_letters(text: str, options: dict[str, str]) -> set[str]:
    """Option letters standing alone as words (VLMEvalKit's ``can_infer_option`` split), without ``A cup`` or
    ``I think``: an ``A``/``I`` followed by a space and a lowercase word other than a verb or conjunction."""
    found = set()
    for m in _LONE.finditer(text):
        letter, after = m.groups()
        if letter in ("A", "I") and after and after not in _NOT_ARTICLE:
            continue
        if letter in options:
            found.add(letter)
    return found


def extract_choice(response: str, options: dict[str, str]) -> str | None:
    r"""The option letter a response chose, or None when it cannot be told.

    >>> opts = {"A": "left", "B": "right", "C": "above"}
    >>> [extract_choice(r, opts) for r in (r"<think>..</think>\boxed{B}", "**Answer:** C", "I pick (A).",
    ...  r"\boxed{A} no wait \boxed{C}", r"\boxed{\text{right}}", "It is above the cup.", "maybe",
    ...  "the answer is a cup", "left or right?", "A or B")]
    ['B', 'C', 'A', 'C', 'B', 'C', None, None, None, None]
    """
    tail = answer_part(response)
    tagged = _ANSWER_TAG.findall(tail)
    if tagged:
        tail = tagged[-1]
    boxed = extract_boxed(tail)
    if boxed is not None:
        return _letter(boxed, options)
    text = _unmark(tail)
    said = [m.group(1) for m in _KEYWORD.finditer(text) if m.group(1) in options]
    if said:
        return said[-1]
    lone = _lone_letters(text, options)
    if len(lone) == 1:
        return lone.pop()
    if lone:
        return None  # several letters: ambiguous, even if an option's text also appears
    whole = _letter(text, options)
    if whole is not None:
        return whole
    # The option's text somewhere in a sentence: only when exactly one option's text appears.
    norm = f" {_norm(text)} "
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
