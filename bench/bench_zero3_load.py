"""Host memory per rank while the policy loads under ZeRO-3: the DeepSpeed config created first (what ``ssrl train``
does now: ``from_pretrained`` partitions the weights as they load) against the model loaded first (before the fix:
every rank holds a full copy in host RAM).

    .venv/bin/python bench/bench_zero3_load.py            # 2 ranks, a ~0.2 B-parameter random Qwen2.5-VL
    .venv/bin/python bench/bench_zero3_load.py --quick    # a ~50 M-parameter one

Prints a table and writes bench/results/zero3_load.json. Peak RSS (ru_maxrss) is per process, so each rank's peak
is measured in its own fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def worker(mode: str, model: str, out: Path) -> None:
    """One rank: load the policy the old way (model first) or the new way (DeepSpeed config first)."""
    import deepspeed  # every library in memory before the baseline, so that only the model counts
    import trl  # noqa: F401

    from ssrl.recipes.train_grpo import TrainConfig, build_grpo_args, ensure_distributed_env, load_model_and_processor

    ensure_distributed_env()
    cfg = TrainConfig(model=model, deepspeed="zero3", report_to=[], per_device_train_batch_size=4,
                      num_generations=2)
    base = rss_mib()
    if mode == "config-first":
        args = build_grpo_args(cfg, out / "trainer", gpu=False)
        deepspeed.init_distributed()
        model_obj, _ = load_model_and_processor(cfg, model, gpu=False)
    else:
        model_obj, _ = load_model_and_processor(cfg, model, gpu=False)
        args = build_grpo_args(cfg, out / "trainer", gpu=False)
    held = sum(getattr(p, "ds_tensor", p).numel() for p in model_obj.parameters())
    total = sum(getattr(p, "ds_numel", p.numel()) for p in model_obj.parameters())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    record = {"mode": mode, "rank": int(os.environ["RANK"]), "rss_before_mib": round(base, 1),
              "rss_after_mib": round(rss_mib(), 1), "peak_rss_mib": round(peak, 1), "params_held": held,
              "params_total": total}
    (out / f"{mode}-{record['rank']}.json").write_text(json.dumps(record))
    del args


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", choices=["model-first", "config-first"])
    parser.add_argument("--model", default="")
    parser.add_argument("--out", default=str(RESULTS / "zero3_load"))
    a = parser.parse_args()
    out = Path(a.out)
    if a.worker:
        worker(a.worker, a.model, out)
        return
    from ssrl.recipes.tiny_model import build_tiny_model

    out.mkdir(parents=True, exist_ok=True)
    size = {"hidden_size": 512, "layers": 8} if a.quick else {"hidden_size": 1024, "layers": 12}
    model = out / f"model-{size['hidden_size']}x{size['layers']}"
    if not (model / "config.json").exists():
        build_tiny_model(model, vocab_size=32768, vision_hidden=256, vision_depth=4, **size)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    rows = []
    for mode in ("model-first", "config-first"):
        subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", __file__, "--worker", mode, "--model",
                        str(model), "--out", str(out)], check=True, env=env, capture_output=True)
        rows += [json.loads((out / f"{mode}-{r}.json").read_text()) for r in (0, 1)]
    print(f"{'mode':<14}{'rank':>5}{'params held':>14}{'of':>14}{'RSS before':>12}{'after':>8}{'growth':>8}"
          f"{'peak':>8}  (MiB)")
    for r in rows:
        print(f"{r['mode']:<14}{r['rank']:>5}{r['params_held']:>14,}{r['params_total']:>14,}"
              f"{r['rss_before_mib']:>12.0f}{r['rss_after_mib']:>8.0f}"
              f"{r['rss_after_mib'] - r['rss_before_mib']:>8.0f}{r['peak_rss_mib']:>8.0f}")
    (RESULTS / "zero3_load.json").write_text(json.dumps({"model": str(model), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
