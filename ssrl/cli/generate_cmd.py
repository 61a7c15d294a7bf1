"""``ssrl generate``: YAML config < flags < --set overrides, then a progress bar and the dataset report."""

from __future__ import annotations

from pathlib import Path

import typer

from ssrl.cli.common import console, progress_bar
from ssrl.cli.report_view import print_report
from ssrl.config import load_config, to_dict


def generate(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML file of GenerateConfig fields."),
    inputs: list[str] | None = typer.Option(None, "--input", "-i",
                                            help="Folder, glob or list file of images (repeatable)."),
    output: str | None = typer.Option(None, "--output", "-o", help="Dataset folder or store URL."),
    tasks: str | None = typer.Option(None, "--tasks", "-t", help="Comma-separated task names (see `ssrl tasks`)."),
    seed: int | None = typer.Option(None, "--seed", help="Global seed; with the inputs it fixes every sample."),
    samples_per_task: int | None = typer.Option(None, "--samples-per-task", help="Samples per source and task."),
    shard_size: int | None = typer.Option(None, "--shard-size", help="Sources per shard file."),
    shard_index: int | None = typer.Option(None, "--shard-index",
                                           help="This process's index (default: JOB_COMPLETION_INDEX or RANK)."),
    num_shards: int | None = typer.Option(None, "--num-shards",
                                          help="Number of processes sharing the work (default: WORLD_SIZE)."),
    workers: int | None = typer.Option(None, "--workers", "-w", help="Worker processes on this machine."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad input instead of skipping it."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a dataset made with another config."),
    overrides: list[str] | None = typer.Option(None, "--set", "-s",
                                               help="Override any field: key=value, e.g. task_options.shuffle.rows=3"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or report."),
) -> None:
    """Turn images (and depth maps) into verifiable spatial question/answer samples (Parquet shards)."""
    from ssrl.dataset.generate import GenerateConfig, run

    cfg = load_config(
        GenerateConfig, config, overrides,
        inputs=inputs or None, output=output, tasks=tasks, seed=seed, samples_per_task=samples_per_task,
        shard_size=shard_size, shard_index=shard_index, num_shards=num_shards, workers=workers,
        strict=strict or None, overwrite=overwrite or None,
    )
    if not quiet:
        shown = {k: v for k, v in to_dict(cfg).items() if v not in (None, [], {})}
        console.print(f"[bold]ssrl generate[/bold] {shown}", markup=True, highlight=False)
    if quiet:
        result = run(cfg)
    else:
        with progress_bar("sources") as (set_total, advance):
            result = run(cfg, progress=advance, on_plan=set_total)
    done = len(result.shards_mine) - len(result.shards_skipped)
    console.print(f"shards: {done} written, {len(result.shards_skipped)} already committed "
                  f"(this process: {len(result.shards_mine)} of {result.shards_total}) -> {result.store.url}")
    if result.manifest is None:
        console.print("[yellow]other shards are still missing[/yellow]: the manifest is written by the run "
                      "that commits the last one")
    elif not quiet:
        print_report(result.manifest)
