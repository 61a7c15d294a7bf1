"""Trainer callbacks: checkpoints into the store, a JSONL metrics log, per-task accuracy, job progress."""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ssrl.cluster.client import build_progress
from ssrl.errors import StoreError
from ssrl.store import open_store

log = logging.getLogger(__name__)
JOB_NAME_ENV, JOB_NAMESPACE_ENV = "SSRL_JOB_NAME", "SSRL_JOB_NAMESPACE"
PROGRESS_INTERVAL_ENV = "SSRL_PROGRESS_INTERVAL"
"""Seconds between two progress annotations (default 30)."""


class TaskAccuracy:
    """Accuracy per task, accumulated by the accuracy reward between two log events; ``drain`` sums every rank's
    counts (each rank scores only its own share of the completions)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sums: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))
        self.mode = "train"
        """``eval`` while the Trainer validates, so held-out scores never mix with the rollouts'."""

    def add(self, task: str, value: float) -> None:
        with self._lock:
            self._sums[self.mode][task][0] += value
            self._sums[self.mode][task][1] += 1

    def drain(self, mode: str = "train") -> dict[str, float]:
        """Global accuracy per task since the last drain (``accuracy/<task>``, ``eval_accuracy/<task>`` for
        validation); a collective when several processes run (call it on every rank, as ``on_log`` is)."""
        with self._lock:
            local = {t: tuple(v) for t, v in self._sums.pop(mode, {}).items()}
        total: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for part in _gather(local):
            for t, (s, n) in part.items():
                total[t][0] += s
                total[t][1] += n
        prefix = "eval_accuracy" if mode == "eval" else "accuracy"
        return {f"{prefix}/{t}": s / n for t, (s, n) in sorted(total.items()) if n}


def _gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a one-element list outside a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class MetricsCallback(TrainerCallback):
    """Adds per-task accuracy (all ranks) to every log before TensorBoard sees it, appends the log to
    ``metrics.jsonl`` and mirrors TensorBoard's event files to ``<run>/tensorboard/`` at each save.

    On resume the store's ``metrics.jsonl`` is the history: its lines up to the resumed step are copied into the
    local file first (a restarted pod has an empty scratch), so the uploaded file continues it instead of
    replacing it; lines after that step are dropped, since those steps run again."""

    def __init__(self, path: Path, accuracy: TaskAccuracy, run_url: str | None = None,
                 resume_step: int | None = None):
        self.path, self.accuracy, self.run_url, self.resume_step = path, accuracy, run_url, resume_step
        self._uploaded: dict[str, int] = {}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if not state.is_world_process_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        history = b""
        if self.run_url and self.resume_step is not None:
            run = open_store(self.run_url)
            if run.exists("metrics.jsonl"):
                history = run.read_bytes("metrics.jsonl")
        kept = [line for line in history.decode().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= (self.resume_step or 0)]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        os.replace(tmp, self.path)  # a fresh run starts an empty log; a resumed one continues the store's

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if logs is None:
            return
        logs.update(self.accuracy.drain("eval" if any(k.startswith("eval_") for k in logs) else "train"))
        if state.is_world_process_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps({"step": state.global_step, **logs}, sort_keys=True, default=str) + "\n")

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if not (state.is_world_process_zero and self.run_url):
            return
        # TensorBoard's callback writes <output_dir>/runs/<time>_<host>/ (or $TENSORBOARD_LOGGING_DIR): one folder
        # per attempt, so a resumed run's events sit beside the first attempt's in the store.
        root = Path(os.environ.get("TENSORBOARD_LOGGING_DIR") or Path(args.output_dir) / "runs").expanduser()
        run = open_store(self.run_url)
        for f in sorted(root.rglob("events.out.tfevents.*")):
            key, size = f"tensorboard/{f.relative_to(root).as_posix()}", f.stat().st_size
            if self._uploaded.get(key) != size:  # event files only grow: upload the new or grown ones
                run.put_file(key, f)
                self._uploaded[key] = size


class StoreCheckpointCallback(TrainerCallback):
    """Commits every ``checkpoint-<step>`` the Trainer writes to the run's store folder, from every node, in the
    background.

    At each save a barrier first lets every rank finish writing (DeepSpeed writes one optimizer shard and one RNG
    state per rank, each to its own node's disk). Then each node's first process uploads its node's files and a
    part record from a background thread while training goes on (one save may wait in a queue of one; a second
    blocks the next save, so memory and disk stay bounded), and global rank 0's thread writes the one commit record
    covering every node's part, moves ``latest``, uploads ``metrics.jsonl`` and prunes old steps. Every node prunes
    its own scratch. A failed upload fails the run on every rank at the next save or at the end, never silently.
    """

    def __init__(self, run_url: str, keep: int | None, extra: dict[str, Any], *, part_timeout: float = 1800.0):
        self.run_url, self.keep, self.extra, self.part_timeout = run_url, keep, extra, part_timeout
        self._queue: queue.Queue[tuple[int, Path, bytes | None] | None] = queue.Queue(maxsize=1)
        self._thread: threading.Thread | None = None
        self._error: str | None = None
        self.nodes: list[int] = []
        self.attempt = ""

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        from ssrl.recipes.dist import all_gather

        ranks = all_gather((args.process_index, args.local_process_index, uuid.uuid4().hex))
        self.nodes = sorted(r for r, local, _ in ranks if local == 0)
        self.attempt = ranks[0][2]  # rank 0's: tells this run's part records from a killed run's
        if args.local_process_index == 0:
            self._thread = threading.Thread(target=self._work, args=(args, state.is_world_process_zero), daemon=True,
                                            name="ssrl-checkpoint-upload")
            self._thread.start()

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._raise_failures()  # a collective: past it, every rank has written its files of this checkpoint
        if self._thread is None:
            return
        metrics = Path(args.output_dir) / "metrics.jsonl"
        snapshot = metrics.read_bytes() if state.is_world_process_zero and metrics.exists() else None
        self._queue.put((state.global_step, Path(args.output_dir) / f"checkpoint-{state.global_step}", snapshot))

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self._raise_failures()  # also the barrier that keeps every rank alive until the last step is committed

    def _raise_failures(self) -> None:
        from ssrl.recipes.dist import all_gather

        errors = [e for e in all_gather(self._error) if e]
        if errors:
            raise StoreError(f"checkpoint upload to {self.run_url} failed: {errors[0]}")

    def _work(self, args: Any, commits: bool) -> None:
        from ssrl.store.checkpoints import commit_parts, prune_checkpoints, save_part

        run = open_store(self.run_url)
        while (item := self._queue.get()) is not None:
            if self._error:
                continue  # a failed upload stops uploading; the failure is raised on every rank
            step, folder, metrics = item
            try:
                save_part(run, step, folder, node=args.process_index, attempt=self.attempt)
                if commits:
                    commit_parts(run, step, self.nodes, self.attempt, timeout=self.part_timeout, **self.extra)
                    if metrics is not None:
                        run.write_bytes("metrics.jsonl", metrics)
                    if self.keep:
                        prune_checkpoints(run, self.keep)
                if self.keep:
                    _prune_local(folder.parent, self.keep, uploaded=step)
            except Exception as e:  # re-raised in the training thread, on every rank
                log.error("checkpoint step %d: upload to %s failed: %s", step, self.run_url, e)
                self._error = f"step {step}: {e}"


def _prune_local(trainer_dir: Path, keep: int, uploaded: int) -> None:
    """Of this node's ``checkpoint-<n>`` folders up to the step just ``uploaded``, delete all but the newest ``keep``
    (the Trainer's own rotation runs on rank 0's node only; a newer folder may still wait in the upload queue, so
    it is never counted or touched here, whatever ``keep`` is)."""
    folders = sorted((p for p in trainer_dir.glob("checkpoint-*")
                      if p.name.split("-")[-1].isdigit() and int(p.name.split("-")[-1]) <= uploaded),
                     key=lambda p: int(p.name.split("-")[-1]))
    for old in folders[: max(0, len(folders) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


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
