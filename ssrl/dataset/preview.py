"""Look at the tasks before training: a contact-sheet PNG and a self-contained HTML page of a few samples.

Both views are built from dataset rows (``ssrl.dataset.shards.iter_rows``): the question without the fixed format
instruction, its images (crop candidates labelled A-D), the answer, and in HTML the meta JSON and the
dataset's answer-balance table. A bad row (missing field, undecodable image) becomes a placeholder with a
note instead of an exception: a preview is how people find such rows, so it must not die on them.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import tempfile
import zlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from ssrl.errors import RejectError
from ssrl.sources.imageio import decode_image
from ssrl.tasks.base import FORMAT_INSTRUCTION, IMAGE_TOKEN, LETTERS

__all__ = ["contact_sheet", "question_text", "render_html", "select_rows", "write_preview"]

#: Images are kept at most this wide: enough for the page and the sheet, small as inlined JPEG.
MAX_WIDTH = 640
#: Taller images are shrunk to this height (a 1:10 strip would otherwise fill a whole page).
MAX_HEIGHT = 800
JPEG_QUALITY = 85
#: Decoding limit for previews: rows come from our own generator, anything bigger is a broken row.
MAX_DECODE_PIXELS = 50_000_000
#: The instruction appended to every question starts here; the views drop it since it never changes.
_INSTRUCTION_START = FORMAT_INSTRUCTION[:40]
_OPTION_IMAGE = re.compile(r"(?:^|\s)([A-J])[.)]\s*$")
_REQUIRED = ("id", "task", "problem", "answer", "images")

_TASK_COLOURS = {
    "shuffle": "#1f6feb",
    "flip": "#8250df",
    "crop": "#bf3989",
    "depth_order": "#1a7f37",
    "position": "#bc4c00",
    "rotation": "#0e7490",
}
_SPARE_COLOURS = ("#6e40c9", "#9a6700", "#cf222e", "#116329", "#0550ae", "#953800", "#57606a")

# contact-sheet geometry (pixels)
_OUTER = 6  # between a card and its grid cell
_PAD = 10  # between a card's border and its content
_HEADER_H = 30
_GAP = 8
_QUESTION_LINES = 8
_ANSWER_LINES = 2
_NOTE_LINES = 3
_INK = (31, 35, 40)
_MUTED = (87, 96, 106)
_BORDER = (208, 215, 222)
_ANSWER_BG = (255, 243, 191)
_ANSWER_INK = (77, 45, 0)
_WARN = (207, 34, 46)
_PLACEHOLDER_BG = (246, 248, 250)


# ------------------------------------------------------------------------------------------ selection
def _task_of(row: Any) -> str:
    if not isinstance(row, dict):
        return "(bad row)"
    task = row.get("task")
    return str(task) if task else "(no task)"


def _quotas(counts: list[int], n: int) -> list[int]:
    """How many rows each task gets when rows are dealt round-robin (tasks in first-seen order) up to ``n``.

    >>> _quotas([5, 1, 5], 7)
    [3, 1, 3]
    >>> _quotas([5, 5, 5], 4)
    [2, 1, 1]
    """
    quotas = [0] * len(counts)
    left = min(n, sum(counts))
    while left > 0:
        for i, c in enumerate(counts):
            if left and quotas[i] < c:
                quotas[i] += 1
                left -= 1
    return quotas


def select_rows(rows: Iterable[dict], n: int, per_task: bool = True, *,
                tasks: Collection[str] | None = None) -> list[dict]:
    """Up to ``n`` rows, dealt round-robin across tasks in first-seen order, so that every task shows.

    Streams: only rows that are still in the selection are held (a task's quota can only shrink as other
    tasks appear, so a dropped row is never needed again). Without ``tasks`` every row is read, since a
    new task may appear last; with ``tasks`` (the names the dataset holds, e.g. from its manifest)
    reading stops once each of them has its full share. ``per_task=False`` takes the first ``n`` rows.

    >>> rows = [{"task": t, "id": i} for i, t in enumerate("aaaabbc")]
    >>> [r["id"] for r in select_rows(rows, 5)]
    [0, 4, 6, 1, 5]
    """
    if n <= 0:
        return []
    if not per_task:
        out = []
        for row in rows:
            out.append(row)
            if len(out) >= n:
                break
        return out
    buckets: dict[str, list[dict]] = {}
    counts: dict[str, int] = {}
    expected = set(tasks) if tasks else None
    for row in rows:
        task = _task_of(row)
        if counts.get(task, 0) > len(buckets.get(task, ())):
            continue  # this task is already cut to its quota: later rows of it can change nothing
        buckets.setdefault(task, []).append(row)
        counts[task] = counts.get(task, 0) + 1
        for name, quota in zip(buckets, _quotas(list(counts.values()), n), strict=True):
            del buckets[name][quota:]
        if expected is not None and expected <= counts.keys() and _settled(list(counts.values()), n):
            break
    return _deal(list(buckets.values()))


def _settled(counts: list[int], n: int) -> bool:
    """True when more rows of the tasks seen could not change the selection (each has its fair share)."""
    fair = _quotas([n] * len(counts), n)
    return all(c >= f for c, f in zip(counts, fair, strict=True))


def _deal(buckets: list[list[dict]]) -> list[dict]:
    rounds = max((len(b) for b in buckets), default=0)
    return [b[r] for r in range(rounds) for b in buckets if r < len(b)]


# ------------------------------------------------------------------------------------------ row -> card
@dataclass
class _Picture:
    label: str
    image: Image.Image | None
    note: str = ""


@dataclass
class _Card:
    """One row, validated and decoded once, ready for both views."""

    task: str
    sample_id: str
    source_id: str
    question: str
    answer: str | None
    meta: str
    pictures: list[_Picture] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def question_text(problem: str) -> str:
    """The question without the fixed format instruction, each ``<image>`` shown as ``[image k]``.

    >>> question_text("<image>Which? A. <image> B. <image> " + FORMAT_INSTRUCTION)
    '[image 1] Which? A. [image 2] B. [image 3]'
    """
    cut = problem.find(_INSTRUCTION_START)
    text = (problem if cut < 0 else problem[:cut]).rstrip()
    parts = text.split(IMAGE_TOKEN)
    out = parts[0]
    for k, part in enumerate(parts[1:], start=1):
        out += f"[image {k}]" + (" " if part[:1].isalnum() else "") + part
    return out


def _image_labels(problem: str, count: int) -> list[str]:
    """Label each image as the question does: "A" for "A. <image>" (crop candidates), else "[image k]"."""
    before = problem.split(IMAGE_TOKEN)
    labels = []
    for k in range(count):
        m = _OPTION_IMAGE.search(before[k]) if k < len(before) - 1 else None
        labels.append(m.group(1) if m else f"[image {k + 1}]")
    return labels


def _decode(entry: Any) -> tuple[Image.Image | None, str]:
    """A downscaled RGB picture of one ``images`` entry, or None and why not."""
    data = entry.get("bytes") if isinstance(entry, dict) else None
    if not isinstance(data, bytes | bytearray) or not data:
        return None, "no image bytes"
    try:
        rgb = decode_image(bytes(data), max_decode_pixels=MAX_DECODE_PIXELS)
    except RejectError as e:
        return None, str(e)
    img = Image.fromarray(rgb)
    scale = min(1.0, MAX_WIDTH / img.width, MAX_HEIGHT / img.height)
    if scale < 1.0:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.LANCZOS)
    return img, ""


def _text(row: dict, key: str) -> str:
    value = row.get(key)
    return "" if value is None else str(value)


def _meta_text(raw: Any) -> tuple[str, str]:
    """Meta JSON with one top-level key a line (short to read, values compact), or the raw text and a note."""
    if raw is None or raw == "":
        return "", ""
    try:
        meta = json.loads(raw)
    except (TypeError, ValueError):
        return str(raw), "meta is not valid JSON"
    if not isinstance(meta, dict):
        return _json(meta), ""
    lines = (f"{_json(k)}: {_json(v)}" for k, v in sorted(meta.items()))
    return "\n".join(lines), ""


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _card(row: Any) -> _Card:
    if not isinstance(row, dict):
        return _Card("(bad row)", "", "", "", None, "", [_Picture("[image 1]", None, "not a row")],
                     [f"row is a {type(row).__name__}, not a dict"])
    notes = [f"missing field: {k}" for k in _REQUIRED if row.get(k) is None]
    problem = _text(row, "problem")
    entries = row.get("images")
    if entries is not None and not isinstance(entries, list):
        notes.append("images is not a list")
    entries = entries if isinstance(entries, list) else []
    pictures = []
    for label, entry in zip(_image_labels(problem, len(entries)), entries, strict=True):
        img, why = _decode(entry)
        pictures.append(_Picture(label, img, why))
        if why:
            notes.append(f"{label}: {why}")
    if not pictures:
        pictures.append(_Picture("[image 1]", None, "no image"))
    placeholders = problem.count(IMAGE_TOKEN)
    if problem and placeholders != len(entries):
        notes.append(f"question has {placeholders} {IMAGE_TOKEN} but the row has {len(entries)} images")
    meta, meta_note = _meta_text(row.get("meta"))
    notes += [meta_note] if meta_note else []
    answer = row.get("answer")
    return _Card(_task_of(row), _text(row, "id"), _text(row, "source_id"), question_text(problem),
                 None if answer is None else str(answer), meta, pictures, notes)


def _colour(task: str) -> str:
    """A fixed colour per task; unknown tasks get a stable one (crc32, not the salted ``hash``)."""
    return _TASK_COLOURS.get(task) or _SPARE_COLOURS[zlib.crc32(task.encode()) % len(_SPARE_COLOURS)]


# ------------------------------------------------------------------------------------------ contact sheet
@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _wrap(text: str, font: Any, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels; words longer than a line are broken; overflow ends in "…"."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            while font.getlength(word) > width:  # break an over-long word (ids, hashes)
                if line:
                    lines.append(line)
                    line = ""
                cut = max(1, _fit(word, font, width))
                lines.append(word[:cut])
                word = word[cut:]
            if not word:
                continue
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= width:
                line = candidate
            else:
                lines.append(line)
                line = word
        lines.append(line)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and font.getlength(last + " …") > width:
            last = last[:-1]
        lines = [*lines[: max_lines - 1], last.rstrip() + " …"]
    return lines


def _fit(text: str, font: Any, width: int) -> int:
    """Longest prefix length of ``text`` that fits ``width`` pixels."""
    n = len(text)
    while n > 0 and font.getlength(text[:n]) > width:
        n -= 1
    return n


def _ellipsize(text: str, font: Any, width: int) -> str:
    if font.getlength(text) <= width:
        return text
    return text[: _fit(text, font, width - font.getlength("…"))].rstrip() + "…"


def _placeholder(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str) -> None:
    """A crossed grey box standing in for an image that could not be shown."""
    x0, y0, x1, y1 = box
    draw.rectangle(box, fill=_PLACEHOLDER_BG, outline=_BORDER)
    draw.line((x0, y0, x1, y1), fill=_BORDER)
    draw.line((x0, y1, x1, y0), fill=_BORDER)
    font = _font(13)
    label = _ellipsize(text, font, x1 - x0 - 8)
    tw = font.getlength(label)
    cy = (y0 + y1) // 2
    draw.rectangle((int((x0 + x1 - tw) / 2) - 4, cy - 10, int((x0 + x1 + tw) / 2) + 4, cy + 10), fill=_PLACEHOLDER_BG)
    draw.text(((x0 + x1) / 2, cy), label, font=font, fill=_WARN, anchor="mm")


def _paste_fit(canvas: Image.Image, img: Image.Image, box: tuple[int, int, int, int]) -> None:
    """Paste ``img`` scaled to fit ``box`` (aspect kept), centred."""
    x0, y0, x1, y1 = box
    scale = min((x1 - x0) / img.width, (y1 - y0) / img.height)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    fitted = img if size == img.size else img.resize(size, Image.Resampling.LANCZOS)
    canvas.paste(fitted, (x0 + (x1 - x0 - size[0]) // 2, y0 + (y1 - y0 - size[1]) // 2))


def _draw_lines(draw: ImageDraw.ImageDraw, xy: tuple[int, int], lines: list[str], font: Any,
                fill: tuple[int, int, int], leading: int) -> int:
    x, y = xy
    for line in lines:
        draw.text((x, y), line, font=font, fill=fill)
        y += leading
    return y


def _draw_main(canvas: Image.Image, draw: ImageDraw.ImageDraw, pic: _Picture, x: int, y: int, width: int) -> int:
    if pic.image is None:
        h = width * 3 // 5
        _placeholder(draw, (x, y, x + width - 1, y + h - 1), f"{pic.label}: cannot be shown (see note)")
        return y + h
    h = min(round(pic.image.height * width / pic.image.width), width * 6 // 5)
    _paste_fit(canvas, pic.image, (x, y, x + width, y + h))
    return y + h


def _draw_extras(canvas: Image.Image, draw: ImageDraw.ImageDraw, pics: list[_Picture], x: int, y: int,
                 width: int) -> int:
    """The extra images (crop candidates) as a row of square thumbnails with their labels above."""
    if not pics:
        return y
    k = len(pics)
    side = min((width - _GAP * (k - 1)) // k, width // 2)
    font = _font(15)
    for i, pic in enumerate(pics):
        tx = x + i * (side + _GAP)
        draw.text((tx + side / 2, y), _ellipsize(pic.label, font, side), font=font, fill=_INK, anchor="mt",
                  stroke_width=0.4, stroke_fill=_INK)
        box = (tx, y + 20, tx + side - 1, y + 20 + side - 1)
        if pic.image is None:
            _placeholder(draw, box, "unreadable")
        else:
            draw.rectangle(box, fill=_PLACEHOLDER_BG)
            _paste_fit(canvas, pic.image, (tx, y + 20, tx + side, y + 20 + side))
    return y + 20 + side


def _draw_answer(draw: ImageDraw.ImageDraw, answer: str | None, x: int, y: int, width: int) -> int:
    font = _font(16)
    text = "answer: ?" if answer is None else f"answer: {answer}"
    lines = _wrap(text, font, width - 16, _ANSWER_LINES)
    h = 22 * len(lines) + 10
    draw.rounded_rectangle((x, y, x + width - 1, y + h), radius=5, fill=_ANSWER_BG)
    for i, line in enumerate(lines):
        draw.text((x + 8, y + 6 + 22 * i), line, font=font, fill=_ANSWER_INK, stroke_width=0.5,
                  stroke_fill=_ANSWER_INK)
    return y + h


def _render_cell(card: _Card, cell_width: int) -> Image.Image:
    """One card's content (header, images, question, answer, notes) on white, cropped to its height."""
    inner = cell_width - 2 * _OUTER
    content = inner - 2 * _PAD
    canvas = Image.new("RGB", (cell_width, 4 * cell_width + 600), "white")
    draw = ImageDraw.Draw(canvas)
    x = _OUTER + _PAD
    draw.rounded_rectangle((_OUTER, _OUTER, _OUTER + inner - 1, _OUTER + _HEADER_H), radius=8,
                           fill=_colour(card.task), corners=(True, True, False, False))
    head = _font(17)
    task = _ellipsize(card.task, head, content * 3 // 5)
    draw.text((x, _OUTER + _HEADER_H // 2), task, font=head, fill="white", anchor="lm", stroke_width=0.6,
              stroke_fill="white")
    small = _font(12)
    source = _ellipsize(card.source_id, small, content - int(head.getlength(task)) - 16)
    draw.text((x + content, _OUTER + _HEADER_H // 2), source, font=small, fill="white", anchor="rm")
    y = _OUTER + _HEADER_H + _PAD
    y = _draw_main(canvas, draw, card.pictures[0], x, y, content) + _GAP
    y = _draw_extras(canvas, draw, card.pictures[1:], x, y, content)
    y += _GAP if len(card.pictures) > 1 else 0
    body = _font(14)
    y = _draw_lines(draw, (x, y), _wrap(card.question or "(no question)", body, content, _QUESTION_LINES), body,
                    _INK, 19) + _GAP
    y = _draw_answer(draw, card.answer, x, y, content) + _GAP
    if card.notes:
        notes = _wrap("! " + "; ".join(card.notes), small, content, _NOTE_LINES)
        y = _draw_lines(draw, (x, y), notes, small, _WARN, 16) + _GAP // 2
    return canvas.crop((0, 0, cell_width, y + _PAD + _OUTER))


def _sheet(cards: list[_Card], columns: int, cell_width: int) -> Image.Image:
    """Cells on a grid; every cell gets the height of the tallest so the card borders line up."""
    if not cards:
        img = Image.new("RGB", (cell_width, 80), "white")
        ImageDraw.Draw(img).text((cell_width / 2, 40), "no samples", font=_font(16), fill=_MUTED, anchor="mm")
        return img
    cols = max(1, min(columns, len(cards)))
    rows = -(-len(cards) // cols)
    cells = [_render_cell(c, cell_width) for c in cards]
    cell_h = max(c.height for c in cells)
    sheet = Image.new("RGB", (cols * cell_width, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, cell in enumerate(cells):
        x, y = (i % cols) * cell_width, (i // cols) * cell_h
        sheet.paste(cell, (x, y))
        draw.rounded_rectangle((x + _OUTER, y + _OUTER, x + cell_width - _OUTER - 1, y + cell_h - _OUTER - 1),
                               radius=8, outline=_BORDER, width=1)
    return sheet


def contact_sheet(rows: list[dict], *, columns: int = 3, cell_width: int = 420) -> Image.Image:
    """A grid image of the rows: task header, images, wrapped question and highlighted answer per cell.

    The sheet is ``min(columns, len(rows)) * cell_width`` wide; all cells share the tallest cell's height.
    """
    if cell_width < 160:
        raise ValueError(f"cell_width must be at least 160 pixels, got {cell_width}")
    return _sheet([_card(r) for r in rows], columns, cell_width)


# ------------------------------------------------------------------------------------------ HTML
_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;background:#fff;margin:24px}
h1{font-size:22px;margin:0 0 4px}
.sub{color:#57606a;margin:0 0 18px}
table{border-collapse:collapse;margin:0 0 8px;font-size:14px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.dist span{display:inline-block;background:#f6f8fa;border-radius:4px;padding:0 5px;margin:1px 3px 1px 0}
.low{color:#cf222e;font-weight:600}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:16px;margin-top:20px}
.card{border:1px solid #d0d7de;border-radius:8px;overflow:hidden}
.card header{color:#fff;padding:6px 12px;display:flex;justify-content:space-between;gap:8px}
.card header b{font-size:16px}
.card header span{font-size:12px;opacity:.9;overflow-wrap:anywhere;text-align:right}
.body{padding:10px 12px}
figure{margin:0}
figure.main img{width:100%;height:auto;display:block}
.opts{display:flex;gap:8px;margin-top:8px}
.opts figure{flex:1;text-align:center;font-weight:600}
.opts img{width:100%;height:auto;display:block;background:#f6f8fa}
figcaption{font-size:12px;color:#57606a}
.opts figcaption{font-size:15px;color:#1f2328}
.missing{background:#f6f8fa;border:1px dashed #d0d7de;color:#cf222e;padding:24px 8px;text-align:center;font-size:13px}
.q{white-space:pre-wrap;margin:10px 0}
.a{background:#fff3bf;color:#4d2d00;border-radius:5px;padding:5px 8px;margin:8px 0}
.id{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;color:#57606a;overflow-wrap:anywhere}
.warn{color:#cf222e;font-size:13px;margin:6px 0}
details pre{font-size:12px;background:#f6f8fa;padding:6px;white-space:pre-wrap;overflow-wrap:anywhere}
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _data_uri(img: Image.Image) -> str:
    """JPEG: a photo-like sample is several times smaller than PNG and looks the same at this size."""
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(pic: _Picture, cls: str = "") -> str:
    open_tag = f'<figure class="{cls}">' if cls else "<figure>"
    if pic.image is None:
        return (f'{open_tag}<div class="missing">{_esc(pic.label)}: {_esc(pic.note or "unavailable")}</div>'
                f"<figcaption>{_esc(pic.label)}</figcaption></figure>")
    return (f'{open_tag}<img src="{_data_uri(pic.image)}" alt="{_esc(pic.label)}" width="{pic.image.width}" '
            f'height="{pic.image.height}"><figcaption>{_esc(pic.label)}</figcaption></figure>')


def _card_html(index: int, card: _Card) -> str:
    main, extras = card.pictures[0], card.pictures[1:]
    opts = f'<div class="opts">{"".join(_figure(p) for p in extras)}</div>' if extras else ""
    answer = "<i>missing</i>" if card.answer is None else f"<b>{_esc(card.answer)}</b>"
    notes = "".join(f'<p class="warn">! {_esc(n)}</p>' for n in card.notes)
    meta = f"<details><summary>meta</summary><pre>{_esc(card.meta)}</pre></details>" if card.meta else ""
    return (
        f'<article class="card" id="sample-{index}">'
        f'<header style="background:{_colour(card.task)}"><b>{_esc(card.task)}</b>'
        f"<span>{_esc(card.source_id)}</span></header>"
        f'<div class="body">{_figure(main, "main")}{opts}'
        f'<p class="q">{_esc(card.question or "(no question)")}</p>'
        f'<p class="a">answer: {answer}</p>{notes}'
        f'<div class="id">{_esc(card.sample_id)}</div>{meta}</div></article>'
    )


def _with_unseen_letters(answers: dict[str, Any], space: Any) -> dict[str, Any]:
    """Option-letter answers with the letters never chosen added as 0, so a missing letter shows.

    >>> _with_unseen_letters({"B": 2, "D": 1}, 4)
    {'A': 0, 'B': 2, 'C': 0, 'D': 1}
    """
    if not (isinstance(space, int) and 2 <= space <= len(LETTERS) and answers):
        return answers
    letters = LETTERS[:space]
    if not all(isinstance(a, str) and len(a) == 1 and a in letters for a in answers):
        return answers
    return {a: answers.get(a, 0) for a in letters}


def _distribution(answers: dict[str, Any]) -> str:
    counts = {str(a): c for a, c in answers.items() if isinstance(c, int | float)}
    total = sum(counts.values()) or 1
    return "".join(f"<span>{_esc(a)}: {100 * c / total:.0f}% ({_esc(c)})</span>" for a, c in sorted(counts.items()))


def _p_value(balance: dict[str, Any]) -> str:
    """The chi-square p-value; small ones (answers not uniform) stand out."""
    p = balance.get("p_value")
    if not isinstance(p, int | float):
        return '<td class="num" title="too few samples for a chi-square test">n/a</td>'
    cls = "num low" if p < 0.01 else "num"
    return f'<td class="{cls}">{p:.3g}</td>'


def _summary_html(summary: dict[str, Any]) -> str:
    """The manifest's per-task table: a user checks here that answers (option letters) are balanced."""
    tasks = summary.get("tasks") if isinstance(summary.get("tasks"), dict) else {}
    rows = []
    for task, st in sorted(tasks.items()):
        st = st if isinstance(st, dict) else {}
        answers = st.get("answers") if isinstance(st.get("answers"), dict) else {}
        balance = st.get("balance") if isinstance(st.get("balance"), dict) else {}
        chi2, space = balance.get("chi2"), balance.get("space")
        seen = f"{len(answers)} / {_esc(space)}" if space else str(len(answers))
        rows.append(
            f'<tr><td><b style="color:{_colour(str(task))}">{_esc(task)}</b></td>'
            f'<td class="num">{_esc(st.get("samples", ""))}</td><td class="num">{_esc(st.get("rejects", ""))}</td>'
            f'<td class="num">{seen}</td><td class="dist">{_distribution(_with_unseen_letters(answers, space))}</td>'
            f'<td class="num">{"n/a" if chi2 is None else _esc(chi2)}</td>{_p_value(balance)}</tr>'
        )
    rejects = summary.get("rejects") if isinstance(summary.get("rejects"), dict) else {}
    reasons = rejects.get("by_reason") if isinstance(rejects.get("by_reason"), dict) else {}
    reason_rows = "".join(f'<tr><td>{_esc(r)}</td><td class="num">{_esc(c)}</td></tr>' for r, c in reasons.items())
    reason_table = (f"<details><summary>rejects by reason</summary><table><tr><th>reason</th><th>count</th></tr>"
                    f"{reason_rows}</table></details>") if reasons else ""
    return (
        f'<section class="summary"><p class="sub">{_esc(summary.get("num_samples", "?"))} samples in the dataset, '
        f'{_esc(rejects.get("count", 0))} rejects. A small p-value means the answers are not uniform.</p>'
        "<table><tr><th>task</th><th>samples</th><th>rejects</th><th>answers seen</th>"
        "<th>answer distribution</th><th>χ²</th><th>p-value</th></tr>"
        f"{''.join(rows)}</table>{reason_table}</section>"
    )


def _page(cards: list[_Card], title: str, summary: dict | None) -> str:
    tasks = list(dict.fromkeys(c.task for c in cards))
    head = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{_esc(title)}</title>'
            f"<style>{_CSS}</style></head><body>")
    intro = (f"<h1>{_esc(title)}</h1><p class=\"sub\">{len(cards)} samples shown; tasks: "
             f"{_esc(', '.join(tasks)) or 'none'}. Questions omit the fixed format instruction.</p>")
    table = _summary_html(summary) if isinstance(summary, dict) else ""
    body = "".join(_card_html(i, c) for i, c in enumerate(cards))
    return f'{head}{intro}{table}<main class="grid">{body}</main></body></html>\n'


def render_html(rows: list[dict], *, title: str, summary: dict | None = None) -> str:
    """One self-contained page (inline CSS, images as data URIs) with a card per row; all text escaped."""
    return _page([_card(r) for r in rows], title, summary)


# ------------------------------------------------------------------------------------------ writing
def _write_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same folder, then ``os.replace``: a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a preview is meant to be opened and served
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _dataset_tasks(summary: dict | None) -> list[str] | None:
    """Tasks the manifest says hold samples: lets ``select_rows`` stop early instead of reading everything."""
    tasks = summary.get("tasks") if isinstance(summary, dict) else None
    if not isinstance(tasks, dict):
        return None
    return [t for t, st in tasks.items() if isinstance(st, dict) and st.get("samples")] or None


def write_preview(rows: Iterable[dict], out_dir: Path | str, *, n: int = 12, title: str = "ssrl preview",
                  summary: dict | None = None) -> tuple[Path, Path]:
    """Select ``n`` rows across tasks and write ``out_dir/preview.png`` and ``out_dir/index.html``.

    Rows are decoded once for both files. With a ``summary`` (the manifest), reading stops as soon as every
    task it lists has its share of rows; rows of tasks it does not list are still shown if met before that.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cards = [_card(r) for r in select_rows(rows, n, tasks=_dataset_tasks(summary))]
    png_path, html_path = out / "preview.png", out / "index.html"
    _write_atomic(png_path, _png_bytes(_sheet(cards, 3, 420)))
    _write_atomic(html_path, _page(cards, title, summary).encode("utf-8"))
    return png_path, html_path
