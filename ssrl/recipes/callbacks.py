"""Trainer callbacks: checkpoints into the store, a JSONL metrics log, per-task accuracy."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ssrl.checkpoints import prune_checkpoints, save_checkpoint
from ssrl.store import open_store


class TaskAccuracy:
    """Accuracy per task, accumulated by the accuracy reward between two log events (rank-local)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])

    def add(self, task: str, value: float) -> None:
        with self._lock:
            self._sums[task][0] += value
            self._sums[task][1] += 1

    def drain(self) -> dict[str, float]:
        with self._lock:
            out = {f"accuracy/{t}": s / n for t, (s, n) in sorted(self._sums.items()) if n}
            self._sums.clear()
        return out


class MetricsCallback(TrainerCallback):
    """Adds per-task accuracy to every log (before TensorBoard sees it) and appends it to metrics.jsonl."""

    def __init__(self, path: Path, accuracy: TaskAccuracy):
        self.path, self.accuracy = path, accuracy

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if logs is None:
            return
        logs.update(self.accuracy.drain())
        if state.is_world_process_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps({"step": state.global_step, **logs}, sort_keys=True, default=str) + "\n")


class StoreCheckpointCallback(TrainerCallback):
    """After the Trainer writes ``checkpoint-<step>``, rank 0 commits it to the run's store folder."""

    def __init__(self, run_url: str, keep: int | None, extra: dict[str, Any]):
        self.run_url, self.keep, self.extra = run_url, keep, extra

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        run = open_store(self.run_url)
        save_checkpoint(run, state.global_step, folder, **self.extra)
        metrics = Path(args.output_dir) / "metrics.jsonl"
        if metrics.exists():
            run.put_file("metrics.jsonl", metrics)
        if self.keep:
            prune_checkpoints(run, self.keep)
