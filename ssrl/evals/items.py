"""Benchmarks as a stream of ``EvalItem``: VLMEvalKit TSV, plain JSONL, or generated pretext tasks.

Every layout becomes the training prompt shape (images first, the question, then the paper's format
instruction), so a model is judged the way it was trained. Items stream one at a time; ``validate`` reads a
file once up front and reports every problem (missing columns, broken base64, answers that are not an
option) with its row before any model is loaded.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ssrl.errors import SSRLError
from ssrl.tasks.base import IMAGE_TOKEN, LETTERS, question

TSV_REQUIRED = ("index", "question", "answer")
MAX_PROBLEMS = 20


class BenchmarkError(SSRLError):
    """A benchmark file that cannot be evaluated; lists every problem found (up to ``MAX_PROBLEMS``)."""

    def __init__(self, location: str, problems: list[str]):
        shown = problems[:MAX_PROBLEMS]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        super().__init__(f"{location}: " + "".join(f"\n  {p}" for p in shown) + more)
        self.problems = problems


@dataclass
class EvalItem:
    """One question. ``options`` maps letters to texts (empty for pretext tasks, which ``task`` names and
    whose own ``verify`` scores them); ``images`` are encoded image files, decoded at batching time."""

    id: str
    problem: str
    answer: str
    images: list[bytes]
    category: str = ""
    options: dict[str, str] = field(default_factory=dict)
    task: str = ""


def mc_problem(text: str, options: dict[str, str], n_images: int, hint: str = "") -> str:
    """A multiple-choice question in the training prompt shape.

    >>> mc_problem("Which is closer?", {"A": "the car", "B": "the tree"}, 1).split(" You FIRST")[0]
    '<image>Which is closer? Options: A. the car B. the tree. Answer with the option letter.'
    """
    opts = " ".join(f"{k}. {v}" for k, v in options.items())
    body = (f"Hint: {hint.strip()} " if hint.strip() else "") + f"{text.strip()} Options: {opts}. " \
        "Answer with the option letter."
    return placed(body, n_images)


def placed(body: str, n_images: int) -> str:
    """Images first, unless the text places its own ``<image>`` markers (then their count must match)."""
    if IMAGE_TOKEN not in body:
        return question(body, n_images)
    if body.count(IMAGE_TOKEN) != n_images:
        raise ValueError(f"the question has {body.count(IMAGE_TOKEN)} {IMAGE_TOKEN} markers for {n_images} images")
    return question(body, 0)


def benchmark_name(location: str) -> str:
    """A short name for reports: the file stem, or the dataset folder's name.

    >>> benchmark_name("s3://b/evals/CV-Bench.tsv"), benchmark_name("store/tasks/heldout/")
    ('CV-Bench', 'heldout')
    """
    last = location.rstrip("/").rsplit("/", 1)[-1]
    for ext in (".tsv", ".jsonl"):
        if last.endswith(ext):
            return last[: -len(ext)]
    return last


def layout(location: str) -> str:
    """``tsv``, ``jsonl`` or ``tasks`` (a generated dataset folder or store URL)."""
    lower = location.lower().rstrip("/")
    if lower.endswith(".tsv"):
        return "tsv"
    if lower.endswith(".jsonl"):
        return "jsonl"
    return "tasks"


def local_file(location: str, cache: Path) -> Path:
    """Benchmarks in a store are downloaded once (streamed, so memory stays flat)."""
    if "://" not in location or location.startswith("file://"):
        path = Path(location.removeprefix("file://"))
        if not path.is_file():
            raise SSRLError(f"benchmark {location} does not exist")
        return path
    from ssrl.store import open_store

    parent, _, key = location.rstrip("/").rpartition("/")
    dest = cache / "benchmarks" / key
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        open_store(parent).get_file(key, dest)
    return dest


def decode_b64_image(text: str) -> bytes:
    """Base64 (optionally a ``data:`` URL) -> the encoded image; raises ValueError when it is not one."""
    text = text.strip()
    if text.startswith("data:"):
        text = text.split(",", 1)[-1]
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"image is not valid base64 ({e})") from None
    check_image(raw)
    return raw


def check_image(raw: bytes) -> None:
    try:
        with Image.open(io.BytesIO(raw)) as im:
            im.verify()
    except Exception as e:
        raise ValueError(f"image does not decode ({type(e).__name__}: {e})") from None


# ------------------------------------------------------------------------------------------------- TSV
def _tsv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    csv.field_size_limit(sys.maxsize)  # one cell holds a whole base64 image
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [c for c in TSV_REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise BenchmarkError(str(path), [f"missing column(s) {missing}; found {reader.fieldnames}"])
        if "image" not in (reader.fieldnames or []) and "image_path" not in (reader.fieldnames or []):
            raise BenchmarkError(str(path), ["no image column (image: base64, or image_path)"])
        yield from enumerate(reader, start=2)


def _tsv_options(row: dict[str, str]) -> dict[str, str]:
    return {k: row[k].strip() for k in LETTERS if row.get(k) not in (None, "") and row[k].strip().lower() != "nan"}


def _tsv_images(row: dict[str, str], base: Path, images_by_index: dict[str, list[bytes]]) -> list[bytes]:
    value = (row.get("image") or "").strip()
    if not value and row.get("image_path"):
        paths = json.loads(row["image_path"]) if row["image_path"].startswith("[") else [row["image_path"]]
        return [_read_image_path(p, base) for p in paths]
    if value.startswith("["):
        return [decode_b64_image(v) for v in json.loads(value)]
    if len(value) <= 64 and value in images_by_index:  # VLMEvalKit: a short value names another row's image
        return images_by_index[value]
    return [decode_b64_image(value)]


def _read_image_path(p: str, base: Path) -> bytes:
    path = Path(p) if Path(p).is_absolute() else base / p
    raw = path.read_bytes()
    check_image(raw)
    return raw


def _tsv_item(line: int, row: dict[str, str], base: Path, images_by_index: dict[str, list[bytes]]) -> EvalItem:
    options = _tsv_options(row)
    if not options:
        raise ValueError("no options (columns A, B, ... are empty)")
    answer = row["answer"].strip()
    if answer not in options:
        raise ValueError(f"answer {answer!r} is not one of the options {sorted(options)}")
    images = _tsv_images(row, base, images_by_index)
    hint = row.get("hint") or ""
    problem = mc_problem(row["question"], options, len(images), "" if hint.lower() == "nan" else hint)
    return EvalItem(id=row["index"], problem=problem, answer=answer, images=images,
                    category=(row.get("category") or "").strip(), options=options)


def _parse_tsv(path: Path) -> Iterator[tuple[str, EvalItem | Exception]]:
    """(where, item or the problem with that row) for every row; rows whose image others name are kept."""
    referenced = {v for _, r in _tsv_rows(path) if len(v := (r.get("image") or "").strip()) <= 64 and v}
    images_by_index: dict[str, list[bytes]] = {}
    for line, row in _tsv_rows(path):
        where = f"line {line} (index {row.get('index')})"
        try:
            item = _tsv_item(line, row, path.parent, images_by_index)
        except (ValueError, OSError) as e:
            yield where, e
            continue
        if row["index"] in referenced:
            images_by_index[row["index"]] = item.images
        yield where, item


# ------------------------------------------------------------------------------------------------ JSONL
def _jsonl_item(obj: dict, base: Path) -> EvalItem:
    for key in ("question", "answer"):
        if key not in obj:
            raise ValueError(f"missing field {key!r}")
    raw_options = obj.get("options") or {}
    if isinstance(raw_options, list):
        raw_options = {LETTERS[i]: v for i, v in enumerate(raw_options)}
    options = {str(k): str(v) for k, v in raw_options.items()}
    answer = str(obj["answer"]).strip()
    if options and answer not in options:
        raise ValueError(f"answer {answer!r} is not one of the options {sorted(options)}")
    refs = obj.get("images", obj.get("image", []))
    refs = [refs] if isinstance(refs, str) else list(refs)
    images = []
    for ref in refs:
        # A path is short; base64 of even a tiny image is not.
        looks_b64 = ref.startswith("data:") or len(ref) > 1024
        images.append(decode_b64_image(ref) if looks_b64 else _read_image_path(ref, base))
    text = str(obj["question"])
    problem = mc_problem(text, options, len(images), str(obj.get("hint", ""))) if options else \
        placed(text, len(images))
    return EvalItem(id=str(obj.get("id", obj.get("index", ""))), problem=problem, answer=answer, images=images,
                    category=str(obj.get("category", "")), options=options)


def _parse_jsonl(path: Path) -> Iterator[tuple[str, EvalItem | Exception]]:
    """(where, item or the problem with that line) for every non-blank line; ids default to the line number."""
    with path.open(encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
                item = _jsonl_item(obj, path.parent)
            except (ValueError, OSError) as e:
                yield f"line {line}", e
                continue
            item.id = item.id or str(line)
            yield f"line {line}", item


def _parse_file(path: Path, kind: str) -> Iterator[tuple[str, EvalItem | Exception]]:
    return _parse_tsv(path) if kind == "tsv" else _parse_jsonl(path)


# ------------------------------------------------------------------------------------------------ tasks
def iter_tasks(location: str, holdout: float = 0.0) -> Iterator[EvalItem]:
    """Generated pretext tasks. Held out means from images the model never trained on: a dataset generated
    from other images, or (``holdout`` > 0) only the sources ``ssrl train --set holdout=...`` left out."""
    from ssrl.dataset.shards import in_holdout, iter_rows

    for row in iter_rows(location):
        if holdout > 0 and not in_holdout(row["source_id"], holdout):
            continue
        yield EvalItem(id=row["id"], problem=row["problem"], answer=row["answer"],
                       images=[im["bytes"] for im in row["images"]], category=row["task"], task=row["task"])


def iter_items(location: str, cache: Path, limit: int | None = None, holdout: float = 0.0) -> Iterator[EvalItem]:
    """The benchmark's items in file order (the first ``limit`` when given)."""
    kind = layout(location)
    items = iter_tasks(location, holdout) if kind == "tasks" else _items_of(local_file(location, cache), kind)
    for n, item in enumerate(items):
        if limit is not None and n >= limit:
            return
        yield item


def _items_of(path: Path, kind: str) -> Iterator[EvalItem]:
    for where, got in _parse_file(path, kind):
        if isinstance(got, Exception):
            raise BenchmarkError(str(path), [f"{where}: {got}"])
        yield got


def validate(location: str, cache: Path, holdout: float = 0.0) -> int:
    """Read the whole benchmark once; every problem in one error. Returns the number of items."""
    kind = layout(location)
    if kind == "tasks":
        n = sum(1 for _ in iter_tasks(location, holdout))
        if n == 0:
            raise BenchmarkError(location, [f"no held-out samples (holdout={holdout})" if holdout else "no samples"])
        return n
    problems: list[str] = []
    ids: set[str] = set()
    n = 0
    for where, got in _parse_file(local_file(location, cache), kind):
        if isinstance(got, Exception):
            problems.append(f"{where}: {got}")
            continue
        n += 1
        if got.id in ids:
            problems.append(f"{where}: duplicate id {got.id!r}")
        ids.add(got.id)
    if problems:
        raise BenchmarkError(location, problems)
    if n == 0:
        raise BenchmarkError(location, ["no items"])
    return n
