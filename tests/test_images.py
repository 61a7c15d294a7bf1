"""Container images: ``make images`` (docker/build-images.sh), the trainer image's layer order and pins, and the
README's MinIO snippet. No container engine runs on our CI machines: the script runs with a stand-in engine on PATH
that records its calls (what is under test is the script's orchestration, not docker), and the Dockerfiles are
linted by hadolint in test_deploy.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
FAKE_ENGINE = """#!/usr/bin/env bash
echo "$*" >> "$ENGINE_LOG"
if [[ $1 == inspect ]]; then echo "${@: -1}@sha256:$(printf %s "${@: -1}" | sha256sum | cut -c1-64)"; fi
if [[ $1 == push && $2 == --digestfile ]]; then echo "sha256:$(printf %s "$4" | sha256sum | cut -c1-64)" > "$3"; fi
"""


def build_images(tmp_path: Path, engine: str = "docker", **env: str) -> tuple[subprocess.CompletedProcess, list]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / engine).write_text(FAKE_ENGINE)
    (bin_dir / engine).chmod(0o755)
    log = tmp_path / "engine.log"
    log.write_text("")
    run_env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "ENGINE_LOG": str(log), "HOME": str(tmp_path), **env}
    r = subprocess.run(["make", "-s", "-C", str(ROOT), "images"], capture_output=True, text=True, env=run_env,
                       timeout=60)
    return r, [line.split() for line in log.read_text().splitlines()]


def test_make_images_needs_a_real_registry(tmp_path):
    r, calls = build_images(tmp_path)
    assert r.returncode != 0 and "set REGISTRY" in r.stderr and not calls
    r, calls = build_images(tmp_path, REGISTRY="ghcr.io/ssrl")
    assert r.returncode != 0 and "placeholder" in r.stderr and not calls


@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_make_images_builds_all_three_and_prints_digests(tmp_path, engine):
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    r, calls = build_images(tmp_path, engine, REGISTRY="registry.example.com/ml/", PUSH="1",
                            TRAINER_BUILD_ARGS="--build-arg VLLM_VERSION=0.31.0")
    assert r.returncode == 0, r.stdout + r.stderr
    builds = [c for c in calls if c[0] == "build"]
    assert [(c[c.index("-f") + 1], c[c.index("-t") + 1]) for c in builds] == [
        (str(DOCKER / "generator.Dockerfile"), f"registry.example.com/ml/ssrl-generator:{version}"),
        (str(DOCKER / "trainer.Dockerfile"), f"registry.example.com/ml/ssrl-trainer:{version}"),
        (str(DOCKER / "minio.Dockerfile"), "registry.example.com/ml/ssrl-minio:20260212-7aac2a2")]
    assert all(c[-1] == str(ROOT) for c in builds)  # the repository is the build context (.dockerignore)
    assert "VLLM_VERSION=0.31.0" in builds[1] and "VLLM_VERSION=0.31.0" not in builds[0]
    pushed = [c[-1] for c in calls if c[0] == "push"]
    assert pushed == [c[c.index("-t") + 1] for c in builds]
    digests = re.findall(r"^pushed (\S+)@(sha256:[0-9a-f]{64})$", r.stdout, re.M)
    assert [d[0] for d in digests] == pushed
    assert "--set images.registry=registry.example.com/ml\n" in r.stdout
    for key, (ref, digest) in zip(("generator", "trainer", "minio"), digests, strict=True):
        assert ref.startswith(f"registry.example.com/ml/ssrl-{key}:")
        assert f"--set images.{key}.tag={ref.rpartition(':')[2]}@{digest}\n" in r.stdout


def _steps(text: str) -> list[str]:
    """A Dockerfile's COPY and RUN instructions, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line for line in joined.splitlines() if re.match(r"^(COPY|RUN)\b", line)]


def test_trainer_layers_dependencies_before_source():
    """A source edit must not rebuild (or make users pull again) the torch layer: the pinned dependencies install
    before `COPY ssrl`, in a stage whose venv the final image copies before the package's own small layer."""
    text = (DOCKER / "trainer.Dockerfile").read_text()
    build = text[:text.rindex("\nFROM ")]
    steps = _steps(build)
    copy_src = next(i for i, s in enumerate(steps) if s.startswith("COPY ssrl"))
    deps = next(i for i, s in enumerate(steps) if s.startswith("RUN") and "-r constraints.txt" in s)
    deepspeed = next(i for i, s in enumerate(steps) if "DS_BUILD_OPS=0" in s)
    assert deps < deepspeed < copy_src
    assert all(not s.startswith("COPY") or "ssrl" not in s.split()[1] for s in steps[:copy_src])
    assert '-c constraints.txt ".[s3,train,k8s]"' in build  # the source install is held to the same pins
    # pip's cache is a build cache mount on every download step (a constraints change re-downloads only changes).
    assert all("--mount=type=cache,target=/root/.cache/pip" in steps[i] for i in (deps, deepspeed))
    # The final image: the deps stage's venv (no package in it yet), then the package's wheel, nothing else copied.
    assert re.search(r"^FROM \$\{CUDA_IMAGE\} AS deps$", text, re.M) and "FROM deps AS build" in text
    final = _steps(text[text.rindex("\nFROM "):])
    copies = [s for s in final if s.startswith("COPY")]
    assert copies == ["COPY --from=deps /opt/venv /opt/venv", "COPY --from=build /wheels /opt/wheels"], copies
    assert "--no-deps --no-index /opt/wheels/*.whl" in final[-1]
    # The final stage stays devel: DeepSpeed (DS_BUILD_OPS=0) compiles its ops with nvcc at run time.
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:[\d.]+-cudnn-devel-", text, re.M)
    assert "ARG TORCH_INDEX_URL=\"\"" in text  # CUDA 12.x variant by build arg; PyPI by default
    assert "!docker/trainer-constraints.txt" in (ROOT / ".dockerignore").read_text().split()


@pytest.mark.slow
def test_trainer_constraints_are_what_the_suite_runs():
    """The pins cover this environment's installed closure of ssrl[s3,train,k8s] exactly. make installs under them
    (pip -c), so this fails when pyproject gains a dependency the pins lack: regenerate them."""
    pytest.importorskip("torch")
    r = subprocess.run([sys.executable, str(DOCKER / "lock-trainer.py")], capture_output=True, text=True, check=True)
    assert r.stdout == (DOCKER / "trainer-constraints.txt").read_text(), \
        "stale: .venv/bin/python docker/lock-trainer.py > docker/trainer-constraints.txt"
    pins = dict(line.split("==") for line in r.stdout.splitlines() if not line.startswith("#"))
    assert {"torch", "torchvision", "transformers", "trl", "minio", "kubernetes"} <= set(pins)
    assert "deepspeed" not in pins and "ssrl" not in pins


def test_readme_minio_snippet_matches_the_dockerfile():
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"```dockerfile\n(.*?)```", readme, re.S).group(1)

    def instructions(text: str) -> list[str]:
        joined = re.sub(r"\\\n\s*", " ", text)
        return [" ".join(line.split()) for line in joined.splitlines()
                if line.strip() and not line.lstrip().startswith("#") and not line.startswith("LABEL")]

    dockerfile = (DOCKER / "minio.Dockerfile").read_text()
    assert instructions(snippet) == [i for i in instructions(dockerfile) if not i.startswith("LABEL")]



def test_cuda12_constraints_swap_only_the_cuda_family():
    """The CUDA 12.x variant, all from PyPI: docker/trainer-constraints-cu12.txt pins CUDA12_TORCH with CUDA 12 wheels
    only (for the CUDA minor of the base image its header names), and every other package at the main file's version,
    so regenerating the main file without it fails here. The build context carries it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("lock_trainer", DOCKER / "lock-trainer.py")
    lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock)
    text = (DOCKER / "trainer-constraints-cu12.txt").read_text()
    main, cu12 = lock.parse_pins((DOCKER / "trainer-constraints.txt").read_text()), lock.parse_pins(text)
    assert text == lock.render(lock.HEADER_CUDA12, cu12)
    assert cu12["torch"] == lock.CUDA12_TORCH and {"torchvision", "triton"} <= set(cu12)
    nvidia = [n for n in cu12 if n.startswith("nvidia-")]
    assert nvidia and all(n.endswith("-cu12") for n in nvidia), nvidia
    image = re.search(r"CUDA_IMAGE=nvidia/cuda:(\d+\.\d+)\.\d+-cudnn-devel-", text)
    runtime = cu12["nvidia-cuda-runtime-cu12"]
    assert image and runtime.startswith(image[1] + "."), (image, runtime)

    def others(pins: dict[str, str]) -> dict[str, str]:
        return {n: v for n, v in pins.items() if not lock.is_cuda_family(n)}

    assert others(cu12) == others(main), \
        "stale: .venv/bin/python docker/lock-trainer.py --cuda12 > docker/trainer-constraints-cu12.txt"
    assert "!docker/trainer-constraints-cu12.txt" in (ROOT / ".dockerignore").read_text().split()
