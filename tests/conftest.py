"""Shared fixtures (synthetic scenes rendered in memory, textured images, small datasets on disk) and the one
skip rule: under CI (``CI`` set, as ``.ci/run`` does) every skip fails unless ``ALLOWED_SKIPS`` lists it."""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ssrl.sources.synth import SynthConfig, render_scene, synthesize
from ssrl.tasks.base import Scene

#: ../shared beside the checkout (as CI lays it out), or $SSRL_SHARED.
SHARED = Path(os.environ.get("SSRL_SHARED", Path(__file__).resolve().parents[2] / "shared"))
#: The paper's sample files.
REFERENCE = SHARED / "data" / "reference-samples"
#: Kubernetes schemas (the PyTorchJob CRD of training operator v1.9.0).
PYTORCHJOB_CRD = SHARED / "crds" / "kubeflow.org_pytorchjobs.yaml"

#: The only skips CI accepts: test (node id without parameters) -> (pattern the skip reason must match, why).
#: Any other skip -- skip, skipif, importorskip (module-level too), a missing binary, package or ../shared --
#: fails under CI, so a green run never means "not run".
ALLOWED_SKIPS: dict[str, tuple[str, str]] = {
    "tests/test_imageio.py::test_encode_is_deterministic_and_decodable": (
        "without WebP", "WebP is optional in Pillow builds; PNG and JPEG, which the generator writes, still run"),
    "tests/test_train.py::test_gpu_bf16_moves_the_weights": (
        "^needs a CUDA GPU$", "GPU check; the CI machines have none (the CPU training paths run everywhere)"),
    "tests/test_vllm_kwargs.py::test_gpu_logit_bias_keeps_vision_tokens_out_of_vllm_samples": (
        "needs a CUDA GPU and vLLM", "GPU check; vLLM pins its own torch, so it is not in the CPU suite's venv"),
    "tests/test_vllm_kwargs.py::test_gpu_grpo_step_with_vllm_colocate": (
        "needs a CUDA GPU and vLLM", "GPU check; vLLM pins its own torch, so it is not in the CPU suite's venv"),
    "tests/test_vllm_kwargs.py::test_gpu_validation_with_vllm_colocate_samples_at_paper_settings": (
        "needs a CUDA GPU and vLLM", "GPU check; vLLM pins its own torch, so it is not in the CPU suite's venv"),
}


def skip_problem(nodeid: str, reason: str) -> str | None:
    """Why a skip is not acceptable under CI, or None when it is (not CI, or allowlisted with a matching reason)."""
    if not os.environ.get("CI"):
        return None
    allowed = ALLOWED_SKIPS.get(nodeid.split("[", 1)[0])
    if allowed and re.search(allowed[0], reason):
        return None
    return (f"skipped under CI ({reason}): install or build what it names (make test, scripts/tools.sh, ../shared),"
            f" or add {nodeid.split('[', 1)[0]} to ALLOWED_SKIPS in tests/conftest.py with a reason")


def _fail_skip(report: pytest.CollectReport | pytest.TestReport) -> None:
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    problem = skip_problem(report.nodeid, reason.removeprefix("Skipped: "))
    if problem:
        report.outcome = "failed"
        report.longrepr = problem


#: Per-test time limits (pytest-timeout): a test not marked slow gets the ini default (60 s in pyproject.toml),
#: these markers more; an explicit @pytest.mark.timeout(N) wins. Tests over SLOW_AFTER seconds belong under slow.
MARKER_TIMEOUTS = {"cluster": 900, "slow": 600}
SLOW_AFTER = 5.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("timeout") is None:
            limit = next((t for m, t in MARKER_TIMEOUTS.items() if item.get_closest_marker(m)), None)
            if limit:
                item.add_marker(pytest.mark.timeout(limit))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Name the tests that took longer than SLOW_AFTER without the slow marker, so the marker stays honest."""
    late = sorted((r.duration, r.nodeid) for r in terminalreporter.stats.get("passed", [])
                  if r.when == "call" and r.duration > SLOW_AFTER and "slow" not in r.keywords
                  and "cluster" not in r.keywords)
    if late:
        terminalreporter.section(f"over {SLOW_AFTER:g} s without @pytest.mark.slow")
        for duration, nodeid in reversed(late):
            terminalreporter.line(f"{duration:7.1f} s  {nodeid}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """skip / skipif / importorskip / a fixture's skip inside a test: a failure under CI unless allowlisted."""
    outcome = yield
    _fail_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """A module-level importorskip (or skip(allow_module_level=True)): a collection error under CI."""
    outcome = yield
    _fail_skip(outcome.get_result())


def pytorchjob_problems(job: dict) -> list[str]:
    """What the API server (CRD schema) and the training operator's admission webhook (v1.9
    ``validatePyTorchReplicaSpecs``, not reachable in the cluster tier) would reject, plus our own shape.

    The webhook's rules: Master replicas exactly 1, every other role at least 1, a container named "pytorch"
    with an image in every role.
    """
    import jsonschema

    name = job["metadata"]["name"]
    problems = [f"{name}: {e.message}" for e in jsonschema.Draft7Validator(pytorchjob_schema()).iter_errors(job)]
    for role, spec in job["spec"]["pytorchReplicaSpecs"].items():
        replicas = spec.get("replicas")
        if role == "Master" and replicas != 1:
            problems.append(f"{name}: Master replicas must be 1, got {replicas}")
        elif role != "Master" and replicas is not None and replicas < 1:
            problems.append(f"{name}: {role} replicas must be at least 1, got {replicas} (omit the role instead)")
        containers = spec["template"]["spec"]["containers"]
        if not any(c["name"] == "pytorch" and c.get("image") for c in containers):
            problems.append(f"{name}: {role} needs a container named pytorch with an image")
        if role not in ("Master", "Worker") or spec.get("restartPolicy") not in ("OnFailure", "ExitCode"):
            problems.append(f"{name}: {role} must be Master or Worker with restartPolicy OnFailure or ExitCode")
    return problems


@functools.cache
def pytorchjob_schema() -> dict:
    """The CRD's v1 openAPIV3Schema; skips the calling test when ../shared/crds is absent."""
    import yaml

    if not PYTORCHJOB_CRD.is_file():
        pytest.skip(f"no PyTorchJob CRD at {PYTORCHJOB_CRD} (set SSRL_SHARED)")
    crd = yaml.safe_load(PYTORCHJOB_CRD.read_text())
    return next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 90, every: float = 0.5,
             diagnose: Callable[[], str] | None = None) -> Any:
    """Poll ``fn`` until it returns something truthy and return that (no sleep stands in for synchronisation); an
    expired deadline fails the test with ``fn``'s last answer and, when given, ``diagnose()``'s account."""
    deadline = time.monotonic() + timeout
    while not (last := fn()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what} (last: {last})"
                        + (f"\n{diagnose()}" if diagnose else ""))
        time.sleep(every)
    return last


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Random colour blocks plus noise: no patch is symmetric, so flips and rotations are always visible."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    img = np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)[:h, :w]
    return np.clip(img.astype(np.int16) + rng.integers(-20, 21, size=(h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def synth_scenes() -> list[tuple[Scene, object]]:
    """(Scene, SynthScene) pairs at a size the pixel budget keeps unchanged (multiples of 28)."""
    cfg = SynthConfig(width=336, height=252)
    out = []
    for i in range(12):
        s = render_scene(np.random.default_rng([7, i]), cfg)
        out.append((Scene(f"synth-{i}", s.image, s.depth, cx=s.cx, fx=s.fx), s))
    return out


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("synth")
    synthesize(d, 8, seed=3, cfg=SynthConfig(width=336, height=252))
    return d


@pytest.fixture
def reference() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip("shared/data/reference-samples is absent")
    return REFERENCE


@pytest.fixture(scope="session", params=["minio", "seaweedfs"])
def s3_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A real S3 server (MinIO, then SeaweedFS), shared by the tests of one worker."""
    from tests.servers import cleanup, start_server

    server = start_server(request.param, tmp_path_factory.mktemp(request.param))
    yield server
    cleanup(server)


@pytest.fixture
def s3(s3_server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the server, with the environment a user would set; returns its s3:// URL."""
    import uuid

    from ssrl.store import _root_store

    bucket = f"t-{uuid.uuid4().hex[:16]}"
    s3_server.make_bucket(bucket)
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    _root_store.cache_clear()
    yield f"s3://{bucket}"
    _root_store.cache_clear()
