"""The preview on a real generated dataset: files written, every sample shown, text escaped, bad rows survived."""

from __future__ import annotations

import copy
import html
import itertools
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from ssrl.dataset.generate import GenerateConfig, run
from ssrl.dataset.preview import contact_sheet, question_text, render_html, select_rows, write_preview
from ssrl.dataset.shards import iter_rows, read_manifest
from ssrl.sources.synth import SynthConfig, synthesize

TASKS = ["shuffle", "flip", "crop", "depth_order", "position", "rotation"]
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("preview")
    synthesize(root / "src", 6, seed=0, cfg=SynthConfig(width=336, height=252))
    run(GenerateConfig(inputs=[str(root / "src")], output=str(root / "tasks"), tasks=TASKS))
    return root / "tasks"


@pytest.fixture(scope="module")
def rows(dataset: Path) -> list[dict]:
    return select_rows(iter_rows(str(dataset)), 12)


def test_write_preview_writes_png_and_html(dataset: Path, tmp_path: Path) -> None:
    png, page = write_preview(iter_rows(str(dataset)), tmp_path / "out", n=8, summary=read_manifest(str(dataset)))
    assert (png, page) == (tmp_path / "out" / "preview.png", tmp_path / "out" / "index.html")
    with Image.open(png) as img:
        assert img.format == "PNG" and img.width == 3 * 420
    assert page.read_text(encoding="utf-8").startswith("<!doctype html>")
    assert sorted(p.name for p in png.parent.iterdir()) == ["index.html", "preview.png"]  # no temp files left


def test_contact_sheet_grid_size(rows: list[dict]) -> None:
    sheet = contact_sheet(rows[:7], columns=3, cell_width=300)
    assert sheet.width == 3 * 300
    assert sheet.height % 3 == 0 and sheet.height > 3 * 300  # 3 grid rows of equal height, each at least an image
    assert contact_sheet(rows[:2], columns=3, cell_width=300).width == 2 * 300  # no empty columns


def test_html_shows_every_sample_with_inlined_images(rows: list[dict]) -> None:
    page = render_html(rows, title="t")
    for row in rows:
        assert f"<b>{row['task']}</b>" in page
        assert f"answer: <b>{html.escape(row['answer'])}</b>" in page
        assert html.escape(row["source_id"]) in page
    assert page.count("data:image/") == sum(len(r["images"]) for r in rows)
    assert "You FIRST think" not in page and "[image 1]" in page
    crop = next(r for r in rows if r["task"] == "crop")
    for letter in "ABCD":
        assert f"<figcaption>{letter}</figcaption>" in render_html([crop], title="t")
    assert "<script" not in page and "http" not in page  # self-contained, no scripts or external resources


def test_html_escapes_hostile_text(rows: list[dict]) -> None:
    row = copy.deepcopy(rows[0])
    row["problem"] = f"<image>Which one? {HOSTILE} You FIRST think about the reasoning process"
    row["answer"] = HOSTILE
    row["source_id"] = HOSTILE
    row["meta"] = json.dumps({"x": HOSTILE})
    page = render_html([row], title=HOSTILE)
    assert HOSTILE not in page and "<script" not in page
    assert page.count(html.escape(HOSTILE)) >= 4  # title, question, answer, source id


def test_summary_table_shows_balance(dataset: Path, rows: list[dict]) -> None:
    manifest = read_manifest(str(dataset))
    page = render_html(rows, title="t", summary=manifest)
    table = page[page.index("<table>"): page.index("</table>")]
    assert "p-value" in table and "answer distribution" in table
    for task, st in manifest["tasks"].items():
        assert f">{task}</b>" in table
        total = sum(st["answers"].values())
        for answer, count in st["answers"].items():
            assert f"{html.escape(answer)}: {100 * count / total:.0f}% ({count})" in table
    manifest["tasks"]["crop"]["balance"].update(chi2=14.2, p_value=0.002637)
    assert '<td class="num low">0.00264</td>' in render_html(rows, title="t", summary=manifest)
    assert "<table>" not in render_html(rows, title="t")


def test_select_rows_spreads_across_tasks(dataset: Path) -> None:
    first = select_rows(iter_rows(str(dataset)), 6)
    assert sorted(r["task"] for r in first) == sorted(TASKS)
    assert Counter(r["task"] for r in select_rows(iter_rows(str(dataset)), 12)) == dict.fromkeys(TASKS, 2)
    # tasks in long blocks (one task after another) still all show, in first-seen order
    blocks = [{"task": t, "id": f"{t}{i}"} for t in "abc" for i in range(10)]
    assert [r["id"] for r in select_rows(blocks, 5)] == ["a0", "b0", "c0", "a1", "b1"]
    assert [r["id"] for r in select_rows(blocks, 3, per_task=False)] == ["a0", "a1", "a2"]


def test_select_rows_stops_once_known_tasks_have_their_share() -> None:
    endless = ({"task": t, "id": i} for i, t in enumerate(itertools.cycle("xyz")))
    picked = select_rows(endless, 4, tasks=["x", "y", "z"])
    assert [r["id"] for r in picked] == [0, 1, 2, 3]
    assert next(endless)["id"] < 10  # stopped reading right after the selection settled


def test_output_is_deterministic(dataset: Path, tmp_path: Path) -> None:
    manifest = read_manifest(str(dataset))
    a = write_preview(iter_rows(str(dataset)), tmp_path / "a", n=6, summary=manifest)
    b = write_preview(iter_rows(str(dataset)), tmp_path / "b", n=6, summary=manifest)
    assert a[0].read_bytes() == b[0].read_bytes()
    assert a[1].read_bytes() == b[1].read_bytes()


def test_bad_rows_render_placeholders(rows: list[dict], tmp_path: Path) -> None:
    corrupt = copy.deepcopy(next(r for r in rows if r["task"] == "crop"))
    corrupt["images"][2]["bytes"] = b"\x89PNG\r\n\x1a\n this is not a picture"
    bare = {"task": "mystery", "id": "bare-1", "meta": "{not json"}
    bad = [corrupt, bare, "not even a dict"]
    page = render_html(bad, title="t")  # type: ignore[arg-type]
    assert page.count('class="missing"') == 3  # candidate B, bare row's image, the non-dict row
    assert page.count("data:image/") == 4  # the corrupt row's other images still show
    assert "missing field: answer" in page and "meta is not valid JSON" in page
    assert "B: not a decodable image" in page
    sheet = contact_sheet(bad, columns=3, cell_width=300)  # type: ignore[arg-type]
    assert sheet.size[0] == 900
    png, _ = write_preview(bad, tmp_path, n=3)  # type: ignore[arg-type]
    assert png.stat().st_size > 0


def test_question_text_drops_instruction_and_numbers_images(rows: list[dict]) -> None:
    crop = next(r for r in rows if r["task"] == "crop")
    text = question_text(crop["problem"])
    assert "<image>" not in text and "You FIRST" not in text
    assert [f"[image {k}]" in text for k in range(1, 6)] == [True] * 5
