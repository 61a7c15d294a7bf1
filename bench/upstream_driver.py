"""Run the published Spatial-SSRL data scripts (``data_process/*.py``) over a list of inputs, unchanged.

Used by ``bench_generate.py --upstream PATH``; runs under any Python that has the scripts' own dependencies
(opencv-python-headless, matplotlib, h5py, Pillow), not ssrl's. Each script hard-codes one input and runs
at import, so only its imports, constants and functions are taken (``ast``), and its entry function is
called once per input, writing its outputs as the script does. Two repairs, needed for the scripts to run
at all: ``Flip.py``'s function reads an undefined global ``direction`` (set here to 1, cv2's horizontal
flip), and the unused ``IPython`` imports of ``Shuffle.py``/``Flip.py`` are dropped.

    python upstream_driver.py UPSTREAM_CHECKOUT TASK OUT_DIR INPUTS.json

INPUTS.json is a list of ``{"image": ..., "depth": ..., "mask": ...}``. Prints one JSON line:
``{"samples": n, "failed": k, "bytes": total output bytes}``.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("MPLBACKEND", "Agg")

SCRIPTS = {"shuffle": "Shuffle.py", "flip": "Flip.py", "crop": "Crop.py", "depth_order": "Depth.py",
           "position_far": "Position.py", "position_near": "Position.py"}


def load(checkout: Path, task: str) -> dict[str, Any]:
    """The script's imports, constant assignments and functions, without its hard-coded run."""
    tree = ast.parse((checkout / "data_process" / SCRIPTS[task]).read_text())
    keep: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            if any(n.split(".")[0] == "IPython" for n in names):
                continue
            keep.append(node)
        elif isinstance(node, ast.FunctionDef) or (
            isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        ):
            keep.append(node)
    ns: dict[str, Any] = {"__name__": f"upstream_{task}", "direction": 1}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(checkout / SCRIPTS[task]), "exec"), ns)
    return ns


def run_one(ns: dict[str, Any], task: str, item: dict[str, str], out: Path, i: int) -> bool:
    """One sample, written where the script writes it (its fixed names in its working directory)."""
    cv2 = ns.get("cv2")
    if task == "shuffle":
        img, _ids = ns["split_shuffle_and_renumber"](item["image"], num_vertical=2, num_horizontal=2)
        return bool(cv2.imwrite(str(out / f"shuffle-{i}.jpg"), img))
    if task == "flip":
        img = ns["split_and_flip_one_patch"](item["image"], flip_index=random.randint(0, 3))
        return bool(cv2.imwrite(str(out / f"flip-{i}.jpg"), img))
    here = out / f"{task}-{i}"
    here.mkdir()
    os.chdir(here)
    if task == "crop":
        return ns["random_crop_blacken"](item["image"]) is not None
    if task == "depth_order":
        return ns["process_sample_3"](item["image"], item["depth"], item["mask"]) is not None
    if task == "position_far":
        ok, od, centers, depths = ns["one_sample_far"](item["depth"], item["image"])
        return bool(ok) and bool(ns["get_far_prompt"](od, centers, depths))
    ok, od, centers = ns["one_sample_near"](item["depth"], item["image"])
    return bool(ok) and bool(ns["get_near_prompt"](od, centers))


def main(argv: list[str]) -> int:
    checkout, task, out, inputs = Path(argv[0]), argv[1], Path(argv[2]).resolve(), json.loads(Path(argv[3]).read_text())
    random.seed(0)
    ns = load(checkout, task)
    ns["np"].random.seed(0)
    out.mkdir(parents=True, exist_ok=True)
    samples = failed = 0
    for i, item in enumerate(inputs):
        with contextlib.redirect_stdout(io.StringIO()):  # the scripts print questions and answers
            try:
                ok = run_one(ns, task, item, out, i)
            except Exception as e:  # a defect of the script on this input: count it, keep going
                print(f"{task} #{i}: {type(e).__name__}: {e}", file=sys.stderr)
                ok = False
        samples += ok
        failed += not ok
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(json.dumps({"samples": samples, "failed": failed, "bytes": total}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
