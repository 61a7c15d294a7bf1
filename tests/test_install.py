"""The generator installs and runs without torch: a fresh virtual environment with only the core package."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_core_install_generates_without_torch(tmp_path: Path) -> None:
    venv.create(tmp_path / "venv", with_pip=True)
    bin_dir = tmp_path / "venv" / "bin"
    r = subprocess.run([str(bin_dir / "pip"), "install", "-q", "--disable-pip-version-check", str(ROOT)],
                       capture_output=True, text=True, timeout=900)
    if r.returncode and "Could not find a version" in r.stderr:
        pytest.skip(f"package index unreachable: {r.stderr[-300:]}")
    assert r.returncode == 0, r.stderr[-3000:]
    probe = subprocess.run([str(bin_dir / "python"), "-c", "import importlib.util as u; print(u.find_spec('torch'))"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "None", "torch came with the core install"
    ssrl = str(bin_dir / "ssrl")
    for args in (["synth", str(tmp_path / "src"), "-n", "3", "--width", "224", "--height", "168"],
                 ["generate", "-i", str(tmp_path / "src"), "-o", str(tmp_path / "tasks"), "--set", "min_pixels=3136",
                  "--set", "max_pixels=50176"],
                 ["verify", str(tmp_path / "tasks")]):
        r = subprocess.run([ssrl, *args], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, (args, r.stderr[-3000:])
    r = subprocess.run([ssrl, "train", "--preflight"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "missing dependency: torch" in r.stderr and "ssrl[train]" in r.stderr
