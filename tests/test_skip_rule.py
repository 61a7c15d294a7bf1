"""The one skip rule: under CI a skip fails, naming what is missing, unless ALLOWED_SKIPS lists it with a reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ALLOWED_SKIPS, skip_problem

ROOT = Path(__file__).resolve().parents[1]
#: One test that needs ../shared, one that needs a tool scripts/tools.sh builds.
NEEDS_SHARED = "tests/test_sources.py::test_reference_samples_pair_with_a_custom_rule"
NEEDS_HELM = "tests/test_deploy.py::test_helm_lint_strict"


def _pytest(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_XDIST_WORKER", "PYTEST_ADDOPTS")}
    env |= {"SSRL_SHARED": str(tmp_path / "no-shared"), "SSRL_TOOLS_CACHE": str(tmp_path / "no-tools")}
    if ci:
        env["CI"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
                           "-o", "addopts=-ra", NEEDS_SHARED, NEEDS_HELM], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_missing_shared_and_tool_fail_under_ci_and_skip_locally(tmp_path: Path) -> None:
    ci = _pytest(tmp_path, ci=True)
    assert ci.returncode == 1, ci.stdout[-3000:]
    assert f"FAILED {NEEDS_SHARED}" in ci.stdout and f"{tmp_path / 'no-shared'}" in ci.stdout, ci.stdout[-3000:]
    assert f"FAILED {NEEDS_HELM}" in ci.stdout and "helm is not built" in ci.stdout, ci.stdout[-3000:]
    local = _pytest(tmp_path, ci=False)
    assert local.returncode == 0 and "passed" not in local.stdout, local.stdout[-3000:]
    assert "helm is not built" in local.stdout and "skipped" in local.stdout


def test_allowlist_needs_a_matching_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    assert all(pattern and why for pattern, why in ALLOWED_SKIPS.values())
    node = "tests/test_imageio.py::test_encode_is_deterministic_and_decodable"
    monkeypatch.delenv("CI", raising=False)
    assert skip_problem("tests/test_x.py::test_y", "anything") is None
    monkeypatch.setenv("CI", "1")
    assert skip_problem(f"{node}[webp]", "Pillow built without WebP") is None
    assert "ALLOWED_SKIPS" in skip_problem(f"{node}[webp]", "some other reason")
    assert "no such tool" in skip_problem("tests/test_x.py::test_y[a]", "no such tool")
