"""``ssrl coldstart`` (issue 14 §4): every row it writes is one the rewards accept, with or without a teacher."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from ssrl.dataset.coldstart import ColdStartConfig, Teacher, build, template_response
from ssrl.dataset.generate import GenerateConfig, run
from ssrl.dataset.shards import iter_rows
from ssrl.errors import ConfigError, SSRLError
from ssrl.recipes.sft import read_conversations
from ssrl.sources.synth import SynthConfig, synthesize
from ssrl.tasks import _KNOWN, _loaded, get_task, register_task
from ssrl.tasks.base import IMAGE_TOKEN, format_ok
from tests.servers import JSONHandler
from tests.test_cli import ssrl

TASKS = ["shuffle", "flip", "crop", "depth_order", "position", "rotation"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coldstart")
    synthesize(root / "src", 6, seed=11, cfg=SynthConfig(width=224, height=168))
    run(GenerateConfig(inputs=[str(root / "src")], output=str(root / "ds"), tasks=TASKS, samples_per_task=2,
                       min_pixels=3136, max_pixels=50176))
    return root / "ds"


def test_every_built_in_task_has_a_rationale() -> None:
    assert all(callable(getattr(get_task(t), "rationale", None)) for t in TASKS)  # optional for plug-in tasks


def test_contract_every_row_passes_format_and_verify(dataset: Path, tmp_path: Path) -> None:
    """Deterministic traces for every row of every task: format_ok, the task's verify at 1.0, the response ends
    in exactly the boxed answer, images written beside the file, and ``ssrl sft`` reads the rows."""
    source = list(iter_rows(str(dataset)))
    assert {r["task"] for r in source} == set(TASKS)
    summary = build(ColdStartConfig(dataset=str(dataset), output=str(tmp_path / "cs")))
    rows = json.loads((tmp_path / "cs" / "coldstart.json").read_text())
    assert len(rows) == len(source) == summary["rows"] and set(summary["origin"].values()) == {"template"}
    for src, row in zip(source, rows, strict=True):
        assert set(row) == {"instruction", "input", "output", "images"}
        assert row["instruction"] == src["problem"] and row["instruction"].count(IMAGE_TOKEN) == len(row["images"])
        assert format_ok(row["output"]) and get_task(src["task"]).verify(row["output"], src) == 1.0
        assert row["output"].endswith(f"\\boxed{{{src['answer']}}}")
        assert [(tmp_path / "cs" / p).read_bytes() for p in row["images"]] == [im["bytes"] for im in src["images"]]
    info = json.loads((tmp_path / "cs" / "dataset_info.json").read_text())
    assert info["ssrl_coldstart"]["columns"]["images"] == "images"
    sft_rows = read_conversations(tmp_path / "cs" / "coldstart.json")
    assert len(sft_rows) == len(rows) and all(Path(p).is_file() for r in sft_rows for p in r["images"])
    # deterministic: the same dataset gives the same bytes
    build(ColdStartConfig(dataset=str(dataset), output=str(tmp_path / "again")))
    assert (tmp_path / "again" / "coldstart.json").read_bytes() == (tmp_path / "cs" / "coldstart.json").read_bytes()
    # selection
    small = build(ColdStartConfig(dataset=str(dataset), output=str(tmp_path / "small"), per_task=1,
                                  tasks=["crop", "position"]))
    assert small["rows"] == 2 and set(small["tasks"]) == {"crop", "position"}


def test_tasks_without_a_rationale_are_skipped_and_counted(tmp_path: Path) -> None:
    """A plug-in task may have no rationale: its rows are left out and counted, the others still written; a
    task this process does not know is a one-line config error."""
    synthesize(tmp_path / "src", 2, seed=3, cfg=SynthConfig(width=224, height=168))
    register_task("shuffle3x3", "tests.tasks.extra_task", clobber=True)
    try:
        run(GenerateConfig(inputs=[str(tmp_path / "src")], output=str(tmp_path / "ds"),
                           tasks=["shuffle3x3", "flip"], min_pixels=3136, max_pixels=50176))
        summary = build(ColdStartConfig(dataset=str(tmp_path / "ds"), output=str(tmp_path / "cs")))
        assert summary["tasks"] == {"flip": {"template": 2}, "shuffle3x3": {"skipped": 2}}
        assert summary["rows"] == 2
    finally:  # the registry is process-wide: leave it as other tests expect it
        _KNOWN.pop("shuffle3x3")
        _loaded.pop("shuffle3x3", None)
    with pytest.raises(ConfigError, match="task 'shuffle3x3' is not registered in this process"):
        build(ColdStartConfig(dataset=str(tmp_path / "ds"), output=str(tmp_path / "cs2")))


KINDS = ("right", "wrong_answer", "no_think", "box_in_think")


def _kind(content: list[dict]) -> str:
    """The fake teacher's behaviour for a request, a pure function of its text (so the test can predict it)."""
    text = "\n".join(p["text"] for p in content if p["type"] == "text")
    return KINDS[hashlib.sha256(text.encode()).digest()[0] % len(KINDS)]


def _reply(kind: str, answer: str) -> str:
    return {"right": f"<think>teacher: the clues point to {answer}</think> \\boxed{{{answer}}}",
            "wrong_answer": "<think>teacher: a guess</think> \\boxed{Z}",
            "no_think": f"The answer is \\boxed{{{answer}}}",
            "box_in_think": f"<think>so \\boxed{{{answer}}}</think> done"}[kind]


class FakeTeacher(JSONHandler):
    """A chat-completions endpoint: right, wrong, unformatted and box-inside-think answers, plus one 503."""

    seen: ClassVar[list[dict]] = []
    fail_next = 1

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/v1/chat/completions":
            self.send_error(404)
            return
        if FakeTeacher.fail_next:
            FakeTeacher.fail_next -= 1
            self.send_error(503)
            return
        content = body["messages"][0]["content"]
        answer = content[-1]["text"].split("The correct answer is ", 1)[1].split(". How the question", 1)[0]
        FakeTeacher.seen.append({"auth": self.headers.get("Authorization"), "model": body["model"],
                                 "images": sum(p["type"] == "image_url" for p in content)})
        self._answer({"choices": [{"message": {"role": "assistant", "content": _reply(_kind(content), answer)}}]})


@pytest.fixture
def teacher_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeTeacher)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeTeacher.seen, FakeTeacher.fail_next = [], 1
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_teacher_answers_are_kept_only_when_verify_and_format_accept_them(dataset: Path, tmp_path: Path,
                                                                           teacher_url: str) -> None:
    """Through the CLI: the key comes from the environment (never a flag, never written out), a 503 is retried,
    right answers keep the teacher's text, wrong / unformatted / box-inside-think ones fall back to the trace."""
    source = list(iter_rows(str(dataset)))
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-secret"}
    r = subprocess.run([sys.executable, "-m", "ssrl", "coldstart", str(dataset), "-o", str(tmp_path / "cs"),
                        "--teacher-url", teacher_url, "--teacher-model", "vlm-7b"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(FakeTeacher.seen) == len(source)
    assert {s["auth"] for s in FakeTeacher.seen} == {"Bearer sk-test-secret"}
    assert {s["model"] for s in FakeTeacher.seen} == {"vlm-7b"}
    assert sorted(s["images"] for s in FakeTeacher.seen) == sorted(len(s["images"]) for s in source)
    rows = json.loads((tmp_path / "cs" / "coldstart.json").read_text())
    summary = json.loads((tmp_path / "cs" / "summary.json").read_text())
    cfg = ColdStartConfig(dataset=str(dataset), output="unused", teacher_url=teacher_url)
    kinds = []
    for src, row in zip(source, rows, strict=True):
        template = template_response(src)
        kind = _kind(Teacher(cfg).messages(src, template.removeprefix("<think>").split("</think>")[0])[0]["content"])
        kinds.append(kind)
        expected = _reply(kind, src["answer"]) if kind == "right" else template
        assert row["output"] == expected, (kind, row["output"])
        assert summary["origin"][src["id"]] == ("teacher" if kind == "right" else "template")
        assert format_ok(row["output"]) and get_task(src["task"]).verify(row["output"], src) == 1.0
    assert set(kinds) == set(KINDS)  # every kind of answer was tried and judged
    assert sum(c.get("teacher", 0) for c in summary["tasks"].values()) == kinds.count("right")
    assert sum(c.get("teacher_rejected", 0) for c in summary["tasks"].values()) == len(kinds) - kinds.count("right")
    for f in (tmp_path / "cs").rglob("*.json"):
        assert "sk-test-secret" not in f.read_text()


def test_an_unreachable_or_refusing_teacher_is_one_line(dataset: Path, tmp_path: Path, teacher_url: str) -> None:
    r = ssrl("coldstart", str(dataset), "-o", str(tmp_path / "cs"), "--teacher-url", "http://127.0.0.1:9/v1",
             "--set", "teacher_retries=0", "--per-task", "1")
    assert r.returncode == 1 and "teacher http://127.0.0.1:9/v1/chat/completions unreachable" in r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip().splitlines()[-1].startswith("error: teacher")
    assert not (tmp_path / "cs" / "coldstart.json").exists()
    r = ssrl("coldstart", str(dataset), "-o", str(tmp_path / "cs"), "--tasks", "crop,nope")
    assert r.returncode == 2 and "tasks: unknown ['nope']" in r.stderr and "Traceback" not in r.stderr
    FakeTeacher.fail_next = 0
    with pytest.raises(SSRLError, match=r"chat/completions answered HTTP 404"):  # 4xx: not retried
        build(ColdStartConfig(dataset=str(dataset), output=str(tmp_path / "cs"), per_task=1,
                              teacher_url=teacher_url.replace("/v1", "/v2")))
    assert not (tmp_path / "cs" / "coldstart.json").exists()
