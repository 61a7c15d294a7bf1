"""``ssrl coldstart``: SFT cold-start rows from a generated dataset, optionally with a teacher VLM."""

from __future__ import annotations

import typer

from ssrl.cli.common import console, out, progress_bar


def coldstart(
    dataset: str = typer.Argument(..., help="Generated dataset folder or store URL."),
    output: str = typer.Option(..., "--output", "-o", help="Folder or store URL for coldstart.json and images/."),
    per_task: int | None = typer.Option(None, "--per-task", "-n", help="At most N rows per task (first N)."),
    tasks: str | None = typer.Option(None, "--tasks", "-t", help="Only these tasks (comma-separated)."),
    teacher_url: str | None = typer.Option(None, "--teacher-url", help="OpenAI-compatible base URL, e.g. "
                                           "http://vllm:8000/v1; the key comes from SSRL_TEACHER_API_KEY or "
                                           "OPENAI_API_KEY."),
    teacher_model: str | None = typer.Option(None, "--teacher-model", help="Model name the endpoint serves."),
    overrides: list[str] | None = typer.Option(None, "--set", "-s", help="Override any field: key=value."),
) -> None:
    """Reasoning traces ending in the exact answer, kept only if the task's verifier and the format check pass."""
    from ssrl.config import load_config
    from ssrl.dataset.coldstart import DATA_FILE, ColdStartConfig, build

    cfg = load_config(ColdStartConfig, None, overrides, dataset=dataset, output=output, per_task=per_task,
                      tasks=tasks, teacher_url=teacher_url, teacher_model=teacher_model)
    with progress_bar("rows") as (_set_total, advance):
        summary = build(cfg, progress=advance)
    for task, counts in summary["tasks"].items():
        console.print(f"  {task}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    out.print(f"{summary['rows']} cold-start rows -> {cfg.output.rstrip('/')}/{DATA_FILE} (ssrl sft --data reads it)")
