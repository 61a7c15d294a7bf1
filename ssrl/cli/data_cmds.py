"""Commands around datasets: make synthetic sources, preview, report, verify, list tasks."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import typer
from rich.table import Table

from ssrl.cli.common import console, out, progress_bar
from ssrl.errors import SSRLError


def synth(
    out_dir: Path = typer.Argument(..., help="Folder for the scenes (image + DIODE-style depth + camera)."),
    count: int = typer.Option(24, "--count", "-n", min=1, help="Number of scenes."),
    seed: int = typer.Option(0, "--seed", help="Scene i depends only on (seed, i)."),
    width: int = typer.Option(672, "--width", min=32),
    height: int = typer.Option(504, "--height", min=32),
) -> None:
    """Render synthetic 3D scenes to RGB + metric depth with known camera geometry (no downloads)."""
    from ssrl.sources.synth import SynthConfig, synthesize

    with progress_bar("scenes") as (set_total, advance):
        set_total(count)
        paths = synthesize(out_dir, count, seed=seed, cfg=SynthConfig(width=width, height=height), progress=advance)
    console.print(f"{len(paths)} scenes in {out_dir}")


def preview(
    dataset: str = typer.Argument(..., help="Dataset folder or store URL."),
    out_dir: Path | None = typer.Option(None, "--out", "-o", help="Where to write preview.png and index.html "
                                        "(default: <dataset>/preview when the dataset is a local folder)."),
    n: int = typer.Option(12, "--num", "-n", min=1, help="Number of samples."),
    tasks: str | None = typer.Option(None, "--tasks", "-t", help="Only these tasks (comma-separated)."),
) -> None:
    """Write a contact sheet (PNG) and a static HTML page of samples with their questions and answers."""
    from ssrl.dataset.preview import write_preview
    from ssrl.dataset.shards import iter_rows, read_manifest
    from ssrl.store import open_store

    store = open_store(dataset)
    if out_dir is None:
        local = store.local_path("preview")
        if local is None:
            raise SSRLError("--out is required when the dataset is not a local folder")
        out_dir = local
    try:
        summary = read_manifest(store)
    except SSRLError:
        summary = None
    rows = iter_rows(store, tasks=tasks.split(",") if tasks else None)
    png, html = write_preview(rows, out_dir, n=n, title=f"ssrl preview: {dataset}", summary=summary)
    console.print(f"preview: {png}\n         {html}")


def report(dataset: str = typer.Argument(..., help="Dataset folder or store URL.")) -> None:
    """Print the dataset report: samples, rejects and answer balance per task."""
    from ssrl.cli.report_view import print_report
    from ssrl.dataset.shards import read_manifest

    print_report(read_manifest(dataset))


def verify(
    dataset: str = typer.Argument(..., help="Dataset folder or store URL."),
    limit: int | None = typer.Option(None, "--limit", help="Check only the first N samples."),
) -> None:
    """Re-check a dataset: shard checksums, every answer re-derived from its meta, and the reward's round trip."""
    from ssrl.dataset.shards import committed_shards, iter_rows, record_key
    from ssrl.store import open_store
    from ssrl.tasks import get_task
    from ssrl.tasks.base import IMAGE_TOKEN

    store = open_store(dataset)
    problems: list[str] = []
    for key in committed_shards(store):
        rec = json.loads(store.read_bytes(record_key(key)))
        if hashlib.sha256(store.read_bytes(key)).hexdigest() != rec["sha256"]:
            problems.append(f"{key}: sha256 differs from its commit record")
    checked = 0
    with progress_bar("samples") as (_, advance):
        for row in iter_rows(store, limit=limit):
            task = get_task(row["task"])
            meta = json.loads(row["meta"])
            if task.answer_from_meta(meta) != row["answer"]:
                problems.append(f"{row['id']}: answer {row['answer']!r} != {task.answer_from_meta(meta)!r} from meta")
            if task.verify(f"<think>check</think>\\boxed{{{row['answer']}}}", row) != 1.0:
                problems.append(f"{row['id']}: the reward does not accept the reference answer")
            if row["problem"].count(IMAGE_TOKEN) != len(row["images"]):
                problems.append(f"{row['id']}: {len(row['images'])} images for "
                                f"{row['problem'].count(IMAGE_TOKEN)} placeholders")
            checked += 1
            advance(1)
    for p in problems[:20]:
        console.print(f"[red]✗[/red] {p}", highlight=False)
    if problems:
        raise SSRLError(f"{len(problems)} problems in {checked} samples")
    out.print(f"[green]✓[/green] {checked} samples verified")


def tasks() -> None:
    """List the registered pretext tasks and their knobs (set them with --set task_options.<task>.<knob>=...)."""
    from ssrl.tasks import DEFAULT_TASKS, available_tasks, get_task

    table = Table(title="pretext tasks")
    for col in ("task", "default", "depth", "knobs (defaults)"):
        table.add_column(col)
    for name in available_tasks():
        module = get_task(name)
        knobs = ", ".join(f"{f.name}={getattr(module.Config(), f.name)!r}" for f in dataclasses.fields(module.Config))
        table.add_row(name, "yes" if name in DEFAULT_TASKS else "no", "yes" if module.REQUIRES_DEPTH else "no", knobs)
    out.print(table)
