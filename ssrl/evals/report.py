"""An evaluation folder: ``predictions/<model>/<benchmark>.jsonl`` in, ``results.json``, ``results.md`` and
``results.png`` out, every model side by side. Built only from saved predictions, so re-scoring never needs
the models again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ssrl.errors import SSRLError
from ssrl.evals.scoring import score_prediction, summarize

PREDICTIONS = "predictions"


def prediction_path(root: Path, model: str, bench: str) -> Path:
    return root / PREDICTIONS / model / f"{bench}.jsonl"


def write_predictions(path: Path, preds: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for p in preds:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    tmp.replace(path)


def read_predictions(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def build_results(root: Path, rescore: bool = False, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Summaries of every saved prediction file; ``rescore`` re-extracts answers from the responses."""
    files = sorted((root / PREDICTIONS).glob("*/*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no predictions under {root / PREDICTIONS}: run `ssrl eval` first")
    previous = _read_json(root / "results.json")
    order = previous.get("models_order", [])
    benchmarks: dict[str, dict[str, Any]] = {}
    for path in files:
        model, bench = path.parent.name, path.stem
        preds = read_predictions(path)
        if rescore:
            preds = [score_prediction(p) for p in preds]
            write_predictions(path, preds)
        benchmarks.setdefault(bench, {})[model] = summarize(preds)
    models = sorted({m for b in benchmarks.values() for m in b}, key=lambda m: (m not in order, order.index(m)
                                                                                if m in order else 0, m))
    results = {**previous, **(extra or {}), "models_order": models, "benchmarks": benchmarks}
    return results


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def markdown(results: dict[str, Any]) -> str:
    """One table per benchmark: categories down, models across, and the change from the first model."""
    models = results["models_order"]
    lines = ["# Evaluation", ""]
    for location in results.get("models", {}).items():
        lines.append(f"- `{location[0]}`: {location[1]}")
    for bench, by_model in sorted(results["benchmarks"].items()):
        present = [m for m in models if m in by_model]
        delta = len(present) > 1
        header = "| category | " + " | ".join(present) + (" | Δ (last − first) |" if delta else " |")
        lines += ["", f"## {bench}", "", header, "|---|" + "---:|" * (len(present) + delta)]
        cats = sorted({c for m in present for c in by_model[m]["per_category"]})
        rows = [(c, [by_model[m]["per_category"].get(c) for m in present]) for c in cats]
        rows.append(("**overall**", [by_model[m] for m in present]))
        for name, cells in rows:
            text = [f"{100 * c['accuracy']:.1f} ({c['correct']}/{c['n']})" if c else "–" for c in cells]
            if delta:
                first, last = cells[0], cells[-1]
                text.append(f"{100 * (last['accuracy'] - first['accuracy']):+.1f}" if first and last else "–")
            lines.append(f"| {name} | " + " | ".join(text) + " |")
        unparsed = {m: len(by_model[m]["unparsed"]) for m in present if by_model[m]["unparsed"]}
        if unparsed:
            lines += ["", "Unparsed answers (counted wrong; ids in results.json): " +
                      ", ".join(f"{m} {n}" for m, n in unparsed.items())]
    timing = results.get("timing")
    if timing:
        lines += ["", "## Timing", "", "| model | benchmark | samples | samples/s | outside the model |",
                  "|---|---|---:|---:|---:|"]
        for t in timing:
            lines.append(f"| {t['model']} | {t['benchmark']} | {t['samples']} | {t['samples_per_s']:.2f} | "
                         f"{100 * t['outside_share']:.1f} % |")
    return "\n".join(lines) + "\n"


def chart(results: dict[str, Any], path: Path) -> None:
    """Grouped bars: one panel per benchmark, a bar per model for each category and overall."""
    try:
        import matplotlib
    except ImportError:
        raise SSRLError("the report's bar chart needs matplotlib: pip install 'ssrl[eval]' (or the train extra)") \
            from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = sorted(results["benchmarks"])
    models = results["models_order"]
    fig, axes = plt.subplots(len(benches), 1, figsize=(max(6.0, 1.2 + 0.9 * _max_cats(results) * len(models)),
                                                       3.2 * len(benches)), squeeze=False)
    width = 0.8 / max(1, len(models))
    for ax, bench in zip(axes[:, 0], benches, strict=True):
        by_model = results["benchmarks"][bench]
        cats = [*sorted({c for m in by_model.values() for c in m["per_category"]}), "overall"]
        for i, model in enumerate(models):
            if model not in by_model:
                continue
            s = by_model[model]
            values = [100 * (s["per_category"][c]["accuracy"] if c in s["per_category"] else 0.0)
                      for c in cats[:-1]] + [100 * s["accuracy"]]
            xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(cats))]
            ax.bar(xs, values, width, label=model)
        ax.set_xticks(range(len(cats)), cats, rotation=20, ha="right")
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(bench)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _max_cats(results: dict[str, Any]) -> int:
    return max(len({c for m in b.values() for c in m["per_category"]}) + 1 for b in results["benchmarks"].values())


def write_report(root: Path, results: dict[str, Any]) -> None:
    (root / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    (root / "results.md").write_text(markdown(results))
    chart(results, root / "results.png")
