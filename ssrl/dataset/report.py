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
    from scipy.special import chdtrc  # the chi-square survival function, without scipy.stats' 1.4 s import

    expected = n / space
    chi2 = sum((o - expected) ** 2 / expected for o in answers.values()) + (space - len(answers)) * expected
    return {**out, "chi2": round(chi2, 4), "p_value": round(float(chdtrc(space - 1, chi2)), 6)}


class ManifestBuilder:
    """Folds shard records into the manifest one at a time: memory holds counts, never the records."""

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.by_task: Counter[str] = Counter()
        self.by_reason: Counter[str] = Counter()
        self.shards: list[dict[str, Any]] = []
        self.rejects = 0
        self.sources_ok = 0

    def add(self, record: dict[str, Any]) -> None:
        for task, st in record["tasks"].items():
            t = self.tasks.setdefault(task, {"samples": 0, "answers": Counter(), "space": st["space"]})
            t["samples"] += st["samples"]
            t["answers"].update(st["answers"])
        for r in record["rejects"]:
            self.rejects += 1
            self.by_task[r["task"] or "(source)"] += 1
            self.by_reason[r["reason"].split(":")[0] if r["task"] is None else f"{r['task']}: {r['reason']}"] += 1
        self.sources_ok += sum(1 for s in record["sources"] if not s.get("rejected"))
        self.shards.append({k: record[k] for k in ("file", "rows", "bytes", "sha256")})

    def build(self, ident: dict[str, Any], *, rejects_sha256: str, sources_sha256: str) -> dict[str, Any]:
        report = {}
        for task in sorted(set(self.tasks) | set(ident["config"]["tasks"])):
            t = self.tasks.get(task, {"samples": 0, "answers": Counter(), "space": 0})
            report[task] = {"samples": t["samples"], "rejects": self.by_task.get(task, 0),
                            "answers": dict(sorted(t["answers"].items())),
                            "balance": uniformity(dict(t["answers"]), t["space"])}
        return {
            **ident,
            "num_samples": sum(t["samples"] for t in report.values()),
            "tasks": report,
            "shard_files": self.shards,
            "sources_file": {"file": "sources.jsonl", "sha256": sources_sha256, "decoded": self.sources_ok},
            "rejects": {"file": "rejects.jsonl", "sha256": rejects_sha256, "count": self.rejects,
                        "sources_rejected": self.by_task.get("(source)", 0),
                        "by_task": dict(sorted(self.by_task.items())),
                        "by_reason": dict(sorted(self.by_reason.items(), key=lambda kv: (-kv[1], kv[0]))[:50])},
        }
