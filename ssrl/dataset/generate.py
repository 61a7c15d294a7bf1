"""``ssrl generate``: sources -> pretext-task samples -> committed Parquet shards and a manifest.

The dataset is cut into shards of ``shard_size`` consecutive sources (sorted by id). A process handles
shards ``shard_index, shard_index + num_shards, ...``; each shard is written under a temporary name,
renamed into place, and then committed by its record ``shard-NNNNN.json`` (sizes, sha256, statistics).
A rerun skips committed shards. Every sample's randomness comes from (seed, source id, task, k) only, so
the shard files are byte-identical whatever the number of processes, workers or their order.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import hashlib
import json
import math
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from ssrl import __version__
from ssrl.config import build_config, to_dict
from ssrl.dataset.report import ManifestBuilder
from ssrl.dataset.shards import SHARD_RECORD, ShardWriter, shard_name
from ssrl.errors import ConfigError, RejectError, SSRLError, StoreError, StoreUnavailableError
from ssrl.sources.camera import read_intrinsics
from ssrl.sources.depth import DepthFormat, read_depth
from ssrl.sources.discover import DEFAULT_CAMERAS, DEFAULT_RULES, Source, discover, parse_rules
from ssrl.sources.imageio import ENCODE_FORMATS, PixelBudget, decode_fitted, encode_image, fit_budget, resize_depth
from ssrl.store import Store, open_store, read_url
from ssrl.tasks import DEFAULT_TASKS, available_tasks, get_task
from ssrl.tasks.base import Scene

#: Fields that only say how a run is executed; they never change the dataset's content.
JOB_FIELDS = ("output", "shard_index", "num_shards", "workers", "strict", "overwrite")
GENERATION = "generation.json"


@dataclass
class GenerateConfig:
    """What to generate and where. Paper values are the defaults of each task's own ``Config``."""

    inputs: list[str] = field(default_factory=list)
    """Folders (recursive), globs or list files (.txt/.lst) of images; depth maps are paired by ``pairing``."""
    output: str = "store/tasks/demo"
    """Dataset location: a folder or store URL."""
    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-task knobs, e.g. {shuffle: {rows: 3, cols: 3}, crop: {side_fraction: 0.4}}."""
    samples_per_task: int = 1
    """Samples per (source, task), each with its own seed."""
    seed: int = 0
    min_pixels: int = 262_144
    max_pixels: int = 1_003_520
    size_factor: int = 28
    image_format: str = "jpeg"
    """Output encoding: jpeg (4:4:4 chroma), png (lossless, ~6x larger) or webp."""
    image_quality: int = 95
    """JPEG/WebP quality (1-100)."""
    shard_size: int = 64
    """Sources per shard file."""
    pairing: list[dict[str, str]] = field(default_factory=list)
    """Extra image->depth rules tried before the defaults: [{image: regex, depth: template, mask: template}]."""
    depth_h5_key: str = "depth"
    depth_png_scale: float = 0.001
    min_depth_valid: float = 0.01
    max_decode_pixels: int = 100_000_000
    max_upscale: float = 2.0
    """Sources needing more than this linear upscale to reach min_pixels are rejected (depth maps match their
    image's size, so they are never upscaled more)."""
    camera_files: list[str] = field(default_factory=lambda: list(DEFAULT_CAMERAS))
    """Intrinsics file of an image ({stem}, {name}, {ext}; relative to its folder), first found wins."""
    strict: bool = False
    """Stop at the first bad input instead of recording it in rejects.jsonl."""
    shard_index: int | None = None
    num_shards: int | None = None
    """This process's share of the shards; default from JOB_COMPLETION_INDEX or RANK/WORLD_SIZE."""
    workers: int = 1
    """Processes on this machine."""
    overwrite: bool = False

    def __post_init__(self) -> None:
        problems = []
        unknown = [t for t in self.tasks if t not in available_tasks()]
        if unknown:
            problems.append(f"tasks: unknown {unknown}; known tasks: {', '.join(available_tasks())}")
        if not self.tasks:
            problems.append("tasks: at least one task is needed")
        for name, opts in self.task_options.items():
            if name not in available_tasks():
                problems.append(f"task_options.{name}: unknown task; known tasks: {', '.join(available_tasks())}")
            elif not isinstance(opts, dict):
                problems.append(f"task_options.{name}: expected a mapping of option names")
            else:
                try:
                    build_config(get_task(name).Config, opts)
                except ConfigError as e:
                    problems += [f"task_options.{name}: {p}" for p in e.problems]
        for name in ("samples_per_task", "shard_size", "workers", "size_factor", "min_pixels"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.max_upscale >= 1:
            problems.append(f"max_upscale must be >= 1, got {self.max_upscale}")
        if self.max_pixels < self.min_pixels:
            problems.append(f"max_pixels ({self.max_pixels}) must be >= min_pixels ({self.min_pixels})")
        if not 1 <= self.image_quality <= 100:
            problems.append(f"image_quality must be in 1..100, got {self.image_quality}")
        if self.image_format not in ENCODE_FORMATS:
            problems.append(f"image_format must be one of {ENCODE_FORMATS}, got {self.image_format!r}")
        try:
            parse_rules(self.pairing)
        except ConfigError as e:
            problems += [f"pairing: {p}" for p in e.problems]
        if problems:
            raise ConfigError(problems)

    @property
    def budget(self) -> PixelBudget:
        return PixelBudget(self.min_pixels, self.max_pixels, self.size_factor)

    @property
    def depth_format(self) -> DepthFormat:
        return DepthFormat(self.depth_h5_key, self.depth_png_scale, self.min_depth_valid)


def resolve_partition(cfg: GenerateConfig, env: dict[str, str] | None = None) -> tuple[int, int]:
    """(shard_index, num_shards): flags, else a Kubernetes Indexed Job, else torchrun/PyTorchJob, else (0, 1)."""
    env = dict(os.environ) if env is None else env
    index, count = cfg.shard_index, cfg.num_shards
    if index is None and "JOB_COMPLETION_INDEX" in env:
        index = int(env["JOB_COMPLETION_INDEX"])
        count = count or int(env.get("SSRL_NUM_SHARDS", "0")) or None
        if count is None:
            raise ConfigError("JOB_COMPLETION_INDEX is set but the job count is not: pass --num-shards "
                              "(the Job's completions) or set SSRL_NUM_SHARDS")
    if index is None and "RANK" in env and "WORLD_SIZE" in env:
        index, count = int(env["RANK"]), count or int(env["WORLD_SIZE"])
    index, count = index or 0, count or 1
    if not 0 <= index < count:
        raise ConfigError(f"shard_index must be in [0, num_shards), got {index} of {count}")
    return index, count


def sample_rng(seed: int, source_id: str, task: str, k: int) -> np.random.Generator:
    """Each sample's own generator, so no sample depends on which process made which other sample."""
    digest = hashlib.blake2b(f"{seed}\0{source_id}\0{task}\0{k}".encode(), digest_size=16).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def identity(cfg: GenerateConfig, sources: list[Source]) -> dict[str, Any]:
    """What fixes the dataset's content: resolved config (without job fields), generator version, source ids."""
    config = {k: v for k, v in to_dict(cfg).items() if k not in JOB_FIELDS}
    config["task_options"] = {t: to_dict(build_config(get_task(t).Config, cfg.task_options.get(t, {})))
                              for t in cfg.tasks}
    ids = hashlib.sha256("\n".join(s.id for s in sources).encode()).hexdigest()
    num_shards = math.ceil(len(sources) / cfg.shard_size)
    return {"format": "ssrl.tasks/v1", "generator": {"name": "ssrl", "version": __version__}, "config": config,
            "sources": {"count": len(sources), "ids_sha256": ids}, "shards": num_shards}


# ------------------------------------------------------------------------------------------ one source
@dataclass
class _Context:
    cfg: GenerateConfig
    tasks: dict[str, tuple[ModuleType, Any]]

    @classmethod
    def build(cls, cfg: GenerateConfig) -> _Context:
        tasks = {t: (get_task(t), build_config(get_task(t).Config, cfg.task_options.get(t, {}))) for t in cfg.tasks}
        return cls(cfg, tasks)


def _json(value: Any) -> str:
    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"not JSON-serialisable: {type(o).__name__}")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=default)


def _read(path: str | None) -> bytes | None:
    """A source file's bytes (local path or store URL); an unreadable one is a reject, not a crash."""
    if path is None:
        return None
    try:
        return read_url(path)
    except StoreUnavailableError:
        raise  # the store itself is down: stop rather than reject every source
    except StoreError as e:
        raise RejectError(str(e)) from None


def _load_scene(source: Source, ctx: _Context) -> tuple[Scene, str | None, dict[str, Any]]:
    """Decode the image once at the budget's size; pair its depth (a depth problem only affects depth tasks)."""
    cfg = ctx.cfg
    data = _read(source.image)
    assert data is not None
    record: dict[str, Any] = {"id": source.id, "sha256": hashlib.sha256(data).hexdigest()}
    image, full_hw = decode_fitted(data, cfg.budget, max_decode_pixels=cfg.max_decode_pixels)
    _check_upscale(full_hw, image.shape[:2], cfg.max_upscale)
    depth, depth_problem = None, None
    needs_depth = any(module.REQUIRES_DEPTH for module, _ in ctx.tasks.values())
    if needs_depth and source.depth is None:
        depth_problem = "no depth map paired with this image"
    elif needs_depth:
        try:
            depth_data, mask_data = _read(source.depth), _read(source.mask)
            assert depth_data is not None
            record["depth_sha256"] = hashlib.sha256(depth_data).hexdigest()
            raw = read_depth(depth_data, source.depth, mask_data, fmt=cfg.depth_format, image_hw=full_hw)
            depth = resize_depth(raw, image.shape[:2])
            camera = _read(source.camera)
            if camera is not None:
                record["camera_sha256"] = hashlib.sha256(camera).hexdigest()
                intrinsics = read_intrinsics(camera, full_hw, image.shape[:2])
                return Scene(source.id, image, depth, cx=intrinsics.cx, fx=intrinsics.fx), None, record
        except RejectError as e:
            depth_problem = f"depth: {e}"
            depth = None
    return Scene(source.id, image, depth), depth_problem, record


def _check_upscale(src_hw: tuple[int, ...], out_hw: tuple[int, ...], max_upscale: float) -> None:
    """Refuse to invent pixels: a 12x9 image blown up ~50x to the budget teaches nothing."""
    factor = max(out_hw[0] / src_hw[0], out_hw[1] / src_hw[1])
    if factor > max_upscale:
        raise RejectError(f"image {src_hw[1]}x{src_hw[0]} too small: reaching min_pixels needs a {factor:.1f}x "
                          f"upscale (max_upscale {max_upscale:g})")


def _safe_name(source_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in source_id)[-120:]


def process_source(source: Source, ctx: _Context) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict]:
    """All samples of one source: (rows, rejects, source record). Bad input becomes rejects, never an error."""
    cfg = ctx.cfg
    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []

    def rejected(task: str | None, reason: str) -> None:
        if cfg.strict:
            raise RejectError(f"{source.image}: {reason}" + (f" (task {task})" if task else ""))
        rejects.append({"source_id": source.id, "path": source.image, "task": task, "reason": reason})

    try:
        scene, depth_problem, record = _load_scene(source, ctx)
    except RejectError as e:
        rejected(None, str(e))
        return rows, rejects, {"id": source.id, "rejected": True}
    for name, (module, task_cfg) in ctx.tasks.items():
        if module.REQUIRES_DEPTH and scene.depth is None:
            rejected(name, depth_problem or "no depth")
            continue
        for k in range(cfg.samples_per_task):
            try:
                sample = module.generate(scene, sample_rng(cfg.seed, source.id, name, k), task_cfg)
            except RejectError as e:
                rejected(name, str(e))
                continue
            sid = f"{source.id}#{name}#{k}"
            stem = f"{name}/{_safe_name(source.id)}-{k}"
            images = [{"bytes": encode_image(fit_budget(im, cfg.budget), cfg.image_format, quality=cfg.image_quality),
                       "path": f"{stem}-{i}.{cfg.image_format}"} for i, im in enumerate(sample.images)]
            rows.append({"id": sid, "problem": sample.problem, "answer": sample.answer, "images": images,
                         "task": name, "source_id": source.id, "meta": _json(sample.meta),
                         "space": module.answer_space_size(sample.meta)})
    return rows, rejects, record


# ------------------------------------------------------------------------------------------ one shard
def build_shard(cfg: GenerateConfig, sources: list[Source], shard: int,
                progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write one shard and its commit record; returns the record."""
    ctx = _Context.build(cfg)
    store = open_store(cfg.output)
    rejects: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    stats: dict[str, dict[str, Any]] = {}
    store.discard_partial(shard_name(shard))
    with ShardWriter(store, shard_name(shard)) as writer:
        for source in sources:
            rows, rej, rec = process_source(source, ctx)
            for row in rows:
                st = stats.setdefault(row["task"], {"samples": 0, "space": row["space"], "answers": Counter()})
                st["samples"] += 1
                st["answers"][row["answer"]] += 1
                writer.add({k: v for k, v in row.items() if k != "space"})
            rejects += rej
            records.append(rec)
            if progress:
                progress(1)
    for st in stats.values():
        st["answers"] = dict(sorted(st["answers"].items()))
    record = {"shard": shard, "file": shard_name(shard), "rows": writer.rows, "bytes": writer.bytes,
              "sha256": writer.sha256, "tasks": dict(sorted(stats.items())), "rejects": rejects, "sources": records}
    store.write_bytes(SHARD_RECORD.format(shard), _json(record).encode())
    return record


def _build_shard_job(args: tuple[GenerateConfig, list[Source], int]) -> dict[str, Any]:
    return build_shard(*args)


# ------------------------------------------------------------------------------------------ the run
def keep_freed_memory() -> bool:
    """Let glibc keep freed heap memory for the next sample instead of giving it back to the kernel.

    Every sample allocates and frees megabytes of pixels and depth. By default glibc returns such blocks to the
    kernel and the next sample faults them in again, page by page: 2-5k page faults, 8-11 ms of system time per
    sample on a 2-core KVM guest, a quarter of the sample (bench/README.md). Blocks below 64 MiB now come from
    the heap and up to 256 MiB of free heap is kept, so a process holds about its largest sample's memory
    (peak RSS stays flat in the corpus size: bench section 3). A process-wide setting, applied by ``run`` to
    the processes it generates in; False (nothing changed) where the C library is not glibc.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # <malloc.h>
    return all(mallopt(option, value) == 1 for option, value in (
        (m_mmap_threshold, 64 << 20), (m_trim_threshold, 256 << 20), (m_top_pad, 16 << 20)))


@dataclass
class GenerateResult:
    store: Store
    shards_total: int
    shards_mine: list[int]
    shards_skipped: list[int]
    manifest: dict[str, Any] | None


def committed(store: Store, shard: int) -> bool:
    """A shard counts only when its record exists and the file it describes is there at the recorded size."""
    key = SHARD_RECORD.format(shard)
    if not store.exists(key):
        return False
    try:
        rec = json.loads(store.read_bytes(key))
        return store.exists(rec["file"]) and store.size(rec["file"]) == rec["bytes"]
    except (ValueError, KeyError, SSRLError):
        return False


def _check_identity(store: Store, ident: dict[str, Any], overwrite: bool) -> None:
    if store.exists(GENERATION):
        old = json.loads(store.read_bytes(GENERATION))
        if old == json.loads(_json(ident)):
            return
        if not overwrite:
            diff = sorted({k for k in set(old["config"]) | set(ident["config"])
                           if old["config"].get(k) != ident["config"].get(k)})
            what = (", ".join(f"config.{k}" for k in diff) or
                    ("sources" if old.get("sources") != ident["sources"] else "generator version"))
            raise ConfigError(f"{store.url} already holds a dataset made differently (differs in: {what}); "
                              "choose another --output or pass --overwrite")
        for key in store.list():
            store.delete(key)
    store.write_bytes(GENERATION, _json(ident).encode())


def shards_of(sources: list[Source], shard_size: int) -> Iterator[tuple[int, list[Source]]]:
    for i in range(math.ceil(len(sources) / shard_size)):
        yield i, sources[i * shard_size : (i + 1) * shard_size]


def run(cfg: GenerateConfig, progress: Callable[[int], None] | None = None,
        on_plan: Callable[[int], None] | None = None) -> GenerateResult:
    """Generate this process's shards, then the manifest if every shard is committed."""
    if not cfg.inputs:
        raise ConfigError("inputs: give at least one folder, glob or list file of images")
    index, count = resolve_partition(cfg)
    if cfg.overwrite and count > 1:
        raise ConfigError("--overwrite cannot be combined with several shards; clear the output first")
    sources = discover(cfg.inputs, parse_rules(cfg.pairing) + list(DEFAULT_RULES), cameras=cfg.camera_files)
    store = open_store(cfg.output)
    ident = identity(cfg, sources)
    _check_identity(store, ident, cfg.overwrite)
    mine = [(i, group) for i, group in shards_of(sources, cfg.shard_size) if i % count == index]
    todo = [(i, group) for i, group in mine if not committed(store, i)]
    skipped = sorted({i for i, _ in mine} - {i for i, _ in todo})
    if on_plan:
        on_plan(sum(len(g) for _, g in todo))
    if cfg.workers == 1 or len(todo) <= 1:
        keep_freed_memory()
        for i, group in todo:
            build_shard(cfg, group, i, progress)
    else:
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=min(cfg.workers, len(todo)), mp_context=ctx,
                                    initializer=keep_freed_memory) as pool:
            futures = {pool.submit(_build_shard_job, (cfg, group, i)): len(group) for i, group in todo}
            for fut in cf.as_completed(futures):
                fut.result()
                if progress:
                    progress(futures[fut])
    manifest = finalize(store, ident) if all(committed(store, i) for i in range(ident["shards"])) else None
    return GenerateResult(store, ident["shards"], [i for i, _ in mine], skipped, manifest)


def finalize(store: Store, ident: dict[str, Any]) -> dict[str, Any]:
    """Stream the shard records into rejects.jsonl, sources.jsonl and, last, manifest.json (idempotent)."""
    builder = ManifestBuilder()
    digests = {"rejects": hashlib.sha256(), "sources": hashlib.sha256()}
    with store.open_write("rejects.jsonl") as rejects, store.open_write("sources.jsonl") as sources:
        for i in range(ident["shards"]):
            record = json.loads(store.read_bytes(SHARD_RECORD.format(i)))
            for name, out in (("rejects", rejects), ("sources", sources)):
                for item in record[name]:
                    line = _json(item).encode() + b"\n"
                    out.write(line)
                    digests[name].update(line)
            builder.add(record)
    manifest = builder.build(ident, rejects_sha256=digests["rejects"].hexdigest(),
                             sources_sha256=digests["sources"].hexdigest())
    store.write_bytes("manifest.json", json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n")
    return manifest
