"""The dataset report as a rich table: samples, rejects and answer balance per task."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from ssrl.cli.common import out


def _distribution(answers: dict[str, int], limit: int = 6) -> str:
    total = sum(answers.values()) or 1
    items = sorted(answers.items(), key=lambda kv: (-kv[1], kv[0]))
    text = "  ".join(f"{a}: {100 * c / total:.0f}%" for a, c in items[:limit])
    return text + (f"  (+{len(items) - limit} more)" if len(items) > limit else "")


def print_report(manifest: dict[str, Any]) -> None:
    table = Table(title=f"dataset: {manifest['num_samples']} samples", title_justify="left")
    for col in ("task", "samples", "rejects", "answers (share)", "possible", "χ² p-value"):
        table.add_column(col, justify="right" if col in ("samples", "rejects", "possible", "χ² p-value") else "left")
    for task, t in manifest["tasks"].items():
        p = t["balance"]["p_value"]
        ptext = "n/a (few samples)" if p is None else (f"[red]{p:.4f}[/red]" if p < 0.01 else f"{p:.4f}")
        table.add_row(task, str(t["samples"]), str(t["rejects"]), _distribution(t["answers"]),
                      str(t["balance"]["space"] or "-"), ptext)
    out.print(table)
    rej = manifest["rejects"]
    if rej["count"]:
        out.print(f"rejects: {rej['count']} (see rejects.jsonl)")
        for reason, n in list(rej["by_reason"].items())[:8]:
            out.print(f"  {n:>6}  {reason}", markup=False)
