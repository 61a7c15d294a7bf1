"""Benchmark of ssrl's S3 storage path against the bare minio client, on a local MinIO server.

Run from the repository root::

    .venv/bin/python bench/bench_store.py            # full run (~3-4 minutes on 2 cores)
    .venv/bin/python bench/bench_store.py --quick    # smoke run (~1-1.5 minutes)

Starts its own MinIO (built by ``scripts/tools.sh minio``) on a free loopback port with a temporary data
folder, then measures (1) dataset and (2) checkpoint upload/download throughput of ssrl (which hashes every
byte with sha256 as it passes and verifies downloads against the commit record) against raw ``fput_object`` /
``fget_object`` of the same files, and (3) the peak memory of moving one big file. Prints tables and writes
``bench/results/store.json`` (git-ignored). See ``bench/README.md`` for what every number means.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import machine  # bench/machine.py, beside this script
import minio
import numpy as np
import psutil
from minio import Minio
from minio.deleteobjects import DeleteObject

from ssrl.store import sha256_file
from ssrl.store.checkpoints import pull_checkpoint, save_checkpoint
from ssrl.store.s3 import S3Settings, S3Store
from ssrl.store.transfer import commit, pull_tree, upload_tree

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
RESULTS = ROOT / "results"
MiB = 1024 * 1024
BUCKET = "bench"
ACCESS_KEY = "ssrl-bench-access"
SECRET_KEY = "ssrl-bench-secret-0123456789"
GOAL_RATIO = 0.9
SSRL = "ssrl"
RAW = "raw 4 threads"
#: ssrl's defaults (S3Settings and upload_tree/pull_tree): the raw client gets the same, so only ssrl differs.
THREADS = 4
#: A timing during which other processes used more than this many cores is repeated, at most RETRIES times,
#: while the repeated timings add up to less than RETRY_BUDGET_S (so a busy machine cannot stretch the run).
DISTURBED_CORES = 0.15
RETRIES = 2
RETRY_BUDGET_S = 60.0


# ------------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class Settings:
    repeats: int
    shards: int
    shard_mib: int
    checkpoint_mib: dict[str, float]
    """Checkpoint files and their sizes in MiB (HF-like layout; small files are JSON/text)."""
    big_mib: tuple[int, ...]
    big_part_mib: int
    big_parallel: int

    @classmethod
    def pick(cls, quick: bool) -> Settings:
        if quick:
            ckpt = {"model-00001-of-00002.safetensors": 40, "model-00002-of-00002.safetensors": 20,
                    "optimizer.pt": 60}
            return cls(3, 8, 4, {**ckpt, **SMALL_CHECKPOINT_FILES}, (64, 256), 5, 4)
        ckpt = {"model-00001-of-00002.safetensors": 200, "model-00002-of-00002.safetensors": 100,
                "optimizer.pt": 300}
        return cls(5, 32, 8, {**ckpt, **SMALL_CHECKPOINT_FILES}, (256, 1024), 16, 4)


#: The small files of a Hugging Face checkpoint folder, with roughly their real sizes (Qwen2.5-VL), in MiB.
SMALL_CHECKPOINT_FILES: dict[str, float] = {
    "config.json": 0.005, "generation_config.json": 0.0003, "model.safetensors.index.json": 0.06,
    "tokenizer.json": 6.7, "tokenizer_config.json": 0.006, "vocab.json": 2.6, "merges.txt": 1.6,
    "special_tokens_map.json": 0.0006, "chat_template.json": 0.001, "preprocessor_config.json": 0.0006,
    "scheduler.pt": 0.001, "rng_state.pth": 0.014, "trainer_state.json": 0.02, "training_args.bin": 0.006,
}


# ------------------------------------------------------------------------------------------ machine
def machine_info() -> dict[str, Any]:
    return machine.machine_info(minio_py=minio.__version__)


def minio_binary() -> Path:
    """The MinIO server built by ``scripts/tools.sh minio`` (never built from here: that takes many minutes)."""
    out = subprocess.run([str(REPO / "scripts" / "tools.sh"), "--path"], capture_output=True, text=True,
                         check=True).stdout.strip()
    for folder in out.split(":"):
        if (Path(folder) / "minio").is_file():
            return Path(folder) / "minio"
    raise SystemExit("the MinIO server is not built: run scripts/tools.sh minio (several minutes, once)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MinioServer:
    """A MinIO server on free loopback ports with its own credentials and data folder."""

    binary: Path
    data: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, config: Path | None = None) -> dict[str, str]:
        """What a user sets to reach it; ``config`` names a store YAML (a missing one: ssrl's defaults)."""
        return {"SSRL_S3_ENDPOINT": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "SSRL_STORE_CONFIG": str(config or self.data / "no-config.yaml")}

    def client(self) -> Minio:
        """A plain minio client with its default HTTP pool: the 'raw' side of every comparison."""
        return Minio(f"127.0.0.1:{self.port}", ACCESS_KEY, SECRET_KEY, secure=False)

    def version(self) -> str:
        """``minio --version``; a ``go install`` build says DEVELOPMENT.GOGET, so the pinned module version
        (the cache folder's name, e.g. ``minio-v0.0.0-20260212201848-7aac2a2c5b7c``) is added."""
        out = subprocess.run([str(self.binary), "--version"], capture_output=True, text=True, check=False)
        return f"{' '.join(out.stdout.split()[:3]) or 'unknown'} ({self.binary.parent.parent.name})"

    def start(self, timeout: float = 60.0) -> None:
        (self.data / "disk").mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, MINIO_ROOT_USER=ACCESS_KEY, MINIO_ROOT_PASSWORD=SECRET_KEY, MINIO_BROWSER="off",
                   MINIO_UPDATE="off")
        cmd = [str(self.binary), "server", str(self.data / "disk"), "--address", f"127.0.0.1:{self.port}",
               "--console-address", f"127.0.0.1:{free_port()}", "--quiet"]
        log = self.data / "minio.log"
        self.proc = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"minio exited: {log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{self.endpoint}/minio/health/ready", timeout=1).close()
                self.client().list_buckets()
                return
            except Exception:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"minio not ready after {timeout} s: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@dataclass
class Context:
    """Everything a measurement needs: the server, both clients, the scratch folder and the settings."""

    server: MinioServer
    raw: Minio
    store: S3Store
    scratch: Path
    settings: Settings
    disturbed: int = 0
    """Timings thrown away and done again because other processes were busy meanwhile."""
    retried_s: float = 0.0

    def clear(self, prefix: str) -> None:
        """Delete every object under ``prefix/`` (untimed housekeeping between repetitions)."""
        names = [DeleteObject(o.object_name) for o in self.raw.list_objects(BUCKET, f"{prefix}/", recursive=True)]
        for error in self.raw.remove_objects(BUCKET, names):
            raise RuntimeError(f"cannot delete {error.name}: {error.message}")


# ------------------------------------------------------------------------------------------ inputs
def write_random(path: Path, size: int, rng: np.random.Generator) -> None:
    """``size`` random bytes (incompressible, like parquet/safetensors payloads), written in 16 MiB chunks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        left = size
        while left:
            n = min(left, 16 * MiB)
            f.write(rng.bytes(n))
            left -= n


def make_dataset(folder: Path, settings: Settings) -> Path:
    rng = np.random.default_rng(1)
    for i in range(settings.shards):
        write_random(folder / f"shard-{i:05d}.parquet", settings.shard_mib * MiB, rng)
    (folder / "manifest.json").write_text(json.dumps({"shards": settings.shards, "note": "benchmark"}))
    return folder


def make_checkpoint(folder: Path, settings: Settings) -> Path:
    rng = np.random.default_rng(2)
    for name, mib in settings.checkpoint_mib.items():
        size = max(1, int(mib * MiB))
        if name.endswith((".json", ".txt")):  # text-like files: valid JSON padded to about the right size
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            pad = max(0, size - len(json.dumps({"name": name, "pad": ""})))
            (folder / name).write_text(json.dumps({"name": name, "pad": "x" * pad}))
        else:
            write_random(folder / name, size, rng)
    return folder


def local_files(folder: Path) -> list[tuple[str, Path]]:
    return sorted((p.relative_to(folder).as_posix(), p) for p in folder.rglob("*") if p.is_file())


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for _, p in local_files(folder))


# ------------------------------------------------------------------------------------------ timing
@dataclass
class Run:
    wall_s: float
    client_cpu_s: float
    """CPU time of this (client) process: user + system, all threads."""
    server_cpu_s: float
    """CPU time of the MinIO server process meanwhile."""
    other_procs_cpu_s: float
    """CPU time of every other user-space process meanwhile (someone else's work on the machine)."""
    kernel_cpu_s: float
    """The rest of the machine's busy time: kernel threads (page-cache writeback of what MinIO wrote),
    interrupts and time stolen by the hypervisor."""


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores, including time stolen by a hypervisor)."""
    t = psutil.cpu_times()
    return sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))


def user_processes_cpu(exclude: set[int]) -> dict[int, float]:
    """CPU seconds so far of every user-space process (kernel threads are children of kthreadd, pid 2)."""
    out = {}
    for p in psutil.process_iter(["pid", "ppid", "cpu_times"]):
        info = p.info
        if info["pid"] in exclude or info["ppid"] in (0, 2) or info["pid"] == 2 or not info["cpu_times"]:
            continue
        out[info["pid"]] = info["cpu_times"].user + info["cpu_times"].system
    return out


def timed(fn: Callable[[], object], server: psutil.Process) -> Run:
    mine = {os.getpid(), server.pid}
    p0, c0, s0, b0 = user_processes_cpu(mine), os.times(), server.cpu_times(), machine_busy_s()
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    c1, s1, b1, p1 = os.times(), server.cpu_times(), machine_busy_s(), user_processes_cpu(mine)
    client = c1.user - c0.user + c1.system - c0.system
    srv = s1.user - s0.user + s1.system - s0.system
    others = sum(max(0.0, cpu - p0.get(pid, 0.0)) for pid, cpu in p1.items())
    return Run(wall, client, srv, others, max(0.0, b1 - b0 - client - srv - others))


def compare(variants: dict[str, Callable[[str], object]], ctx: Context, what: str,
            cleanup: Callable[[str], None]) -> dict[str, list[Run]]:
    """Run every variant ``repeats`` times, each on a fresh target named ``<variant>-<rep>[-<try>]``.

    The order of the variants rotates from one repetition to the next, so none always runs first (on a cold
    server) or last; ``cleanup(target)`` runs untimed after each run. A run during which other processes
    used more than ``DISTURBED_CORES`` is done again (at most ``RETRIES`` times, within ``RETRY_BUDGET_S``
    for the whole benchmark; the last try is kept).
    """
    names = list(variants)
    runs: dict[str, list[Run]] = {name: [] for name in names}
    server = psutil.Process(ctx.server.proc.pid if ctx.server.proc else 0)
    for rep in range(ctx.settings.repeats):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            for attempt in range(RETRIES + 1):
                target = f"{''.join(c if c.isalnum() else '_' for c in name)}-{rep}-{attempt}"
                run = timed(lambda name=name, target=target: variants[name](target), server)
                cleanup(target)
                if run.other_procs_cpu_s / run.wall_s <= DISTURBED_CORES or ctx.retried_s >= RETRY_BUDGET_S:
                    break
                ctx.disturbed += 1
                ctx.retried_s += run.wall_s
            runs[name].append(run)
        print(f"  {what} repetition {rep + 1}/{ctx.settings.repeats}: "
              + ", ".join(f"{n} {runs[n][-1].wall_s:.2f} s" for n in names), flush=True)
    return runs


def summarize(runs: list[Run], size: int) -> dict[str, Any]:
    wall = sum(r.wall_s for r in runs)
    median = statistics.median(r.wall_s for r in runs)
    return {
        "times_s": [round(r.wall_s, 4) for r in runs],
        "median_s": median,
        "mib_s": size / MiB / median,
        "best_mib_s": size / MiB / min(r.wall_s for r in runs),
        "client_cpu_s": statistics.median(r.client_cpu_s for r in runs),
        "server_cpu_s": statistics.median(r.server_cpu_s for r in runs),
        "client_cores": sum(r.client_cpu_s for r in runs) / wall,
        "server_cores": sum(r.server_cpu_s for r in runs) / wall,
        "other_procs_cores": sum(r.other_procs_cpu_s for r in runs) / wall,
        "kernel_cores": sum(r.kernel_cpu_s for r in runs) / wall,
    }


# ------------------------------------------------------------------------------------------ 0. floors
def bench_hash(files: list[Path], repeats: int) -> dict[str, float]:
    """sha256 throughput: hashlib on an in-memory buffer, and ssrl's ``sha256_file`` on page-cached files."""
    buf = np.random.default_rng(3).bytes(64 * MiB)
    mem = [timed_s(lambda: hashlib.sha256(buf).digest()) for _ in range(repeats)]
    total = sum(p.stat().st_size for p in files)
    for p in files:  # make sure they are in the page cache
        sha256_file(p)
    disk = [timed_s(lambda: [sha256_file(p) for p in files]) for _ in range(repeats)]
    return {"hashlib_mib_s": 64 / statistics.median(mem), "sha256_file_mib_s": total / MiB / statistics.median(disk)}


def bench_disk(scratch: Path, size: int) -> dict[str, float]:
    """Local disk: write ``size`` bytes and fsync (what a server must do to keep an object), then delete."""
    path = scratch / "disk-probe.bin"
    data = np.random.default_rng(4).bytes(16 * MiB)

    def write() -> None:
        with path.open("wb") as f:
            for _ in range(size // len(data)):
                f.write(data)
            f.flush()
            os.fsync(f.fileno())

    t = timed_s(write)
    path.unlink()
    return {"write_fsync_mib_s": size / MiB / t}


def timed_s(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------ 1./2. folders
def raw_upload(client: Minio, files: list[tuple[str, Path]], prefix: str, settings: S3Settings,
               threads: int) -> None:
    """Raw ``fput_object`` of every file, with ssrl's part size and per-file part parallelism."""
    def one(item: tuple[str, Path]) -> None:
        client.fput_object(BUCKET, f"{prefix}/{item[0]}", str(item[1]), part_size=settings.part_size,
                           num_parallel_uploads=settings.parallel)

    if threads == 1:
        for item in files:
            one(item)
    else:
        with cf.ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(one, files))


def raw_download(client: Minio, keys: list[str], prefix: str, dest: Path, threads: int) -> None:
    """Raw ``fget_object`` of every key under ``prefix/`` into ``dest``."""
    def one(rel: str) -> None:
        client.fget_object(BUCKET, f"{prefix}/{rel}", str(dest / rel))

    if threads == 1:
        for rel in keys:
            one(rel)
    else:
        with cf.ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(one, keys))


def bench_folder(kind: str, folder: Path, ctx: Context) -> dict[str, Any]:
    """Upload and download ``folder`` with ssrl and with the raw client; MiB/s of each and their ratios.

    ``kind`` "dataset": ``upload_tree`` + ``commit`` / ``pull_tree``. ``kind`` "checkpoint":
    ``save_checkpoint`` / ``pull_checkpoint``. Every upload goes to a fresh prefix, so nothing is skipped.
    """
    files = local_files(folder)
    size = folder_bytes(folder)
    store, raw, s3 = ctx.store, ctx.raw, ctx.store.settings
    up_root, down_root = f"{kind}-up", ctx.scratch / f"{kind}-down"
    source = f"{kind}-source"  # one committed copy, made by ssrl; raw downloads read the same objects
    data_prefix = f"{source}/step-1" if kind == "checkpoint" else source

    def ssrl_upload(prefix: str) -> None:
        if kind == "dataset":
            commit(store, prefix, upload_tree(folder, store, prefix))
        else:
            save_checkpoint(store.join(prefix), 1, folder)

    def ssrl_download(target: str) -> None:
        if kind == "dataset":
            pull_tree(store, source, down_root / target)
        else:
            pull_checkpoint(store.join(source), down_root / target)

    ssrl_upload(source)  # also the warm-up: connections, server caches
    keys = [rel for rel, _ in files]
    raw_download(raw, keys, data_prefix, down_root / "warm-up", THREADS)
    shutil.rmtree(down_root / "warm-up")

    print(f"{kind}: {len(files)} files, {size / MiB:.0f} MiB", flush=True)
    uploads = compare({
        SSRL: lambda t: ssrl_upload(f"{up_root}/{t}"),
        RAW: lambda t: raw_upload(raw, files, f"{up_root}/{t}", s3, THREADS),
        "raw sequential": lambda t: raw_upload(raw, files, f"{up_root}/{t}", s3, 1),
    }, ctx, f"{kind} upload", lambda t: ctx.clear(f"{up_root}/{t}"))
    downloads = compare({
        SSRL: ssrl_download,
        RAW: lambda t: raw_download(raw, keys, data_prefix, down_root / t, THREADS),
        "raw sequential": lambda t: raw_download(raw, keys, data_prefix, down_root / t, 1),
    }, ctx, f"{kind} download", lambda t: shutil.rmtree(down_root / t))
    ctx.clear(source)

    out: dict[str, Any] = {"files": len(files), "bytes": size, "mib": size / MiB}
    for direction, runs in (("upload", uploads), ("download", downloads)):
        res = {name: summarize(r, size) for name, r in runs.items()}
        res["ratio_vs_raw_4_threads"] = res[SSRL]["mib_s"] / res[RAW]["mib_s"]
        res["ratio_vs_raw_sequential"] = res[SSRL]["mib_s"] / res["raw sequential"]["mib_s"]
        res["extra_client_cpu_s"] = res[SSRL]["client_cpu_s"] - res[RAW]["client_cpu_s"]
        out[direction] = res
    return out


# ------------------------------------------------------------------------------------------ 3. memory
def vm_kib(field_name: str) -> int:
    """A field of /proc/self/status in KiB: VmRSS now, VmHWM the peak so far (true for this process only)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def child_move(mode: str, url: str, key: str, path: str) -> dict[str, Any]:
    """Body of a fresh process: one ``put_file``/``get_file`` (or the raw client's fput/fget) of one file.

    Settings (part size, parallel) come from the environment and the YAML named by SSRL_STORE_CONFIG, as a
    user's would.
    """
    store = S3Store(url)
    s3 = store.settings
    raw = Minio(s3.endpoint.split("://", 1)[1], s3.access_key, s3.secret_key, secure=False)
    base, hwm_before = vm_kib("VmRSS"), vm_kib("VmHWM")
    t0 = time.perf_counter()
    if mode == "ssrl-put":
        store.put_file(key, path)
    elif mode == "ssrl-get":
        store.get_file(key, path)
    elif mode == "raw-put":
        raw.fput_object(store.bucket, f"{store.prefix}/{key}", path, part_size=s3.part_size,
                        num_parallel_uploads=s3.parallel)
    elif mode == "raw-get":
        raw.fget_object(store.bucket, f"{store.prefix}/{key}", path)
    else:
        raise SystemExit(f"unknown child mode {mode}")
    wall = time.perf_counter() - t0
    peak = vm_kib("VmHWM")
    return {"mode": mode, "wall_s": wall, "rss_after_import_mib": base / 1024,
            "hwm_before_mib": hwm_before / 1024, "peak_mib": peak / 1024, "extra_mib": (peak - base) / 1024}


def spawn_child(env: dict[str, str], *args: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=dict(os.environ, **env))
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_memory(ctx: Context) -> list[dict[str, Any]]:
    """Peak RSS above the post-import RSS of one put/get of a big file, one fresh process each."""
    s = ctx.settings
    config = ctx.scratch / "store.yaml"  # part size / parallel through the documented config file
    config.write_text(f"part_size: {s.big_part_mib * MiB}\nparallel: {s.big_parallel}\n")
    env = ctx.server.env(config)
    rng = np.random.default_rng(5)
    results = []
    for mib in s.big_mib:
        src, got = ctx.scratch / f"big-{mib}.bin", ctx.scratch / f"big-{mib}.got"
        write_random(src, mib * MiB, rng)
        for side in ("ssrl", "raw"):
            key = f"{side}-{mib}.bin"
            for op in ("put", "get"):
                res = spawn_child(env, f"{side}-{op}", f"s3://{BUCKET}/big", key, str(src if op == "put" else got))
                res.update(file_mib=mib, part_mib=s.big_part_mib, parallel=s.big_parallel,
                           mib_s=mib / res["wall_s"])
                results.append(res)
                print(f"  {side} {op} {mib} MiB: +{res['extra_mib']:.0f} MiB peak, {res['mib_s']:.0f} MiB/s",
                      flush=True)
            got.unlink()
        src.unlink()
        ctx.clear("big")
    return results


# ------------------------------------------------------------------------------------------ report
def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in rows]
    return "\n".join(out)


def folder_table(res: dict[str, Any], hash_mib_s: float) -> str:
    rows = []
    for direction in ("upload", "download"):
        d = res[direction]
        for name in (SSRL, RAW, "raw sequential"):
            v = d[name]
            ratio = "" if name == SSRL else f"{d[SSRL]['mib_s'] / v['mib_s']:.2f}"
            if name == RAW and d[SSRL]["mib_s"] / v["mib_s"] < GOAL_RATIO:
                ratio += " *"
            rows.append([direction, name, f"{v['median_s']:.2f}", f"{v['mib_s']:.0f}", f"{v['best_mib_s']:.0f}",
                         ratio, f"{v['client_cpu_s']:.2f}", f"{v['server_cpu_s']:.2f}", f"{v['client_cores']:.2f}",
                         f"{v['server_cores']:.2f}", f"{v['other_procs_cores']:.2f}", f"{v['kernel_cores']:.2f}"])
    lines = []
    for direction in ("upload", "download"):
        d = res[direction]
        gap = d[SSRL]["median_s"] - d[RAW]["median_s"]
        lines.append(f"{direction}: ssrl - raw 4 threads = {gap:+.2f} s wall, {d['extra_client_cpu_s']:+.2f} s client "
                     f"CPU; one sha256 pass over {res['mib']:.0f} MiB = {res['mib'] / hash_mib_s:.2f} s of one core")
    return (table(["direction", "client", "median s", "MiB/s", "best MiB/s", "ssrl/this", "client CPU s",
                   "server CPU s", "client cores", "server cores", "other procs", "kernel+steal"], rows)
            + "\n" + "\n".join(lines))


def report(res: dict[str, Any]) -> str:
    m, s = res["machine"], res["settings"]
    h = res["hash"]
    parts = [
        f"Machine: {m['cpu']}, {m['cpu_count']} cores (shared by client and MinIO server), {m['memory_gib']} GiB; "
        f"Python {m['python']}, minio-py {m['minio_py']}; {res['minio_version']}; data on the local disk; "
        f"{m['date']}",
        f"sha256: hashlib {h['hashlib_mib_s']:.0f} MiB/s in memory, ssrl sha256_file {h['sha256_file_mib_s']:.0f} "
        f"MiB/s on page-cached files; local disk write+fsync {res['disk']['write_fsync_mib_s']:.0f} MiB/s",
        f"ssrl settings: part_size {res['part_size'] / MiB:.0f} MiB, parallel {res['parallel']} parts per file, "
        f"{THREADS} files at a time; raw uses the same part size and parallel parts. "
        f"Median of {s['repeats']} runs; * = ssrl below {GOAL_RATIO} of raw 4 threads.",
    ]
    busy = max(v["other_procs_cores"] for k in ("dataset", "checkpoint") for direction in ("upload", "download")
               for v in res[k][direction].values() if isinstance(v, dict))
    parts.append(f"Other processes used up to {busy:.2f} cores on average in a variant's timings; "
                 f"{res['disturbed_runs']} disturbed timings (> {DISTURBED_CORES} cores) were done again"
                 + (" -- someone else was using the machine: timings are noisy" if busy > DISTURBED_CORES else ""))
    hash_rate = h["sha256_file_mib_s"]
    d = res["dataset"]
    parts.append(f"1. Dataset: {d['files']} files, {d['mib']:.0f} MiB (upload_tree + commit / pull_tree)\n"
                 + folder_table(d, hash_rate))
    c = res["checkpoint"]
    parts.append(f"2. Checkpoint: {c['files']} files, {c['mib']:.0f} MiB (save_checkpoint / pull_checkpoint)\n"
                 + folder_table(c, hash_rate))
    parts.append("Summary, ssrl / raw 4 threads (MiB/s): " + "; ".join(
        f"{k} {direction} {res[k][direction]['ratio_vs_raw_4_threads']:.2f} "
        f"({res[k][direction][SSRL]['mib_s']:.0f} / {res[k][direction][RAW]['mib_s']:.0f})"
        for k in ("dataset", "checkpoint") for direction in ("upload", "download"))
        + f"; load average at start {m['loadavg_at_start'][0]:.2f}, other processes up to {busy:.2f} cores")
    rows = [[r["mode"], str(r["file_mib"]), f"{r['part_mib']} x {r['parallel']}", f"{r['rss_after_import_mib']:.0f}",
             f"{r['peak_mib']:.0f}", f"{r['extra_mib']:.0f}", f"{r['mib_s']:.0f}"] for r in res["memory"]]
    parts.append("3. Peak RSS moving one big file (fresh process each; extra = VmHWM - VmRSS after import)\n"
                 + table(["mode", "file MiB", "part MiB x parallel", "after import MiB", "peak MiB", "extra MiB",
                          "MiB/s (1 run)"], rows))
    return "\n\n".join(parts)


# ------------------------------------------------------------------------------------------ main
def needed_disk(settings: Settings) -> int:
    """Bytes of scratch space at the peak: local inputs, the server's copies, downloads (with margin)."""
    dataset = settings.shards * settings.shard_mib * MiB
    ckpt = int(sum(settings.checkpoint_mib.values()) * MiB)
    return 4 * max(dataset, ckpt) + dataset + ckpt + 3 * max(settings.big_mib) * MiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller files (smoke test)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timings per variant (default 5, --quick 3); more give steadier medians on a busy machine")
    parser.add_argument("--output", type=Path, default=RESULTS / "store.json")
    parser.add_argument("--scratch", type=Path, default=None, help="parent of the temporary folder (default: /tmp)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)  # helper mode: mode url key path
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child_move(*args.child)))
        return 0

    settings = Settings.pick(args.quick)
    if args.repeats:
        settings = dataclasses.replace(settings, repeats=args.repeats)
    binary = minio_binary()
    scratch = Path(tempfile.mkdtemp(prefix="ssrl-bench-store-", dir=args.scratch))
    free = shutil.disk_usage(scratch).free
    if free < needed_disk(settings):
        shutil.rmtree(scratch)
        raise SystemExit(f"need {needed_disk(settings) / 2**30:.1f} GiB free in {scratch.parent}, have "
                         f"{free / 2**30:.1f} GiB (use --scratch)")
    started = time.perf_counter()
    server = MinioServer(binary, scratch / "minio")
    try:
        server.start()
        os.environ.update(server.env())  # S3Store(url) reads the endpoint and credentials like a user's would
        ctx = Context(server, server.client(), S3Store(f"s3://{BUCKET}"), scratch, settings)
        ctx.store.make_bucket()
        res: dict[str, Any] = {"machine": machine_info(), "minio_version": server.version(), "quick": args.quick,
                               "settings": asdict(settings), "part_size": ctx.store.settings.part_size,
                               "parallel": ctx.store.settings.parallel, "threads": THREADS}
        m = res["machine"]
        print(f"{m['cpu']}, {m['cpu_count']} cores; {res['minio_version']}; scratch {scratch}", flush=True)
        if m["loadavg_at_start"][0] > 0.5 * (m["cpu_count"] or 1):
            print(f"warning: load average {m['loadavg_at_start'][0]:.2f} before starting; timings may be noisy")

        dataset = make_dataset(scratch / "dataset", settings)
        checkpoint = make_checkpoint(scratch / "checkpoint", settings)
        res["hash"] = bench_hash([p for _, p in local_files(dataset)], settings.repeats)
        res["disk"] = bench_disk(scratch, settings.shards * settings.shard_mib * MiB)
        print(f"sha256 {res['hash']['sha256_file_mib_s']:.0f} MiB/s (files), disk write+fsync "
              f"{res['disk']['write_fsync_mib_s']:.0f} MiB/s", flush=True)
        res["dataset"] = bench_folder("dataset", dataset, ctx)
        shutil.rmtree(dataset)
        res["checkpoint"] = bench_folder("checkpoint", checkpoint, ctx)
        shutil.rmtree(checkpoint)
        print("3. peak RSS", flush=True)
        res["memory"] = bench_memory(ctx)
        res["disturbed_runs"] = ctx.disturbed
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    machine.finish(res, started, report(res), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
