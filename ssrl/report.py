"""The dataset report: counts per task, the answer distribution and a uniformity test, rejects by reason."""

from __future__ import annotations

from collections import Counter
from typing import Any

#: Below this many samples per possible answer a chi-square test says nothing; we then report no p-value.
MIN_EXPECTED = 5


def uniformity(answers: dict[str, int], space: int) -> dict[str, Any]:
    """Chi-square test of the answers against the uniform law over ``space`` possible answers.

    >>> r = uniformity({"A": 25, "B": 25, "C": 25, "D": 25}, 4); (r["chi2"], r["p_value"])
    (0.0, 1.0)
    """
    n = sum(answers.values())
    out: dict[str, Any] = {"space": space, "distinct": len(answers), "samples": n}
    if space < 2 or n < MIN_EXPECTED * space:
        return {**out, "chi2": None, "p_value": None}
    from scipy import stats  # 1.4 s to import: only the process that writes the manifest pays it

    expected = n / space
    chi2 = sum((o - expected) ** 2 / expected for o in answers.values()) + (space - len(answers)) * expected
    return {**out, "chi2": round(chi2, 4), "p_value": round(float(stats.chi2.sf(chi2, space - 1)), 6)}


def build_manifest(ident: dict[str, Any], records: list[dict[str, Any]], *, rejects_sha256: str,
                   sources_sha256: str) -> dict[str, Any]:
    tasks: dict[str, dict[str, Any]] = {}
    for rec in records:
        for task, st in rec["tasks"].items():
            t = tasks.setdefault(task, {"samples": 0, "answers": Counter(), "space": st["space"]})
            t["samples"] += st["samples"]
            t["answers"].update(st["answers"])
    rejects = [r for rec in records for r in rec["rejects"]]
    by_task = Counter(r["task"] or "(source)" for r in rejects)
    by_reason = Counter(r["reason"].split(":")[0] if r["task"] is None else f"{r['task']}: {r['reason']}"
                        for r in rejects)
    report = {}
    for task in sorted(set(tasks) | set(ident["config"]["tasks"])):
        t = tasks.get(task, {"samples": 0, "answers": Counter(), "space": 0})
        report[task] = {"samples": t["samples"], "rejects": by_task.get(task, 0),
                        "answers": dict(sorted(t["answers"].items())),
                        "balance": uniformity(dict(t["answers"]), t["space"])}
    sources_ok = sum(1 for rec in records for s in rec["sources"] if not s.get("rejected"))
    return {
        **ident,
        "num_samples": sum(t["samples"] for t in report.values()),
        "tasks": report,
        "shard_files": [{"file": r["file"], "rows": r["rows"], "bytes": r["bytes"], "sha256": r["sha256"]}
                        for r in records],
        "sources_file": {"file": "sources.jsonl", "sha256": sources_sha256, "decoded": sources_ok},
        "rejects": {"file": "rejects.jsonl", "sha256": rejects_sha256, "count": len(rejects),
                    "sources_rejected": by_task.get("(source)", 0), "by_task": dict(sorted(by_task.items())),
                    "by_reason": dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))[:50])},
    }
