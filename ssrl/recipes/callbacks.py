"""Trainer callbacks: checkpoints into the store, a JSONL metrics log, per-task accuracy, job progress."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ssrl.cluster.client import build_progress
from ssrl.store import open_store
from ssrl.store.checkpoints import prune_checkpoints, save_checkpoint

log = logging.getLogger(__name__)
JOB_NAME_ENV, JOB_NAMESPACE_ENV = "SSRL_JOB_NAME", "SSRL_JOB_NAMESPACE"
PROGRESS_INTERVAL_ENV = "SSRL_PROGRESS_INTERVAL"
"""Seconds between two progress annotations (default 30)."""


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


class JobProgressCallback(TrainerCallback):
    """Rank 0 records step, reward and per-task accuracy in its job's progress ConfigMap, for ``ssrl jobs status``.

    Active only when the pod knows its job (``SSRL_JOB_NAME`` and ``SSRL_JOB_NAMESPACE`` or ``POD_NAMESPACE``, set
    through the downward API by ``ssrl submit``, the chart and k8s/). At most one write per ``interval``
    seconds (the last one at the end of training), sent from a background thread so training never waits on the
    API server; a failure is logged once and never raised.
    """

    def __init__(self, name: str, namespace: str, interval: float = 30.0,
                 patch: Callable[[str, str, dict[str, Any]], None] | None = None):
        self.name, self.namespace, self.interval = name, namespace, interval
        self.active = bool(name and namespace)
        self._patch = patch
        self._last_sent = float("-inf")
        self._latest: dict[str, Any] = {}
        self._pending: dict[str, Any] | None = None
        self._thread: threading.Thread | None = None
        self._warned = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> JobProgressCallback:
        """From SSRL_JOB_NAME, SSRL_JOB_NAMESPACE (or POD_NAMESPACE), SSRL_PROGRESS_INTERVAL; inactive without them."""
        env = os.environ if env is None else env
        try:
            interval = float(env.get(PROGRESS_INTERVAL_ENV) or 30)
        except ValueError:
            interval = 30.0
        return cls(env.get(JOB_NAME_ENV, ""), env.get(JOB_NAMESPACE_ENV) or env.get("POD_NAMESPACE", ""), interval)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if not self.active or not state.is_world_process_zero or logs is None:
            return
        latest = build_progress(state.global_step, state.max_steps, logs)
        # A log without reward (e.g. the end-of-training summary) keeps the last reward; accuracy merges per task.
        latest["accuracy"] = {**self._latest.get("accuracy", {}), **latest.get("accuracy", {})}
        self._latest = {**self._latest, **{k: v for k, v in latest.items() if v != {}}}
        self._pending = dict(self._latest)
        if time.monotonic() - self._last_sent >= self.interval:
            self._send()

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if not self.active or not state.is_world_process_zero:
            return
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self._pending is not None:
            self._send(wait=15)

    def _send(self, wait: float | None = None) -> None:
        if self._thread is not None and self._thread.is_alive():
            return  # the previous patch is still under way; the pending progress goes with the next log
        progress, self._pending = self._pending, None
        self._last_sent = time.monotonic()
        self._thread = threading.Thread(target=self._patch_quietly, args=(progress,), daemon=True,
                                        name="ssrl-job-progress")
        self._thread.start()
        if wait:
            self._thread.join(timeout=wait)

    def _patch_quietly(self, progress: dict[str, Any]) -> None:
        try:
            if self._patch is None:
                from ssrl.cluster.client import api_client, write_progress

                try:
                    api = api_client()
                except Exception:
                    self.active = False  # no cluster configuration: nothing to retry
                    raise
                self._patch = lambda name, namespace, p: write_progress(name, namespace, p, api=api)
            self._patch(self.name, self.namespace, progress)
        except Exception as e:  # progress is best effort: training goes on
            if not self._warned:
                self._warned = True
                log.warning("cannot record progress for PyTorchJob %s/%s (%s); training goes on",
                            self.namespace, self.name, e)
