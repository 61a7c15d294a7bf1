"""``ssrl eval`` (models x benchmarks -> report) and ``ssrl eval score`` (re-score saved predictions)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ssrl.cli.common import console, out
from ssrl.config import load_config, to_dict

eval_app = typer.Typer(help="Evaluate models on multiple-choice benchmarks and held-out pretext tasks.")


@eval_app.callback(invoke_without_command=True)
def evaluate(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML file of EvalConfig fields."),
    model: list[str] | None = typer.Option(None, "--model", "-m",
                                           help="name=location or location (folder, checkpoint run, store URL); "
                                                "repeat to compare models."),
    bench: list[str] | None = typer.Option(None, "--bench", "-b",
                                           help="A .tsv (VLMEvalKit), .jsonl, or generated task dataset; repeat."),
    output: str | None = typer.Option(None, "--output", "-o", help="Evaluation folder in the store."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N items of each benchmark."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Prompts per generate call."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens"),
    overrides: list[str] | None = typer.Option(None, "--set", "-s", help="Override any field: key=value."),
) -> None:
    """Greedy answers with the training prompt; accuracy per category/task, side by side, in the store."""
    if ctx.invoked_subcommand is not None:
        return
    from ssrl.recipes.evaluate import EvalConfig, main

    cfg = load_config(EvalConfig, config, overrides, models=model or None, benchmarks=bench or None, output=output,
                      limit=limit, batch_size=batch_size, max_new_tokens=max_new_tokens)
    console.print(f"[bold]ssrl eval[/bold] {json.dumps(to_dict(cfg), sort_keys=True)}", highlight=False)
    results = main(cfg)
    if results:
        _show(results, cfg.output)


@eval_app.command("score")
def score(
    location: str = typer.Argument(..., help="An evaluation folder or store URL written by `ssrl eval`."),
) -> None:
    """Re-extract answers from saved predictions and rewrite the report; no model is loaded."""
    from ssrl.recipes.evaluate import rescore

    _show(rescore(location), location)


def _show(results: dict, location: str) -> None:
    from ssrl.evals.report import markdown
    from ssrl.store import open_store

    out.print(markdown(results), soft_wrap=True)
    store = open_store(location)
    out.print(f"report: {store.object_url('results.md')} (also results.json, results.png, predictions/)",
              soft_wrap=True)
