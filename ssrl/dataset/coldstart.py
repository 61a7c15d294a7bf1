"""``ssrl coldstart``: SFT cold-start data (the paper's stage 1) from a generated dataset.

The paper starts GRPO from a short SFT on ~3.6k samples whose reasoning a VLM wrote with the ground truth in
hand; that generator was never released. Here every sample gets a deterministic reasoning trace from its
``meta`` (each task module's ``rationale``), or, with a teacher, the reasoning a VLM behind an
OpenAI-compatible endpoint (vLLM, say) writes when shown the question, the images, the answer and that
trace. A teacher's answer is kept only when the task's own ``verify`` gives 1.0 and ``format_ok`` accepts
it; otherwise the sample keeps its deterministic trace. Every output row passes both.

Output (a folder or store URL): ``coldstart.json`` in the LLaMA-Factory alpaca layout (``instruction``,
``input``, ``output``, ``images`` relative to the file), which ``ssrl sft --data`` reads as is;
``dataset_info.json`` registering it for LLaMA-Factory; ``images/``; and ``summary.json`` (counts, and
which rows the teacher wrote), written last.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import json
import os
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ssrl.dataset.shards import iter_rows
from ssrl.errors import ConfigError, SSRLError
from ssrl.store import open_store
from ssrl.tasks import available_tasks, get_task
from ssrl.tasks.base import IMAGE_TOKEN, format_ok

#: Environment variables holding the teacher's API key, first set wins (never a flag: flags end up in logs).
KEY_ENV = ("SSRL_TEACHER_API_KEY", "OPENAI_API_KEY")
DATA_FILE = "coldstart.json"
_MIME = {"jpeg": "image/jpeg", "jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
TEACHER_PROMPT = (
    "You are writing a worked solution for a student. The correct answer is {answer}. How the question was"
    " made: {rationale} Explain step by step, from what the images show, why the answer is right, inside"
    " <think> </think>, then give exactly {answer} inside \\boxed{{}} after </think>."
)


@dataclass
class ColdStartConfig:
    """What to turn into cold-start rows; the paper used ~3.6k samples over its five tasks."""

    dataset: str
    output: str
    per_task: int | None = None
    """At most this many rows per task (the first ones in dataset order); None = all."""
    tasks: list[str] | None = None
    teacher_url: str | None = None
    """OpenAI-compatible base URL (``http://host:8000/v1``); None = deterministic traces only."""
    teacher_model: str = "teacher"
    teacher_concurrency: int = 4
    teacher_timeout: float = 120.0
    teacher_retries: int = 3
    teacher_max_tokens: int = 1024

    def __post_init__(self) -> None:
        problems = []
        if self.per_task is not None and self.per_task < 1:
            problems.append(f"per_task must be >= 1, got {self.per_task}")
        unknown = [t for t in self.tasks or [] if t not in available_tasks()]
        if unknown:
            problems.append(f"tasks: unknown {unknown}; known tasks: {', '.join(available_tasks())}")
        if self.teacher_concurrency < 1:
            problems.append(f"teacher_concurrency must be >= 1, got {self.teacher_concurrency}")
        if self.teacher_url is not None and not self.teacher_url.startswith(("http://", "https://")):
            problems.append(f"teacher_url must be an http(s) URL, got {self.teacher_url!r}")
        if problems:
            raise ConfigError(problems)


def respond(reasoning: str, answer: str) -> str:
    r"""The response layout the format reward checks: reasoning in ``<think>``, then the boxed answer.

    >>> respond("b is bigger", "B")
    '<think>b is bigger</think> \\boxed{B}'
    """
    return f"<think>{reasoning}</think> \\boxed{{{answer}}}"


def accepted(response: str, row: dict[str, Any]) -> bool:
    """The contract every output row meets: the format check and the task's own verifier at 1.0."""
    return format_ok(response) and get_task(row["task"]).verify(response, row) == 1.0


def template_response(row: dict[str, Any]) -> str | None:
    """The deterministic trace of a row, or None when its task has no ``rationale``."""
    try:
        module = get_task(row["task"])
    except ValueError:
        raise ConfigError(f"row {row['id']}: task {row['task']!r} is not registered in this process "
                          "(register_task it before ssrl coldstart)") from None
    rationale = getattr(module, "rationale", None)
    if rationale is None:
        return None
    return respond(rationale(json.loads(row["meta"])), row["answer"])


class Teacher:
    """A chat-completions client (stdlib only): question text and images interleaved as the prompt shows them."""

    def __init__(self, cfg: ColdStartConfig, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if env is None else env
        assert cfg.teacher_url is not None
        self.url = cfg.teacher_url.rstrip("/") + "/chat/completions"
        self.cfg = cfg
        self.key = next((env[k] for k in KEY_ENV if env.get(k)), None)

    def messages(self, row: dict[str, Any], reasoning: str) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = []
        parts = row["problem"].split(IMAGE_TOKEN)
        for i, text in enumerate(parts):
            if text.strip():
                content.append({"type": "text", "text": text.strip()})
            if i < len(parts) - 1:
                image = row["images"][i]
                mime = _MIME.get(image["path"].rsplit(".", 1)[-1].lower(), "image/png")
                data = base64.b64encode(image["bytes"]).decode()
                content.append({"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}})
        content.append({"type": "text", "text": TEACHER_PROMPT.format(answer=row["answer"], rationale=reasoning)})
        return [{"role": "user", "content": content}]

    def ask(self, row: dict[str, Any], reasoning: str) -> str:
        """The teacher's text for one row; connection failures and 5xx are retried, then stop the run."""
        body = json.dumps({"model": self.cfg.teacher_model, "messages": self.messages(row, reasoning),
                           "max_tokens": self.cfg.teacher_max_tokens, "temperature": 0.0}).encode()
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        for attempt in range(self.cfg.teacher_retries + 1):
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.cfg.teacher_timeout) as resp:
                    reply = json.loads(resp.read())
                return str(reply["choices"][0]["message"]["content"] or "")
            except urllib.error.HTTPError as e:
                if e.code < 500 or attempt == self.cfg.teacher_retries:
                    raise SSRLError(f"teacher {self.url} answered HTTP {e.code} {e.reason}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                if attempt == self.cfg.teacher_retries:
                    reason = getattr(e, "reason", e)
                    raise SSRLError(f"teacher {self.url} unreachable: {reason}") from None
            except (ValueError, KeyError, IndexError, TypeError):
                raise SSRLError(f"teacher {self.url} did not answer in the chat-completions format") from None
            time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")


def _select(cfg: ColdStartConfig) -> Iterator[dict[str, Any]]:
    taken: Counter[str] = Counter()
    for row in iter_rows(cfg.dataset, tasks=cfg.tasks):
        if cfg.per_task is None or taken[row["task"]] < cfg.per_task:
            taken[row["task"]] += 1
            yield row


#: Rows read, taught and written at a time.
CHUNK = 64


def _chunks(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _teach(teacher: Teacher | None, row: dict[str, Any], template: str | None) -> str | None:
    if teacher is None or template is None:
        return None
    return teacher.ask(row, template.removeprefix("<think>").split("</think>")[0])


def build(cfg: ColdStartConfig, progress: Callable[[int], None] | None = None,
          teacher: Teacher | None = None) -> dict[str, Any]:
    """Write the cold-start set; returns the summary (also written as ``summary.json``, last)."""
    if cfg.teacher_url and teacher is None:
        teacher = Teacher(cfg)
    store = open_store(cfg.output)
    out: list[dict[str, Any]] = []
    origin: dict[str, str] = {}
    counts: dict[str, Counter[str]] = {}
    n = 0
    with cf.ThreadPoolExecutor(max_workers=cfg.teacher_concurrency if teacher else 1) as pool:
        for rows in _chunks(_select(cfg), CHUNK):  # memory holds one chunk's images, whatever the dataset size
            templates = [template_response(r) for r in rows]
            taught = list(pool.map(lambda rt: _teach(teacher, *rt), zip(rows, templates, strict=True)))
            for row, template, answer in zip(rows, templates, taught, strict=True):
                c = counts.setdefault(row["task"], Counter())
                if answer is not None and accepted(answer, row):
                    response, origin[row["id"]] = answer, "teacher"
                    c["teacher"] += 1
                elif template is not None and accepted(template, row):
                    response, origin[row["id"]] = template, "template"
                    c["template"] += 1
                    if answer is not None:
                        c["teacher_rejected"] += 1
                else:
                    c["skipped"] += 1  # no rationale for this task
                    continue
                images = []
                for i, image in enumerate(row["images"]):
                    ext = image["path"].rsplit(".", 1)[-1].lower()
                    key = f"images/{row['task']}/{n:06d}-{i}.{ext if ext in _MIME else 'png'}"
                    store.write_bytes(key, image["bytes"])
                    images.append(key)
                out.append({"instruction": row["problem"], "input": "", "output": response, "images": images})
                n += 1
                if progress:
                    progress(1)
    if not counts:
        raise ConfigError(f"{cfg.dataset} has no rows" + (f" of tasks {', '.join(cfg.tasks)}" if cfg.tasks else ""))
    store.write_bytes(DATA_FILE, json.dumps(out, ensure_ascii=False, indent=1).encode() + b"\n")
    info = {"ssrl_coldstart": {"file_name": DATA_FILE, "formatting": "alpaca",
                               "columns": {"prompt": "instruction", "query": "input", "response": "output",
                                           "images": "images"}}}
    store.write_bytes("dataset_info.json", json.dumps(info, indent=2).encode() + b"\n")
    summary = {"dataset": cfg.dataset, "rows": len(out), "teacher": cfg.teacher_url, "teacher_model":
               cfg.teacher_model if cfg.teacher_url else None,
               "tasks": {t: dict(sorted(c.items())) for t, c in sorted(counts.items())}, "origin": origin}
    store.write_bytes("summary.json", json.dumps(summary, indent=2, sort_keys=True).encode() + b"\n")
    return summary
