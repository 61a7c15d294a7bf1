"""Throughput of the ``ssrl eval`` loop on the tiny model, and the share of time spent outside the model
(reading the benchmark, decoding images, extracting and scoring answers): goal under 10 %.

    .venv/bin/python bench/bench_eval.py [--items 96] [--batch-size 8] [--new-tokens 48]

Two benchmarks: held-out pretext tasks (Parquet shards, PNG images at the generator's pixel budget) and a
VLMEvalKit-style TSV (base64 JPEGs, 4 options). Each is timed with the prefetching loop ``ssrl eval`` uses
and, for comparison, with decoding inline (no prefetch). The model's share is the time inside
``Generator.__call__`` (processor + generate + decode); everything else is "outside". OMP_NUM_THREADS=1, as
torchrun sets, so one core generates and the other is free for the prefetch thread.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent


def prepare(root: Path, items: int) -> tuple[Path, Path, Path]:
    import numpy as np
    from PIL import Image

    from ssrl.dataset.generate import GenerateConfig, run
    from ssrl.recipes.tiny_model import build_tiny_model
    from ssrl.sources.synth import SynthConfig, synthesize

    scenes = max(1, items // 5)
    synthesize(root / "src", scenes, seed=11, cfg=SynthConfig(width=448, height=336))
    run(GenerateConfig(inputs=[str(root / "src")], output=str(root / "tasks"), min_pixels=3136, max_pixels=50176))
    rng = np.random.default_rng(0)
    lines = ["index\tquestion\tA\tB\tC\tD\tanswer\tcategory\timage"]
    for i in range(items):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (336, 448, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
        lines.append(f"{i}\tWhich object is closer to the camera?\tthe chair\tthe table\tthe lamp\tthe door\t"
                     f"{'ABCD'[i % 4]}\t{('depth', 'relation')[i % 2]}\t{base64.b64encode(buf.getvalue()).decode()}")
    (root / "bench.tsv").write_text("\n".join(lines) + "\n")
    build_tiny_model(root / "tiny")
    return root / "tiny", root / "tasks", root / "bench.tsv"


def run_loop(model: Path, bench: Path, items: int, batch_size: int, new_tokens: int, prefetch: bool) -> dict:
    import torch

    from ssrl.recipes import evaluate
    from ssrl.recipes.evaluate import EvalConfig, Generator, evaluate_benchmark

    cfg = EvalConfig(models=[str(model)], benchmarks=[str(bench)], limit=items, batch_size=batch_size,
                     max_new_tokens=new_tokens, min_pixels=3136, max_pixels=50176)
    gen = Generator(str(model), cfg, torch.device("cpu"), bf16=False)
    cache = Path(tempfile.mkdtemp())
    original = evaluate.prefetch
    if not prefetch:
        evaluate.prefetch = lambda batches, depth=2: batches  # inline: decode, then generate
    try:
        evaluate_benchmark(gen, str(bench), EvalConfig(**{**cfg.__dict__, "limit": batch_size}), cache)  # warm-up
        preds, t = evaluate_benchmark(gen, str(bench), cfg, cache)
    finally:
        evaluate.prefetch = original
    outside = 1 - t["model_seconds"] / t["seconds"]
    return {"items": len(preds), "seconds": round(t["seconds"], 3), "model_seconds": round(t["model_seconds"], 3),
            "samples_per_s": len(preds) / t["seconds"], "outside_share": outside}


def main() -> None:
    import torch
    import transformers
    from machine import machine_info, write_results  # bench/machine.py, beside this script

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--output", type=Path, default=ROOT / "results" / "eval.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model, tasks, tsv = prepare(Path(tmp), args.items)
        print(f"prepared in {time.perf_counter() - t0:.1f}s")
        rows = []
        for name, bench in (("held-out tasks", tasks), ("TSV (base64 JPEG)", tsv)):
            for prefetch in (True, False):
                r = run_loop(model, bench, args.items, args.batch_size, args.new_tokens, prefetch)
                rows.append({"benchmark": name, "prefetch": prefetch, **r})
    print(f"{'benchmark':20}{'loop':>10}{'items':>7}{'samples/s':>11}{'outside the model':>19}")
    for r in rows:
        print(f"{r['benchmark']:20}{'prefetch' if r['prefetch'] else 'inline':>10}{r['items']:>7}"
              f"{r['samples_per_s']:>11.2f}{100 * r['outside_share']:>18.1f}%")
    for name in ("held-out tasks", "TSV (base64 JPEG)"):
        a, b = (next(r for r in rows if r["benchmark"] == name and r["prefetch"] is p) for p in (True, False))
        print(f"{name}: prefetch / inline throughput = {a['samples_per_s'] / b['samples_per_s']:.2f}x "
              f"(goal for outside share: < 10%)")
    write_results(args.output, {"machine": machine_info(torch=torch.__version__, transformers=transformers.__version__),
                                "settings": vars(args) | {"output": str(args.output)}, "rows": rows})


if __name__ == "__main__":
    main()
