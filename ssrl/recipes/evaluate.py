"""``ssrl eval``: models x benchmarks -> saved predictions -> accuracy tables, side by side.

One readable flow: validate every benchmark (all problems reported before a model loads) -> for each model,
greedy generation in batches with the training prompt, items split across ranks under torchrun -> rank 0
gathers, writes ``predictions/<model>/<bench>.jsonl`` and the report -> the folder is committed to the
store under ``output`` (``evals/<run>/`` by convention). Predictions already in ``output`` from earlier
runs stay, so a base model evaluated yesterday and a checkpoint evaluated today share one report.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssrl.errors import ConfigError


@dataclass
class EvalConfig:
    """Evaluation of one or more models on one or more benchmarks."""

    models: list[str] = field(default_factory=list)
    """``name=location`` or ``location``: model folder, checkpoint run (latest step) or store URL."""
    benchmarks: list[str] = field(default_factory=list)
    """VLMEvalKit ``.tsv``, plain ``.jsonl``, or a generated task dataset (folder or store URL)."""
    output: str = "store/evals/demo"
    """Evaluation folder in the store: predictions/, results.json, results.md, results.png."""
    work_dir: str = ""
    """Local scratch (default: ~/.cache/ssrl/evals/<name>)."""
    limit: int = 0
    """Evaluate only the first N items of each benchmark (0: all)."""
    holdout: float = 0.0
    """For generated task datasets: only the sources ``ssrl train --set holdout=<same>`` left out."""
    dataset_wait: float = 3600.0
    """Seconds to wait for a generated task dataset's manifest.json (its generator still running); 0: don't wait."""
    batch_size: int = 8
    max_new_tokens: int = 1024
    min_pixels: int = 262_144
    max_pixels: int = 4_194_304
    bf16: str = "auto"
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not self.models:
            problems.append("no model: pass --model (name=location or location)")
        if not self.benchmarks:
            problems.append("no benchmark: pass --bench (a .tsv, a .jsonl or a generated task dataset)")
        names = [model_name(m)[0] for m in self.models]
        if len(set(names)) != len(names):
            problems.append(f"model names must differ, got {names}: name them with name=location")
        if self.batch_size < 1 or self.max_new_tokens < 1 or self.limit < 0:
            problems.append("batch_size and max_new_tokens must be >= 1 and limit >= 0")
        if not 0 <= self.holdout < 1:
            problems.append(f"holdout must be in [0, 1), got {self.holdout}")
        if self.dataset_wait < 0:
            problems.append(f"dataset_wait must be >= 0 seconds, got {self.dataset_wait}")
        if self.bf16 not in ("auto", "true", "false", True, False):
            problems.append(f"bf16 must be auto, true or false, got {self.bf16!r}")
        if problems:
            raise ConfigError(problems)


def model_name(spec: str) -> tuple[str, str]:
    """``(name, location)`` of a ``--model`` value; the default name is the folder's (with its step).

    >>> model_name("base=s3://m/qwen"), model_name("store/checkpoints/demo/step-4")
    (('base', 's3://m/qwen'), ('demo-step-4', 'store/checkpoints/demo/step-4'))
    """
    name, sep, location = spec.partition("=")
    if not sep or "/" in name or ":" in name:
        location = spec
        parts = location.rstrip("/").split("/")
        name = parts[-1]
        if (re.fullmatch(r"step-\d+|latest", name) and len(parts) > 1):
            name = f"{parts[-2]}-{name}"
    return re.sub(r"[^\w.-]+", "_", name), location


def _work_dir(cfg: EvalConfig) -> Path:
    if cfg.work_dir:
        return Path(cfg.work_dir)
    return Path("~/.cache/ssrl/evals").expanduser() / re.sub(r"[^\w.-]+", "_", cfg.output.rstrip("/"))


def _images(raw: list[bytes]) -> list[Any]:
    from PIL import Image

    return [Image.open(io.BytesIO(b)).convert("RGB") for b in raw]


class Generator:
    """Greedy, batched, left-padded generation with the training prompt; vision tokens never sampled."""

    def __init__(self, path: str, cfg: EvalConfig, device: Any, bf16: bool):
        from ssrl.recipes.modeling import load_model_and_processor, vision_token_ids

        self.model, self.processor = load_model_and_processor(
            path, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels, bf16=bf16,
            trust_remote_code=cfg.trust_remote_code)
        self.model.to(device).eval()
        self.device = device
        self.max_new_tokens = cfg.max_new_tokens
        self.suppress = vision_token_ids(self.model.config)

    def __call__(self, problems: list[str], images: list[list[Any]]) -> list[str]:
        import torch

        from ssrl.recipes.data import to_prompt

        texts = [self.processor.apply_chat_template(to_prompt(p), add_generation_prompt=True, tokenize=False)
                 for p in problems]
        flat = [im for ims in images for im in ims]
        inputs = self.processor(text=texts, images=flat or None, padding=True, return_tensors="pt").to(self.device)
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False, temperature=None,
                                      top_p=None, top_k=None, suppress_tokens=self.suppress or None,
                                      pad_token_id=tokenizer.pad_token_id)
        return self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def _batches(bench: str, cfg: EvalConfig, cache: Path, rank: int, world: int) -> Iterator[list[tuple]]:
    """This rank's items (``rank::world``), images decoded, in batches."""
    from ssrl.evals.items import iter_items

    batch: list[tuple] = []
    for order, item in enumerate(iter_items(bench, cache, cfg.limit or None, cfg.holdout)):
        if order % world != rank:
            continue
        batch.append((order, item, _images(item.images)))
        if len(batch) == cfg.batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def prefetch(batches: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Produce the next batches in a thread while the model works on this one (PIL decodes without the GIL);
    at most ``depth`` batches wait, so memory stays bounded. Errors surface in the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for b in batches:
                if stop.is_set():
                    return
                q.put(b)
            q.put(done)
        except BaseException as e:
            q.put(e)

    thread = threading.Thread(target=work, daemon=True, name="eval-prefetch")
    thread.start()
    try:
        while (b := q.get()) is not done:
            if isinstance(b, BaseException):
                raise b
            yield b
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                q.get_nowait()
            thread.join(0.05)


def evaluate_benchmark(generate: Generator, bench: str, cfg: EvalConfig, cache: Path, rank: int = 0,
                       world: int = 1) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """This rank's predictions on one benchmark and where the time went (``model_seconds``: generation)."""
    from ssrl.evals.scoring import score_prediction

    preds: list[dict[str, Any]] = []
    model_s = 0.0
    start = time.perf_counter()
    for batch in prefetch(_batches(bench, cfg, cache, rank, world)):
        t0 = time.perf_counter()
        responses = generate([item.problem for _, item, _ in batch], [images for _, _, images in batch])
        model_s += time.perf_counter() - t0
        for (order, item, _), response in zip(batch, responses, strict=True):
            preds.append(score_prediction({
                "order": order, "id": item.id, "category": item.category, "task": item.task,
                "answer": item.answer, "options": item.options, "response": response}))
    total = time.perf_counter() - start
    return preds, {"seconds": total, "model_seconds": model_s}


def _distributed() -> tuple[int, int, Any]:
    """(rank, world, device); joins the process group torchrun describes."""
    import torch

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    gpu = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if gpu else torch.device("cpu")
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if gpu else "gloo")
    return rank, world, device


def _gather(obj: Any, world: int) -> list[Any]:
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def publish(staging: Path, output: str, *, rescore: bool = False, extra: dict[str, Any] | None = None) -> dict:
    """Report from every saved prediction in ``staging``, then commit the folder to ``output``."""
    from ssrl.evals.report import build_results, write_report
    from ssrl.store import open_store
    from ssrl.store.transfer import commit, upload_tree

    results = build_results(staging, rescore=rescore, extra=extra)
    write_report(staging, results)
    store = open_store(output)
    files = upload_tree(staging, store, "")
    commit(store, "", files, kind="eval")
    return results


def pull_existing(output: str, staging: Path) -> None:
    """Earlier predictions in ``output`` join this run's report."""
    from ssrl.store import open_store
    from ssrl.store.transfer import pull_tree, read_commit

    store = open_store(output)
    if read_commit(store, "") is not None:
        pull_tree(store, "", staging)


def main(cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate every model on every benchmark; returns the results (rank 0) or {} (other ranks)."""
    import shutil

    import torch

    from ssrl.dataset.shards import wait_for_manifest
    from ssrl.evals.items import benchmark_name, layout, validate
    from ssrl.evals.report import prediction_path, write_predictions
    from ssrl.recipes.modeling import resolve_model
    from ssrl.recipes.train_grpo import flag

    rank, world, device = _distributed()
    scratch = _work_dir(cfg)
    staging = scratch / "report"
    if rank == 0:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        pull_existing(cfg.output, staging)
    for bench in cfg.benchmarks:  # a generated dataset is read only once its generator has committed every shard
        if layout(bench) == "tasks":
            wait_for_manifest(bench, cfg.dataset_wait)
    sizes = {bench: validate(bench, scratch, cfg.holdout) for bench in cfg.benchmarks}
    names = [benchmark_name(b) for b in cfg.benchmarks]
    if len(set(names)) != len(names):
        raise ConfigError(f"benchmark names must differ (they name the prediction files), got {names}")
    locations, timing = {}, []
    for spec in cfg.models:
        name, location = model_name(spec)
        locations[name] = location
        generate = Generator(resolve_model(location, scratch), cfg, device, flag(cfg.bf16, device.type == "cuda"))
        for bench, bench_name in zip(cfg.benchmarks, names, strict=True):
            preds, t = evaluate_benchmark(generate, bench, cfg, scratch, rank, world)
            parts = _gather((preds, t), world)
            if rank == 0:
                merged = sorted((p for part, _ in parts for p in part), key=lambda p: p.pop("order"))
                write_predictions(prediction_path(staging, name, bench_name), merged)
                seconds = max(tp["seconds"] for _, tp in parts)
                model_seconds = max(tp["model_seconds"] for _, tp in parts)
                timing.append({"model": name, "benchmark": bench_name, "samples": len(merged),
                               "of": min(sizes[bench], cfg.limit or sizes[bench]), "seconds": round(seconds, 3),
                               "samples_per_s": len(merged) / seconds if seconds else 0.0,
                               "outside_share": max(0.0, 1 - model_seconds / seconds) if seconds else 0.0,
                               "ranks": world, "device": str(device.type)})
        del generate
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if rank != 0:
        return {}
    previous = _previous_timing(staging)
    keep = [t for t in previous if (t["model"], t["benchmark"]) not in {(x["model"], x["benchmark"]) for x in timing}]
    old_models = _previous(staging).get("models", {})
    return publish(staging, cfg.output, extra={"models": {**old_models, **locations}, "timing": keep + timing})


def _previous(staging: Path) -> dict[str, Any]:
    import json

    path = staging / "results.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _previous_timing(staging: Path) -> list[dict[str, Any]]:
    return list(_previous(staging).get("timing", []))


def rescore(location: str, work_dir: str = "") -> dict[str, Any]:
    """``ssrl eval score``: re-extract and re-score saved predictions (no model), rewrite the report."""
    import shutil

    from ssrl.errors import SSRLError

    scratch = Path(work_dir) if work_dir else _work_dir(EvalConfig(models=["x"], benchmarks=["x"], output=location))
    staging = scratch / "rescore"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    pull_existing(location, staging)
    if not (staging / "predictions").is_dir():
        raise SSRLError(f"{location} holds no committed evaluation (no predictions/): run `ssrl eval` first")
    return publish(staging, location, rescore=True)
