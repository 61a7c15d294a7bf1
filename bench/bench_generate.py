"""Benchmark of ``ssrl generate``: per-task cost against the I/O floor, shared decode, peak RSS, worker scaling.

Run from the repository root::

    .venv/bin/python bench/bench_generate.py            # full run (~5 minutes on 2 cores)
    .venv/bin/python bench/bench_generate.py --quick    # smoke run (~1.5 minutes)

Prints tables and writes ``bench/results/generate.json`` (the folder is git-ignored; synthetic corpora are
cached there too). See ``bench/README.md`` for what every number means.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import machine  # bench/machine.py, beside this script
import numpy as np
import PIL
from PIL import Image

from ssrl.dataset.generate import GenerateConfig, _Context, keep_freed_memory, process_source, run, sample_rng
from ssrl.sources.depth import read_depth
from ssrl.sources.discover import Source
from ssrl.sources.imageio import decode_fitted, encode_image, fit_budget, resize_depth, resize_rgb, smart_resize
from ssrl.sources.synth import SynthConfig, render_scene, write_scene
from ssrl.tasks import DEFAULT_TASKS
from ssrl.tasks.base import Scene

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
REFERENCE = Path("/work/shared/data/reference-samples")

#: Seconds per sample of the published Spatial-SSRL scripts on a comparable 2-core machine, and their
#: ratio to their own I/O floor (given in the brief; not re-measured here).
UPSTREAM: dict[str, tuple[str, str]] = {
    "shuffle": ("0.042", "~1.2x"),
    "flip": ("0.043", "~1.2x"),
    "crop": ("0.035", "~1.2x"),
    "depth_order": ("0.56", "21x"),
    "position": ("6-17", "200-380x"),
}
GOAL_RATIO = 1.2

#: (task, input) pairs of the per-task table; the inputs are the paper's reference samples (or stand-ins).
CASES: list[tuple[str, str]] = [
    ("shuffle", "rgb"),
    ("flip", "rgb"),
    ("crop", "rgb"),
    ("rotation", "rgb"),
    ("depth_order", "diode"),
    ("depth_order", "megadepth"),
    ("position", "megadepth"),
    ("position", "diode"),
]


# ------------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class Settings:
    min_rounds: int
    """Timing rounds per measurement (each round runs every compared function once)."""
    min_seconds: float
    max_rounds: int
    rss_sizes: tuple[int, ...]
    scaling_scenes: int
    scaling_shard_size: int
    unique_scenes: int
    """Distinct rendered scenes; larger corpora hard-link them under new names (new ids, new samples)."""

    @classmethod
    def pick(cls, quick: bool) -> Settings:
        if quick:
            return cls(3, 0.5, 10, (8, 32), 16, 4, 8)
        return cls(7, 3.0, 40, (16, 64, 256), 64, 8, 32)


# ------------------------------------------------------------------------------------------ timing
@dataclass
class Timing:
    median_s: float
    min_s: float
    runs: int
    cpu_share: float
    """Process CPU time / wall time over the runs: well below 1 means something else took the CPU."""
    others: float
    """CPU cores used by other processes (and stolen by the hypervisor) on average meanwhile."""
    min_cpu_s: float = 0.0
    """Fastest process CPU time of one call: what a shared machine's load moves least."""

    @property
    def ms(self) -> float:
        return self.median_s * 1000


def measure(fns: dict[str, Callable[[], object]], settings: Settings) -> dict[str, Timing]:
    """Median wall time of each function, run in interleaved rounds (a, b, c, a, b, c, ...).

    Interleaving exposes every function to the same machine conditions, so ratios between them hold even
    when a shared machine slows down for a while. One warm-up call each, then rounds until there are at
    least ``min_rounds`` of them and ``min_seconds`` have passed (at most ``max_rounds``).
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    cpus: dict[str, list[float]] = {name: [] for name in fns}
    rounds = 0
    start, cpu_start, busy_start = time.perf_counter(), time.process_time(), machine_busy_s()
    while rounds < settings.min_rounds or (
        time.perf_counter() - start < settings.min_seconds and rounds < settings.max_rounds
    ):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t0)
            cpus[name].append(time.process_time() - c0)
        rounds += 1
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    others = max(0.0, machine_busy_s() - busy_start - cpu) / wall
    return {name: Timing(statistics.median(ts), min(ts), len(ts), cpu / wall, others, min(cpus[name]))
            for name, ts in times.items()}


# ------------------------------------------------------------------------------------------ machine
def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores, including time stolen by a hypervisor)."""
    import psutil

    t = psutil.cpu_times()
    return sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))


def machine_info() -> dict[str, Any]:
    import cv2
    import h5py
    import scipy

    info = machine.machine_info(numpy=np.__version__, pillow=PIL.__version__, scipy=scipy.__version__,
                                h5py=h5py.__version__, opencv=cv2.__version__)
    info["ssrl_sources_sha256"] = sources_digest()
    return info


def sources_digest() -> str:
    """Digest of the ``ssrl`` package's Python sources: which code the figures belong to."""
    import ssrl

    package = Path(ssrl.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------------------ inputs
def _synthetic_inputs(folder: Path) -> dict[str, Source]:
    """Stand-ins at the reference samples' sizes and formats, for machines without the reference data."""
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    rgb, diode, mega = folder / "rgb.png", folder / "diode.png", folder / "megadepth.jpg"
    if not rgb.exists():
        scene = render_scene(np.random.default_rng([7, 0]), SynthConfig(width=902, height=1186))
        Image.fromarray(scene.image).save(rgb, "PNG")
    if not diode.exists():
        scene = render_scene(np.random.default_rng([7, 1]), SynthConfig(width=1024, height=768))
        write_scene(scene, folder, "diode")
    if not mega.exists():
        scene = render_scene(np.random.default_rng([7, 2]), SynthConfig(width=1600, height=1064))
        depth = np.where(np.isfinite(scene.depth), scene.depth, 0.0).astype(np.float32)
        with h5py.File(folder / "megadepth.h5", "w") as f:
            f.create_dataset("depth", data=depth, chunks=(64, 64), compression="gzip", compression_opts=9)
        Image.fromarray(scene.image).save(mega, "JPEG", quality=95)
    return {
        "rgb": Source("rgb.png", str(rgb)),
        "diode": Source("diode.png", str(diode), str(folder / "diode_depth.npy"), str(folder / "diode_depth_mask.npy")),
        "megadepth": Source("megadepth.jpg", str(mega), str(folder / "megadepth.h5")),
    }


def load_inputs(reference: Path) -> tuple[dict[str, Source], str]:
    """The paper's reference samples, read in place (never copied), or synthetic stand-ins."""
    files = ["RGB_img.png", "RGB-D_img3.png", "RGB-D_depth3.npy", "RGB-D_depth_mask3.npy", "RGB-D_img1.jpg",
             "RGB-D_depth1.h5"]
    if all((reference / f).is_file() for f in files):
        r = str(reference)
        return {
            "rgb": Source("RGB_img.png", f"{r}/RGB_img.png"),
            "diode": Source("RGB-D_img3.png", f"{r}/RGB-D_img3.png", f"{r}/RGB-D_depth3.npy",
                            f"{r}/RGB-D_depth_mask3.npy"),
            "megadepth": Source("RGB-D_img1.jpg", f"{r}/RGB-D_img1.jpg", f"{r}/RGB-D_depth1.h5"),
        }, f"reference samples in {reference}"
    return _synthetic_inputs(RESULTS / "synthetic-inputs"), "synthetic stand-ins (reference samples not found)"


def describe_input(source: Source) -> str:
    with Image.open(source.image) as img:
        w, h = img.size
        mode = img.mode
    depth = f" + {Path(source.depth).suffix}" if source.depth else ""
    return f"{Path(source.image).suffix[1:]} {w}x{h} {mode}{depth}"


# ------------------------------------------------------------------------------------------ 1. per task
def _read(path: str | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


def _load_depth(source: Source, cfg: GenerateConfig, full_hw: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    depth_data = _read(source.depth)
    assert depth_data is not None and source.depth is not None
    raw = read_depth(depth_data, source.depth, _read(source.mask), fmt=cfg.depth_format, image_hw=full_hw)
    return resize_depth(raw, out_hw)


def _decode(source: Source, cfg: GenerateConfig) -> tuple[np.ndarray, tuple[int, int]]:
    data = _read(source.image)
    assert data is not None
    return decode_fitted(data, cfg.budget, max_decode_pixels=cfg.max_decode_pixels)


def _region(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """An (h, w) piece of the decoded input: real image content at an output's size (wrapped if larger)."""
    h, w = hw
    if h > image.shape[0] or w > image.shape[1]:
        image = np.pad(image, ((0, max(0, h - image.shape[0])), (0, max(0, w - image.shape[1])), (0, 0)), "wrap")
    return image[:h, :w]


def output_shapes(rows: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(H, W) of every encoded output image, read from the PNG headers."""
    shapes = []
    for row in rows:
        for im in row["images"]:
            with Image.open(io.BytesIO(im["bytes"])) as img:
                shapes.append((img.size[1], img.size[0]))
    return shapes


def io_floor(source: Source, cfg: GenerateConfig, shapes: Sequence[tuple[int, int]], needs_depth: bool) -> None:
    """Read + decode the input (+ read its depth), then encode as many images of the same sizes: nothing else."""
    image, full_hw = _decode(source, cfg)
    if needs_depth:
        _load_depth(source, cfg, full_hw, image.shape[:2])
    for hw in shapes:
        encode_image(_region(image, hw), cfg.image_format)


def bench_task(task: str, source: Source, settings: Settings) -> dict[str, Any]:
    """Full per-sample path (``process_source``), its I/O floor, and the stages it is made of."""
    cfg = GenerateConfig(tasks=[task])
    ctx = _Context.build(cfg)
    module, task_cfg = ctx.tasks[task]
    rows, rejects, _ = process_source(source, ctx)
    if rejects or not rows:
        raise RuntimeError(f"{task} rejected {source.image}: {rejects}")
    shapes = output_shapes(rows)
    needs_depth = bool(module.REQUIRES_DEPTH)

    image, full_hw = _decode(source, cfg)
    depth = _load_depth(source, cfg, full_hw, image.shape[:2]) if needs_depth else None
    scene = Scene(source.id, image, depth)
    rng_args = (cfg.seed, source.id, task, 0)
    sample = module.generate(scene, sample_rng(*rng_args), task_cfg)
    fitted = [fit_budget(im, cfg.budget) for im in sample.images]

    fns: dict[str, Callable[[], object]] = {
        "task": lambda: process_source(source, ctx),
        "floor": lambda: io_floor(source, cfg, shapes, needs_depth),
        "decode": lambda: _decode(source, cfg),
        "generate": lambda: module.generate(scene, sample_rng(*rng_args), task_cfg),
        "fit": lambda: [fit_budget(im, cfg.budget) for im in sample.images],
        "encode": lambda: [encode_image(im, cfg.image_format) for im in fitted],
    }
    if needs_depth:
        fns["depth"] = lambda: _load_depth(source, cfg, full_hw, image.shape[:2])
    timings = measure(fns, settings)
    total, floor = timings["task"], timings["floor"]
    stage_ms = {k: (timings[k].ms if k in timings else 0.0) for k in ("decode", "depth", "generate", "fit", "encode")}
    stage_ms["other"] = total.ms - sum(stage_ms.values())
    return {
        "task": task,
        "input": source.id,
        "decoded_hw": list(image.shape[:2]),
        "outputs": [list(s) for s in shapes],
        "output_bytes": sum(len(im["bytes"]) for row in rows for im in row["images"]),
        "task_s": total.median_s,
        "samples_per_s": 1 / total.median_s,
        "floor_s": floor.median_s,
        "ratio": total.median_s / floor.median_s,
        "stages_ms": stage_ms,
        "runs": total.runs,
        "task_min_s": total.min_s,
        "floor_min_s": floor.min_s,
        "cpu_share": total.cpu_share,
        "others_cores": total.others,
    }


def bench_tasks(inputs: dict[str, Source], settings: Settings) -> list[dict[str, Any]]:
    results = []
    for task, key in CASES:
        res = bench_task(task, inputs[key], settings)
        res["input_kind"] = key
        results.append(res)
        busy = "" if res["cpu_share"] > 0.9 and res["others_cores"] < 0.2 else (
            f"  (busy machine? cpu share {res['cpu_share']:.2f}, others {res['others_cores']:.2f} cores)")
        print(f"  {task:12s} {key:10s} {res['task_s'] * 1000:7.1f} ms  floor {res['floor_s'] * 1000:7.1f} ms  "
              f"ratio {res['ratio']:.2f}{busy}", flush=True)
    return results


# ------------------------------------------------------------------------------------------ decoder overhead
def bench_decoder(inputs: dict[str, Source], settings: Settings) -> list[dict[str, Any]]:
    """``decode_fitted`` against a bare Pillow decode + RGB convert + the same Lanczos resize."""
    cfg = GenerateConfig()
    out = []
    for key, source in inputs.items():
        data = Path(source.image).read_bytes()

        def bare(data: bytes = data) -> np.ndarray:
            with Image.open(io.BytesIO(data)) as img:
                rgb = np.asarray(img.convert("RGB"))
            return resize_rgb(rgb, smart_resize(*rgb.shape[:2], cfg.budget))

        t = measure({"ours": lambda data=data: decode_fitted(data, cfg.budget), "plain": bare}, settings)
        out.append({"input": key, "file": describe_input(source), "decode_fitted_ms": t["ours"].ms,
                    "pillow_plain_ms": t["plain"].ms})
    return out


# ------------------------------------------------------------------------------------------ 2. decode once
def bench_decode_once(source: Source, key: str, settings: Settings) -> dict[str, Any]:
    """All five default tasks in one ``process_source`` call against five single-task calls."""
    together = _Context.build(GenerateConfig(tasks=list(DEFAULT_TASKS)))
    rows, rejects, _ = process_source(source, together)
    if rejects:
        raise RuntimeError(f"all-task run rejected {source.image}: {rejects}")
    fns: dict[str, Callable[[], object]] = {"together": lambda: process_source(source, together)}
    for task in DEFAULT_TASKS:
        ctx = _Context.build(GenerateConfig(tasks=[task]))
        fns[task] = lambda ctx=ctx: process_source(source, ctx)
    timings = measure(fns, settings)
    all_t = timings["together"]
    singles = {task: timings[task].median_s for task in DEFAULT_TASKS}
    separate = sum(singles.values())
    return {"input": key, "samples": len(rows), "together_s": all_t.median_s, "separate_s": separate,
            "singles_s": singles, "saved_s": separate - all_t.median_s, "speedup": separate / all_t.median_s,
            "others_cores": all_t.others}


# ------------------------------------------------------------------------------------------ corpora
def make_corpus(n: int, settings: Settings) -> Path:
    """``n`` synthetic RGB-D scenes (DIODE layout); distinct scenes are rendered once and hard-linked."""
    unique = RESULTS / "synth-unique"
    unique.mkdir(parents=True, exist_ok=True)
    u = min(n, settings.unique_scenes)
    for i in range(u):
        if not (unique / f"synth-{i:05d}.camera.json").exists():  # write_scene writes it last
            write_scene(render_scene(np.random.default_rng([0, i])), unique, f"synth-{i:05d}")
    corpus = RESULTS / f"corpus-{n}"
    suffixes = (".png", "_depth.npy", "_depth_mask.npy")
    if corpus.exists() and len(list(corpus.iterdir())) == n * len(suffixes):
        return corpus
    shutil.rmtree(corpus, ignore_errors=True)
    corpus.mkdir(parents=True)
    for j in range(n):
        for suffix in suffixes:
            src, dst = unique / f"synth-{j % u:05d}{suffix}", corpus / f"scene-{j:05d}{suffix}"
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
    return corpus


# ------------------------------------------------------------------------------------------ child mode
def peak_rss_kib(pid: int | str = "self") -> int:
    """Peak resident set of a process (VmHWM), in KiB.

    ``ru_maxrss`` is not used: Linux carries a forked parent's peak into the child across ``exec``, so a
    child started by a big parent would report the parent's memory.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss if pid == "self" else 0


class DescendantPeak(threading.Thread):
    """Polls the peak RSS (VmHWM, which only grows) of every descendant process until stopped."""

    def __init__(self, interval_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.peaks: dict[int, int] = {}
        self._done = threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._done.wait(self.interval_s):
            for child in me.children(recursive=True):
                kib = peak_rss_kib(child.pid)
                self.peaks[child.pid] = max(kib, self.peaks.get(child.pid, 0))

    def stop(self) -> int:
        """Largest peak of any descendant, in KiB."""
        self._done.set()
        self.join()
        return max(self.peaks.values(), default=0)


def child_run(corpus: str, workers: int, shard_size: int) -> dict[str, Any]:
    """Body of a fresh process: ``ssrl.dataset.generate.run`` on ``corpus`` into a temporary folder."""
    base_rss = peak_rss_kib()
    watcher = DescendantPeak()
    watcher.start()
    # Peak until the last source is done (before the manifest is built). Sampled at every source as well,
    # because VmHWM may miss a peak whose memory was handed back with madvise rather than munmap.
    last_progress = [base_rss]
    with tempfile.TemporaryDirectory(prefix="ssrl-bench-") as out:
        cfg = GenerateConfig(inputs=[corpus], output=out, workers=workers, shard_size=shard_size)
        t0, cpu0, busy0 = time.perf_counter(), os.times(), machine_busy_s()
        result = run(cfg, progress=lambda _n: last_progress.__setitem__(0, max(last_progress[0], peak_rss_kib())))
        wall, cpu1, busy1 = time.perf_counter() - t0, os.times(), machine_busy_s()
        assert result.manifest is not None
        samples = result.manifest["num_samples"]
    worker_peak = watcher.stop()
    cpu = (cpu1.user - cpu0.user + cpu1.system - cpu0.system + cpu1.children_user - cpu0.children_user
           + cpu1.children_system - cpu0.children_system)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "others_cores": max(0.0, busy1 - busy0 - cpu) / wall,
        "samples": samples,
        "shards": result.shards_total,
        "baseline_rss_mib": base_rss / 1024,
        "peak_rss_mib": max(peak_rss_kib(), last_progress[0]) / 1024,
        "peak_sources_rss_mib": last_progress[0] / 1024,
        "peak_worker_rss_mib": worker_peak / 1024,
    }


def spawn_child(corpus: Path, workers: int, shard_size: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", str(corpus), "--workers", str(workers), "--shard-size",
           str(shard_size)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child run failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ 3. peak RSS
def bench_rss(settings: Settings) -> list[dict[str, Any]]:
    """Peak RSS of ``run`` (workers=1, default shard size) per corpus size, one fresh process each.

    The processes run side by side (at most one per core): only memory is reported here, never time.
    """
    shard_size = GenerateConfig().shard_size
    corpora = {n: make_corpus(n, settings) for n in settings.rss_sizes}
    with cf.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        futures = {n: pool.submit(spawn_child, path, 1, shard_size) for n, path in corpora.items()}
        results = []
        for n in settings.rss_sizes:
            res = futures[n].result()
            results.append({"scenes": n, "shard_size": shard_size, **res})
            print(f"  {n:4d} scenes  peak RSS {res['peak_rss_mib']:.0f} MiB", flush=True)
    return results


# ------------------------------------------------------------------------------------------ 4. workers
def bench_workers(settings: Settings) -> list[dict[str, Any]]:
    """Wall time of ``run`` with 1 and 2 workers on the same corpus, each in a fresh process, one at a time."""
    corpus = make_corpus(settings.scaling_scenes, settings)
    results = []
    for workers in (1, 2):
        res = spawn_child(corpus, workers, settings.scaling_shard_size)
        res.update(workers=workers, scenes=settings.scaling_scenes, shard_size=settings.scaling_shard_size,
                   samples_per_s=res["samples"] / res["wall_s"])
        results.append(res)
        busy = "" if res["others_cores"] < 0.2 else f"  (busy machine? others used {res['others_cores']:.2f} cores)"
        print(f"  workers={workers}  {res['wall_s']:.1f} s  {res['samples_per_s']:.2f} samples/s{busy}", flush=True)
    for res in results:
        res["speedup"] = results[0]["wall_s"] / res["wall_s"]
    return results


# ------------------------------------------------------------------------------------------ report
def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in rows]
    return "\n".join(out)


def report(res: dict[str, Any]) -> str:
    parts = []
    m = res["machine"]
    parts.append(f"Machine: {m['cpu']}, {m['cpu_count']} cores, {m.get('memory_gib', '?')} GiB; "
                 f"Python {m['python']}, numpy {m['numpy']}, "
                 f"Pillow {m['pillow']}, scipy {m['scipy']}, h5py {m['h5py']}; {m['date']}; "
                 f"ssrl sources {m['ssrl_sources_sha256']}")
    parts.append(f"Inputs: {res['inputs_note']}; settings: {res['settings']}")
    others = max(r["others_cores"] for r in res["tasks"])
    parts.append(f"Other load during the per-task timings: at most {others:.2f} cores used by other processes"
                 + (" -- timings may be inflated" if others >= 0.2 else ""))

    parts.append(report_side_by_side(res["side_by_side"]))
    rows = []
    for r in res["tasks"]:
        up = UPSTREAM.get(r["task"], ("-", "-"))
        st = r["stages_ms"]
        rows.append([r["task"], r["input_kind"], "x".join(map(str, r["decoded_hw"])), str(len(r["outputs"])),
                     f"{r['task_s'] * 1000:.0f}", f"{r['samples_per_s']:.2f}", f"{r['floor_s'] * 1000:.0f}",
                     f"{r['ratio']:.2f}" + ("" if r["ratio"] <= GOAL_RATIO else " *"),
                     f"{st['decode']:.0f}", f"{st['depth']:.0f}", f"{st['generate']:.0f}", f"{st['fit']:.0f}",
                     f"{st['encode']:.0f}", f"{st['other']:.0f}", f"{up[0]} ({up[1]})"])
    parts.append("1. Per task (one sample; ms = median wall time; * = above the 1.2x goal)\n" + table(
        ["task", "input", "decoded", "imgs", "task ms", "samples/s", "floor ms", "ratio", "decode", "depth",
         "generate", "fit", "encode", "other", "upstream s (ratio)"], rows))

    rows = [[d["input"], d["file"], f"{d['decode_fitted_ms']:.0f}", f"{d['pillow_plain_ms']:.0f}"]
            for d in res["decoder"]]
    parts.append("Decoder: ssrl decode_fitted vs bare Pillow decode + convert('RGB') + same Lanczos resize (ms)\n"
                 + table(["input", "file", "decode_fitted", "pillow plain"], rows))

    rows = [[d["input"], str(d["samples"]), f"{d['together_s'] * 1000:.0f}", f"{d['separate_s'] * 1000:.0f}",
             f"{d['saved_s'] * 1000:.0f}", f"{d['speedup']:.2f}x"] for d in res["decode_once"]]
    parts.append("2. Decode once: five default tasks in one process_source call vs five single-task calls\n"
                 + table(["input", "samples", "together ms", "separate ms", "saved ms", "speedup"], rows))

    rows = [[str(d["scenes"]), str(d["shards"]), str(d["samples"]), f"{d['baseline_rss_mib']:.0f}",
             f"{d['peak_sources_rss_mib']:.0f}", f"{d['peak_rss_mib']:.0f}"] for d in res["rss"]]
    parts.append("3. Peak RSS of run(workers=1, shard_size=64), one fresh process per corpus\n"
                 + table(["scenes", "shards", "samples", "after import MiB", "peak until last source MiB",
                          "peak MiB"], rows))

    rows = [[str(d["workers"]), str(d["scenes"]), str(d["shards"]), f"{d['wall_s']:.1f}",
             f"{d['samples_per_s']:.2f}", f"{d['speedup']:.2f}x", f"{d['peak_rss_mib']:.0f}",
             f"{d['peak_worker_rss_mib']:.0f}", f"{d['cpu_s']:.1f}", f"{d['others_cores']:.2f}"]
            for d in res["workers"]]
    parts.append(f"4. Worker scaling (os.cpu_count() = {m['cpu_count']})\n" + table(
        ["workers", "scenes", "shards", "wall s", "samples/s", "speedup", "parent RSS MiB", "worker RSS MiB",
         "CPU s", "others (cores)"], rows))
    return "\n\n".join(parts)


# ------------------------------------------------------------------------------------------ 0. side by side
#: The issue's recorded upstream figures (s/sample, whole script, same kind of 2-core machine), for when no
#: upstream checkout is given. Labelled "recorded" in the report, never mixed with measured ones.
UPSTREAM_RECORDED = {"shuffle": 0.042, "flip": 0.045, "crop": 0.045, "depth_order": 0.59, "position_near": 6.2,
                     "position_far": 20.0}
#: (row, ssrl task, input, upstream task). Upstream's Position.py makes "far" questions from img1 and "near"
#: ones from img2; ssrl draws the kind itself (50/50), so its position rows mix both kinds.
SIDE_BY_SIDE = [
    ("shuffle", "shuffle", "rgb", "shuffle"),
    ("flip", "flip", "rgb", "flip"),
    ("crop", "crop", "rgb", "crop"),
    ("depth_order", "depth_order", "diode", "depth_order"),
    ("position (img1; upstream far)", "position", "megadepth", "position_far"),
    ("position (img2; upstream near)", "position", "megadepth2", "position_near"),
]
PAPER_SAMPLES = 81_000


def sbs_inputs(reference: Path) -> dict[str, dict[str, str]]:
    """The reference files each side-by-side input is made of (``image``, ``depth``, ``mask``)."""
    r = reference
    found = {
        "rgb": {"image": r / "RGB_img.png"},
        "diode": {"image": r / "RGB-D_img3.png", "depth": r / "RGB-D_depth3.npy", "mask": r / "RGB-D_depth_mask3.npy"},
        "megadepth": {"image": r / "RGB-D_img1.jpg", "depth": r / "RGB-D_depth1.h5"},
        "megadepth2": {"image": r / "RGB-D_img2.jpg", "depth": r / "RGB-D_depth2.h5"},
    }
    return {k: {role: str(f) for role, f in v.items()} for k, v in found.items()
            if all(f.is_file() for f in v.values())}


def sbs_corpus(files: dict[str, dict[str, str]], counts: dict[str, int], name: str) -> tuple[Path, list[dict]]:
    """Hard links named so ssrl pairs them (DIODE ``x_depth.npy``, MegaDepth ``x.h5``); each name is a new
    source id, so every copy yields different samples. Returns the folder and the same files as upstream
    driver items."""
    corpus = RESULTS / "side-by-side" / name
    shutil.rmtree(corpus, ignore_errors=True)
    corpus.mkdir(parents=True)
    items = []
    for key, n in counts.items():
        src = files[key]
        for j in range(n):
            stem = corpus / f"{key}-{j:04d}"
            item = {"image": f"{stem}{Path(src['image']).suffix}"}
            if "depth" in src:
                item["depth"] = f"{stem}_depth.npy" if "mask" in src else f"{stem}.h5"
            if "mask" in src:
                item["mask"] = f"{stem}_depth_mask.npy"
            for role, dst in item.items():
                try:
                    os.link(src[role], dst)
                except OSError:
                    shutil.copyfile(src[role], dst)
            items.append(item)
    return corpus, items


def run_ssrl(corpus: Path, tasks: list[str], fmt: str, workers: int = 1) -> dict[str, Any]:
    """The whole ``ssrl generate`` CLI in a fresh process: wall time, samples, image bytes per task."""
    from ssrl.dataset.shards import iter_rows

    with tempfile.TemporaryDirectory(prefix="ssrl-sbs-") as out:
        cmd = [str(Path(sys.executable).with_name("ssrl")), "generate", "-i", str(corpus), "-o", out, "-q",
               "-t", ",".join(tasks), "--workers", str(workers), "--shard-size", "4", "--set", f"image_format={fmt}"]
        t0, cpu0 = time.perf_counter(), children_cpu_s()
        subprocess.run(cmd, check=True, capture_output=True)
        wall, cpu = time.perf_counter() - t0, children_cpu_s() - cpu0
        per_task: dict[str, list[int]] = {}
        for row in iter_rows(out):
            acc = per_task.setdefault(row["task"], [0, 0])
            acc[0] += 1
            acc[1] += sum(len(im["bytes"]) for im in row["images"])
    return {"wall_s": wall, "cpu_s": cpu, "samples": sum(v[0] for v in per_task.values()),
            "bytes": {t: v[1] for t, v in per_task.items()}, "per_task": {t: v[0] for t, v in per_task.items()}}


def run_upstream(checkout: Path, python: str, task: str, items: list[dict]) -> dict[str, Any]:
    """The published script's function over ``items`` in a fresh process (bench/upstream_driver.py)."""
    with tempfile.TemporaryDirectory(prefix="upstream-sbs-") as out:
        listing = Path(out) / "inputs.json"
        listing.write_text(json.dumps(items))
        t0, cpu0 = time.perf_counter(), children_cpu_s()
        r = subprocess.run([python, str(ROOT / "upstream_driver.py"), str(checkout), task, f"{out}/out", str(listing)],
                           check=True, capture_output=True, text=True)
        wall, cpu = time.perf_counter() - t0, children_cpu_s() - cpu0
    res = json.loads(r.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "cpu_s": cpu, **res}


def children_cpu_s() -> float:
    """CPU seconds of every finished child process (and theirs): what a run costs whatever else the machine
    runs. On a shared 2-core box wall time swings by 2x with other people's jobs; CPU time far less."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def slope(small: dict[str, Any], large: dict[str, Any], key: str = "cpu_s") -> float:
    """Seconds per sample from two corpus sizes: start-up and imports cancel."""
    return (large[key] - small[key]) / max(1, large["samples"] - small["samples"])


def fastest(kept: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per corpus size, the run with the least CPU so far. The slope of the per-size minima, not the least of
    the per-round slopes: a round whose small run was slowed by other load gives a slope too low."""
    return new if not kept else [min(a, b, key=lambda run: run["cpu_s"]) for a, b in zip(kept, new, strict=True)]


def bench_side_by_side(reference: Path, checkout: Path | None, python: str, sizes: tuple[int, int],
                       position_sizes: tuple[int, int], rounds: int) -> dict[str, Any]:
    """Section 0: whole-CLI seconds per sample, ssrl (JPEG, PNG) and upstream on the same files, same run."""
    files = sbs_inputs(reference)
    rows = []
    for label, task, key, up_task in SIDE_BY_SIDE:
        if key not in files:
            continue
        corpora = [sbs_corpus(files, {key: k}, f"{key}-{k}") for k in sizes]
        # upstream's position takes 6-20 s a sample: its own smaller corpora, one round
        up_sizes = position_sizes if task == "position" else sizes
        up_corpora = corpora if up_sizes == sizes else [sbs_corpus(files, {key: k}, f"{key}-up-{k}") for k in up_sizes]
        runs: dict[str, list[dict[str, Any]]] = {"jpeg": [], "png": [], "upstream": []}
        for r in range(rounds):  # interleaved, so all three see the same machine; the fastest of each is kept
            for tool in runs:
                if tool == "upstream" and (checkout is None or (task == "position" and r > 0)):
                    continue
                one = ([run_upstream(checkout, python, up_task, it) for _, it in up_corpora] if tool == "upstream"
                       else [run_ssrl(c, [task], tool) for c, _ in corpora])
                runs[tool] = fastest(runs[tool], one)
        row = {"row": label, "task": task, "input": key, "sizes": list(sizes), "upstream_sizes": list(up_sizes),
               "upstream_task": up_task,
               "ssrl_jpeg_s": slope(*runs["jpeg"]), "ssrl_png_s": slope(*runs["png"]),
               "ssrl_jpeg_bytes": runs["jpeg"][1]["bytes"].get(task, 0) / max(1, runs["jpeg"][1]["samples"]),
               "ssrl_png_bytes": runs["png"][1]["bytes"].get(task, 0) / max(1, runs["png"][1]["samples"]),
               "runs": runs}
        if runs["upstream"]:
            row["upstream_s"] = slope(*runs["upstream"])
            row["upstream_bytes"] = runs["upstream"][1]["bytes"] / max(1, runs["upstream"][1]["samples"])
            row["upstream_failed"] = sum(r["failed"] for r in runs["upstream"])
            row["upstream_source"] = "measured"
        else:
            row["upstream_s"], row["upstream_source"] = UPSTREAM_RECORDED[up_task], "recorded (issue 14)"
        rows.append(row)
        print(f"  {label}: ssrl jpeg {row['ssrl_jpeg_s']:.3f} s, png {row['ssrl_png_s']:.3f} s, "
              f"upstream {row['upstream_s']:.3f} s ({row['upstream_source']})", flush=True)
    return {"rows": rows, "mixed": bench_mixed(files, sizes, rounds, rows)}


def bench_mixed(files: dict[str, dict[str, str]], sizes: tuple[int, int], rounds: int,
                rows: list[dict[str, Any]]) -> dict[str, Any]:
    """All five tasks over a mixed corpus with 2 workers, per sample from two sizes, scaled to 81k samples."""
    corpora = [sbs_corpus(files, dict.fromkeys(files, k), f"mixed-{k}")[0] for k in sizes]
    best: list[dict[str, Any]] = []
    for _ in range(rounds):
        best = fastest(best, [run_ssrl(c, list(DEFAULT_TASKS), "jpeg", workers=2) for c in corpora])
    per_sample = slope(*best)  # CPU seconds per sample, both workers together
    mix = best[1]["per_task"]
    # upstream: its scripts are single processes; the same task mix, each sample at its measured cost
    up_cost = {r["task"]: [] for r in rows}
    for r in rows:
        up_cost[r["task"]].append(r["upstream_s"])
    up_per_sample = sum(n * float(np.mean(up_cost[t])) for t, n in mix.items() if up_cost.get(t)) / sum(mix.values())
    return {"sizes": list(sizes), "runs": best, "mix": mix, "ssrl_cpu_s_per_sample": per_sample,
            "ssrl_wall_s_per_sample_2_workers": slope(*best, key="wall_s"),
            "ssrl_81k_min_2_workers": per_sample * PAPER_SAMPLES / 2 / 60,
            "upstream_s_per_sample_1_core": up_per_sample,
            "upstream_81k_h_1_core": up_per_sample * PAPER_SAMPLES / 3600,
            "upstream_source": "measured" if all(r["upstream_source"] == "measured" for r in rows)
            else "partly recorded"}


def report_side_by_side(sbs: dict[str, Any]) -> str:
    rows = []
    for r in sbs["rows"]:
        up = r["upstream_s"]
        rows.append([r["row"], f"{up:.3f}" + ("" if r["upstream_source"] == "measured" else " (recorded)"),
                     f"{r['ssrl_jpeg_s']:.3f} ({r['ssrl_jpeg_s'] / up:.2f}x)",
                     f"{r['ssrl_png_s']:.3f} ({r['ssrl_png_s'] / up:.2f}x)",
                     f"{r['upstream_bytes'] / 1e3:.0f}" if "upstream_bytes" in r else "-",
                     f"{r['ssrl_jpeg_bytes'] / 1e3:.0f}", f"{r['ssrl_png_bytes'] / 1e3:.0f}"])
    m = sbs["mixed"]
    return ("0. Side by side, whole CLI: CPU s/sample from two corpus sizes (ratio = ssrl / upstream); kB/sample\n"
            + table(["task", "upstream s", "ssrl jpeg s", "ssrl png s", "upstream kB", "jpeg kB", "png kB"], rows)
            + f"\nMixed corpus, five tasks, --workers 2 (samples per task {m['mix']}): "
            f"{m['ssrl_cpu_s_per_sample']:.4f} CPU s/sample (wall {m['ssrl_wall_s_per_sample_2_workers']:.4f} s) "
            f"-> {PAPER_SAMPLES:,} samples in {m['ssrl_81k_min_2_workers']:.0f} min on 2 cores; upstream "
            f"({m['upstream_source']}) {m['upstream_s_per_sample_1_core']:.3f} s/sample -> "
            f"{m['upstream_81k_h_1_core']:.1f} h on one core")


# ------------------------------------------------------------------------------------------ decoders (issue 14 §3)
def _optional(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def cpu_ms(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Fastest CPU milliseconds of each function over exactly ``rounds`` interleaved rounds (``measure``)."""
    settings = Settings(rounds, 0.0, rounds, (), 0, 0, 0)
    return {name: t.min_cpu_s * 1e3 for name, t in measure(fns, settings).items()}


def bench_decoder_libraries(reference: Path, rounds: int) -> dict[str, Any]:
    """The reference inputs' decode through each candidate library, side by side, each checked identical.

    HDF5 depth: h5py's read against ssrl's (``read_depth``'s chunk path), then only the inflate of the same
    chunks through zlib, zlib-ng, ISA-L (``isal``) and libdeflate (``deflate``), those installed. Images:
    Pillow, OpenCV, libspng (``pyspng``, PNG), ssrl's own PNG reader where it applies (``ssrl.sources.png``) or
    simplejpeg (JPEG, if installed), and ssrl's ``decode_image``.
    """
    import zlib

    import cv2
    import h5py

    from ssrl.sources.depth import DepthFormat, _read_h5
    from ssrl.sources.imageio import decode_image
    from ssrl.sources.png import decode_unfiltered

    inflaters: dict[str, Callable[[bytes, int], bytes]] = {"zlib": lambda b, n: zlib.decompress(b, 15, n)}
    if zng := _optional("zlib_ng.zlib_ng"):
        inflaters["zlib-ng"] = lambda b, n: zng.decompress(b, 15, n)
    if isal := _optional("isal.isal_zlib"):
        inflaters["isal"] = lambda b, n: isal.decompress(b, 15, n)
    if libdeflate := _optional("deflate"):
        inflaters["libdeflate"] = lambda b, n: libdeflate.zlib_decompress(b, n)
    depth: dict[str, Any] = {}
    for name in ("RGB-D_depth1.h5", "RGB-D_depth2.h5"):
        data = (reference / name).read_bytes()
        with h5py.File(io.BytesIO(data), "r") as f:
            node = f["depth"]
            ref, stored = node[()], []
            node.id.chunk_iter(stored.append)
            raws = [data[c.byte_offset : c.byte_offset + c.size] for c in stored]
            chunk_bytes = int(np.prod(node.chunks)) * node.dtype.itemsize
        assert _read_h5(data, DepthFormat()).tobytes() == ref.tobytes(), name
        expected = [zlib.decompress(r) for r in raws]
        for lib, inflate in inflaters.items():
            assert [inflate(r, chunk_bytes) for r in raws] == expected, f"{lib} inflates {name} differently"

        def h5py_read(data: bytes = data) -> object:
            with h5py.File(io.BytesIO(data), "r") as f:
                return f["depth"][()]

        fns: dict[str, Callable[[], object]] = {"h5py": h5py_read,
                                                "ssrl": lambda data=data: _read_h5(data, DepthFormat())}
        fns |= {f"inflate {lib}": (lambda inflate=inflate, raws=raws, n=chunk_bytes: [inflate(r, n) for r in raws])
                for lib, inflate in inflaters.items()}
        depth[name] = {"ms": cpu_ms(fns, rounds), "compressed_bytes": sum(map(len, raws)), "chunks": len(raws)}
        print(f"  {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in depth[name]["ms"].items()), flush=True)

    spng, simplejpeg = _optional("pyspng"), _optional("simplejpeg")
    images: dict[str, Any] = {}
    for name in ("RGB_img.png", "RGB-D_img3.png", "RGB-D_img1.jpg", "RGB-D_img2.jpg"):
        data = (reference / name).read_bytes()
        png = name.endswith(".png")
        with Image.open(io.BytesIO(data)) as img:
            mode, pillow_ref = img.mode, np.asarray(img)

        def pillow(data: bytes = data) -> np.ndarray:
            with Image.open(io.BytesIO(data)) as img:
                return np.asarray(img)

        def opencv(data: bytes = data, png: bool = png) -> np.ndarray:
            arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED if png else cv2.IMREAD_COLOR_RGB)
            return cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA if arr.shape[2] == 4 else cv2.COLOR_BGR2RGB) if png else arr

        fns = {"Pillow": pillow, "OpenCV": opencv}
        if png and spng:
            fns["libspng"] = lambda data=data: spng.load(data)
        if png and decode_unfiltered(data) is not None:  # rows filtered None/Sub/Up only
            fns["libdeflate + numpy"] = lambda data=data: decode_unfiltered(data)
        if not png and simplejpeg:
            fns["simplejpeg"] = lambda data=data: simplejpeg.decode_jpeg(data, "RGB")
        for lib, fn in fns.items():
            assert np.array_equal(fn(), pillow_ref), f"{lib} differs from Pillow on {name}"
        fns["ssrl decode_image"] = lambda data=data: decode_image(data)
        images[name] = {"mode": mode, "bytes": len(data), "ms": cpu_ms(fns, rounds)}
        print(f"  {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in images[name]["ms"].items()), flush=True)
    return {"rounds": rounds, "depth": depth, "images": images,
            "versions": {m: getattr(_optional(m), "__version__", "-") for m in
                         ("h5py", "zlib_ng", "isal", "deflate", "pyspng", "simplejpeg", "cv2", "PIL")}}


def report_decoders(dec: dict[str, Any]) -> str:
    """One row per input: fastest CPU ms per library, and in brackets its speed-up over the baseline: h5py for
    ssrl's whole depth read, zlib for the bare inflates, Pillow for images."""
    lines = [f"Decoders, fastest CPU ms of {dec['rounds']} interleaved rounds (speed-up over h5py, zlib or Pillow); "
             f"versions {dec['versions']}"]
    for group in ("depth", "images"):
        for name, r in dec[group].items():
            ms = r["ms"]

            def base(k: str, ms: dict[str, float] = ms) -> str:
                return "inflate zlib" if k.startswith("inflate") else "h5py" if "h5py" in ms else "Pillow"

            lines.append(f"  {name}: " + ", ".join(
                f"{k} {v:.1f}" + ("" if k == base(k) else f" ({ms[base(k)] / v:.2f}x)") for k, v in ms.items()))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and smaller corpora (smoke test)")
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="folder of the paper's reference samples")
    parser.add_argument("--output", type=Path, default=RESULTS / "generate.json")
    parser.add_argument("--upstream", type=Path, help="checkout of InternLM/Spatial-SSRL: run its data_process scripts "
                        "side by side (section 0); without it section 0 quotes the issue's recorded figures")
    parser.add_argument("--upstream-python", default=sys.executable,
                        help="interpreter with the upstream scripts' dependencies (opencv, matplotlib, h5py)")
    parser.add_argument("--side-by-side-only", action="store_true", help="run section 0 only")
    parser.add_argument("--decoders-only", action="store_true",
                        help="only the decoder libraries on the reference inputs, side by side (issue 14 §3)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # helper mode: one run() in a fresh process
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--shard-size", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child_run(args.child, args.workers, args.shard_size)))
        return 0

    keep_freed_memory()  # the in-process sections time process_source as in the generator's processes
    settings = Settings.pick(args.quick)
    started = time.perf_counter()
    inputs, note = load_inputs(args.reference)
    res: dict[str, Any] = {"machine": machine_info(), "quick": args.quick, "settings": asdict(settings),
                           "inputs_note": note, "inputs": {k: describe_input(s) for k, s in inputs.items()}}
    print(f"{res['machine']['cpu']}, {res['machine']['cpu_count']} cores; inputs: {note}", flush=True)
    if os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {os.getloadavg()[0]:.2f} before starting; timings may be noisy", flush=True)
    if args.decoders_only:
        print("decoders", flush=True)
        res["decoders"] = bench_decoder_libraries(args.reference, 5 if args.quick else 25)
        machine.finish(res, started, report_decoders(res["decoders"]), args.output)
        return 0
    print("0. side by side with upstream", flush=True)
    sizes, position_sizes, rounds = ((2, 6), (1, 2), 1) if args.quick else ((4, 64), (1, 2), 3)
    res["side_by_side"] = bench_side_by_side(args.reference, args.upstream, args.upstream_python, sizes,
                                             position_sizes, rounds)
    if args.side_by_side_only:
        machine.finish(res, started, report_side_by_side(res["side_by_side"]), args.output)
        return 0
    print("1. per task", flush=True)
    res["tasks"] = bench_tasks(inputs, settings)
    res["decoder"] = bench_decoder(inputs, settings)
    print("2. decode once", flush=True)
    res["decode_once"] = [bench_decode_once(inputs[k], k, settings) for k in ("megadepth", "diode")]
    print("4. worker scaling", flush=True)
    res["workers"] = bench_workers(settings)
    print("3. peak RSS", flush=True)
    res["rss"] = bench_rss(settings)
    machine.finish(res, started, report(res), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
