"""Print the trainer image's pins (DeepSpeed is left out: the Dockerfile installs it from its sdist, DS_BUILD_OPS=0).

  .venv/bin/python docker/lock-trainer.py > docker/trainer-constraints.txt
      ssrl[s3,train,k8s]'s installed dependency closure: what the test suite ran (PyPI's torch, CUDA 13.x).
  .venv/bin/python docker/lock-trainer.py --cuda12 > docker/trainer-constraints-cu12.txt
      the same pins with the CUDA family (torch, torchvision, triton, nvidia-*, cuda-*) replaced by CUDA12_TORCH and
      what it needs, resolved by pip against PyPI (network; nothing is installed). Regenerate it after the first.
  .venv/bin/python docker/lock-trainer.py --vllm 0.31.0
      writes docker/trainer-vllm-constraints.txt (the vLLM variant's pins: vLLM pins its own torch) and
      docker/trainer-vllm.lock.json (vLLM's wheel and requirements, each moved pin and why), resolved by pip for the
      image's CPython 3.12 (network; nothing is installed). Regenerate it after the first.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "docker" / "trainer-constraints.txt"
EXTRAS = ("s3", "train", "k8s")
CUDA12_TORCH = "2.10.0"
"""The newest torch whose PyPI wheels are built for CUDA 12 (12.8, nvidia-*-cu12; 2.11 moved to CUDA 13). TRL 1.16
pins no torch; transformers 5 wants >= 2.6, ssrl >= 2.6."""

HEADER = """\
# Pins of ssrl[s3,train,k8s]'s runtime dependencies as the test suite ran them (torch, its CUDA wheels, TRL,
# transformers...): docker/trainer.Dockerfile installs them first, so one tag rebuilds the same torch/CUDA. DeepSpeed
# is pinned in the Dockerfile (built from its sdist). Regenerate: .venv/bin/python docker/lock-trainer.py > this file"""
HEADER_CUDA12 = f"""\
# CUDA 12.x variant of docker/trainer-constraints.txt, all from PyPI: its pins with torch {CUDA12_TORCH} (PyPI wheels
# built for CUDA 12.8, NVIDIA driver >= 570) and the torchvision, triton and nvidia-*-cu12 wheels it needs; every
# other package keeps the main file's version. Build: --build-arg CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04
# --build-arg CONSTRAINTS=docker/trainer-constraints-cu12.txt (no TORCH_INDEX_URL).
# Regenerate after the main file: .venv/bin/python docker/lock-trainer.py --cuda12 > this file"""


def closure(requirements: list[str]) -> dict[str, str]:
    """Installed versions of ``requirements`` and everything they require (markers evaluated here)."""
    seen: dict[tuple[str, frozenset[str]], str] = {}
    todo = [(r, set(r.extras)) for r in map(Requirement, requirements) if r.marker is None or r.marker.evaluate()]
    while todo:
        req, want = todo.pop()
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue  # a marker-excluded or optional dependency that is not installed
        key = (canonicalize_name(req.name), frozenset(want))
        if key in seen:
            continue
        seen[key] = dist.version
        for text in dist.requires or []:
            r = Requirement(text)
            if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in (sorted(want) or [""])):
                todo.append((r, set(r.extras)))
    return {n: v for (n, _), v in seen.items()}


def is_cuda_family(name: str) -> bool:
    """Packages whose versions follow torch's CUDA build: swapped as a whole for another CUDA major."""
    name = canonicalize_name(name)
    return name in ("torch", "torchvision", "triton") or name.startswith(("nvidia-", "cuda-"))


def parse_pins(text: str) -> dict[str, str]:
    """``name==version`` lines of a constraints file (comments skipped)."""
    return dict(line.split("==", 1) for line in text.splitlines() if line.strip() and not line.startswith("#"))


def render(header: str, pins: dict[str, str]) -> str:
    return "\n".join([header, *(f"{n}=={pins[n]}" for n in sorted(pins))]) + "\n"


def project_requirements() -> list[str]:
    """ssrl's own requirements with the image's extras, from pyproject.toml (nothing to build)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *(r for e in EXTRAS for r in project["optional-dependencies"][e])]


def resolve(requirements: list[str], constraints: dict[str, str]) -> dict[str, str]:
    """What pip would install for ``requirements`` under ``constraints`` from the index, for this interpreter."""
    with tempfile.TemporaryDirectory() as d:
        pins, report = Path(d, "constraints.txt"), Path(d, "report.json")
        pins.write_text(render("", constraints))
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--report", str(report), "-c", str(pins), *requirements], check=True)
        install = json.loads(report.read_text())["install"]
    return {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in install}


def cuda12_pins(main: dict[str, str]) -> dict[str, str]:
    """``main`` with its CUDA family replaced by CUDA12_TORCH's, resolved from PyPI; refuses a CUDA 13 leftover."""
    kept = {n: v for n, v in main.items() if not is_cuda_family(n)}
    pins = resolve([*project_requirements(), f"torch=={CUDA12_TORCH}"], kept)
    wrong = sorted(n for n in pins if n.startswith("nvidia-") and not n.endswith("-cu12"))
    if wrong:
        raise SystemExit(f"torch {CUDA12_TORCH} resolved to non-CUDA-12 wheels: {', '.join(wrong)}")
    return pins


# ---------------------------------------------------------------- the vLLM variant (--build-arg VLLM_VERSION=...)
# No vLLM release in TRL's supported range pins the torch the main file pins (each pins its own torch, torchvision
# and a transformers range), so ``pip install vllm==X`` over those pins would silently replace torch. The vLLM
# variant gets its own closure: ssrl[s3,train,k8s] + vllm==X, resolved for the image's Python and platform, keeping
# every main pin that closure allows and moving only what it rejects (and what follows from that).
VLLM_CONSTRAINTS = ROOT / "docker" / "trainer-vllm-constraints.txt"
VLLM_LOCK = ROOT / "docker" / "trainer-vllm.lock.json"
#: The trainer image (nvidia/cuda:*-ubuntu24.04): CPython 3.12, glibc 2.39, x86_64; markers are evaluated for it.
IMAGE_PYTHON, IMAGE_GLIBC = "3.12", 39
IMAGE_ENV = {"python_version": IMAGE_PYTHON, "python_full_version": f"{IMAGE_PYTHON}.3", "sys_platform": "linux",
             "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
             "implementation_name": "cpython", "platform_python_implementation": "CPython"}
HEADER_VLLM = """\
# vLLM variant of docker/trainer-constraints.txt: ssrl[s3,train,k8s] + vllm=={vllm} resolved for CPython {python},
# manylinux x86_64. Every main pin is kept unless this closure rejects it (docker/trainer-vllm.lock.json says which
# requirement moved each): vLLM pins its own torch. Build: --build-arg VLLM_VERSION={vllm}
# --build-arg CONSTRAINTS=docker/trainer-vllm-constraints.txt
# Regenerate after the main file: .venv/bin/python docker/lock-trainer.py --vllm {vllm}  (writes this and the lock)"""


def resolve_for_image(requirements: list[str], constraints: list[str]) -> list[dict]:
    """pip's ``--report`` install items for the trainer image's wheels (metadata only). pip picks wheels for
    ``--python-version`` but evaluates markers for the interpreter running it: ``vllm_lock`` checks them again for
    the image."""
    platforms = [f"manylinux_2_{g}_x86_64" for g in range(IMAGE_GLIBC, 4, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
    with tempfile.TemporaryDirectory() as d:
        pins, report = Path(d, "constraints.txt"), Path(d, "report.json")
        pins.write_text("".join(f"{c}\n" for c in constraints))
        r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                            "--report", str(report), "--target", str(Path(d, "target")), "--only-binary", ":all:",
                            "--python-version", IMAGE_PYTHON, "--implementation", "cp",
                            "--abi", f"cp{IMAGE_PYTHON.replace('.', '')}",
                            *(a for p in platforms for a in ("--platform", p)), "-c", str(pins), *requirements],
                           capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"pip cannot resolve {requirements} under {constraints}:\n{r.stderr[-3000:]}")
        return json.loads(report.read_text())["install"]


def image_requirements(items: list[dict]) -> list[tuple[str, Requirement]]:
    """Every resolved package's requirements that apply in the image (its markers, the extras asked of it), each
    with the package that states it."""
    def applying(extras: dict[str, set[str]]) -> list[tuple[str, Requirement]]:
        out = []
        for item in items:
            wanted = sorted(extras.get(canonicalize_name(item["metadata"]["name"]), set())) or [""]
            for text in item["metadata"].get("requires_dist") or []:
                req = Requirement(text)
                if req.marker is None or any(req.marker.evaluate({**IMAGE_ENV, "extra": e}) for e in wanted):
                    out.append((f"{item['metadata']['name']} {item['metadata']['version']}", req))
        return out

    extras: dict[str, set[str]] = {}
    while True:  # extras asked by applying requirements (torch asks cuda-toolkit[cublas,...]) make more apply
        reqs = applying(extras)
        grown: dict[str, set[str]] = {}
        for _, req in reqs:
            grown.setdefault(canonicalize_name(req.name), set()).update(req.extras)
        if grown == extras:
            return reqs
        extras = grown


def rejected(items: list[dict], pins: dict[str, str]) -> dict[str, tuple[str, Requirement]]:
    """``pins`` that a requirement of some resolved package rejects in the image: {name: (package, requirement)}."""
    from packaging.version import Version

    out: dict[str, tuple[str, Requirement]] = {}
    for owner, req in image_requirements(items):
        name = canonicalize_name(req.name)
        if name in pins and not req.specifier.contains(Version(pins[name]), prereleases=True):
            out.setdefault(name, (owner, req))
    return out


def vllm_lock(main: dict[str, str], version: str) -> tuple[dict[str, str], dict]:
    """The vLLM variant's pins and its lock record (vLLM's wheel, its Requires-Dist, each moved pin and why)."""
    wanted = [*project_requirements(), f"vllm=={version}"]
    # 1. vLLM's closure unpinned: which main pins does it reject? 2. Resolved again holding every other main pin,
    # plus what the image's markers require that pip's own interpreter did not see (e.g. setuptools<81 on 3.12).
    why = {n: f"{owner} requires {req}" for n, (owner, req) in rejected(resolve_for_image(wanted, []), main).items()}
    constraints = [f"{n}=={v}" for n, v in main.items() if n not in why]
    for _ in range(5):
        items = resolve_for_image(wanted, constraints)
        pins = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in items}
        misses = rejected(items, pins)
        missing = {canonicalize_name(r.name) for _, r in image_requirements(items)} - set(pins)
        if not misses and not missing:
            break
        constraints += [f"{r.name}{r.specifier}" for _, r in misses.values()]
        wanted += sorted(missing)
        why.update({n: f"{owner} requires {req}" for n, (owner, req) in misses.items()})
    else:
        raise SystemExit(f"the image's markers still reject {sorted(misses)} or miss {sorted(missing)}")
    (wheel,) = [i for i in items if canonicalize_name(i["metadata"]["name"]) == "vllm"]
    moved = {n: {"main": main[n], "vllm": pins[n], "why": why.get(n, "follows the moved pins")}
             for n in sorted(main) if n in pins and pins[n] != main[n]}
    lock = {"vllm": version, "wheel": wheel["download_info"]["url"].rsplit("/", 1)[-1],
            "sha256": wheel["download_info"].get("archive_info", {}).get("hashes", {}).get("sha256"),
            "environment": IMAGE_ENV, "requires_dist": wheel["metadata"].get("requires_dist") or [], "moved": moved}
    return pins, lock


def main(argv: list[str]) -> None:
    if argv[:1] == ["--vllm"] and len(argv) == 2:
        pins, lock = vllm_lock(parse_pins(MAIN.read_text()), argv[1])
        VLLM_CONSTRAINTS.write_text(render(HEADER_VLLM.format(vllm=argv[1], python=IMAGE_PYTHON), pins))
        VLLM_LOCK.write_text(json.dumps(lock, indent=1) + "\n")
        return
    if argv == ["--cuda12"]:
        print(render(HEADER_CUDA12, cuda12_pins(parse_pins(MAIN.read_text()))), end="")
        return
    if argv:
        raise SystemExit(__doc__)
    # From pyproject.toml, not ssrl's installed metadata (an editable install keeps the requirements it was made with).
    pins = closure(project_requirements())
    pins.pop("deepspeed", None)
    print(render(HEADER, pins), end="")


if __name__ == "__main__":
    main(sys.argv[1:])
