"""The CLI as a user runs it: a real process, exit codes, messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.badcorpus import build_bad_corpus

SMALL = ["--set", "min_pixels=3136", "--set", "max_pixels=50176"]


def ssrl(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ssrl", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_and_version() -> None:
    r = ssrl("--help")
    assert r.returncode == 0
    for cmd in ("generate", "synth", "preview", "report", "verify", "tasks"):
        assert cmd in r.stdout
    assert ssrl("--version").stdout.startswith("ssrl ")
    assert "--shard-index" in ssrl("generate", "--help").stdout
    assert "rotation" in ssrl("tasks").stdout


def test_synth_generate_report_verify_preview(tmp_path: Path) -> None:
    assert ssrl("synth", str(tmp_path / "src"), "-n", "4", "--width", "224", "--height", "168").returncode == 0
    cfg = tmp_path / "gen.yaml"
    cfg.write_text(f"inputs: [{tmp_path / 'src'}]\noutput: {tmp_path / 'ds'}\nseed: 1\nshard_size: 2\n")
    r = ssrl("generate", "-c", str(cfg), "--tasks", "shuffle,crop,position", "--set", "seed=4", *SMALL)
    assert r.returncode == 0, r.stderr
    assert "sources" in r.stderr and "crop" in r.stdout and "χ² p-value" in r.stdout
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["config"]["seed"] == 4 and manifest["config"]["tasks"] == ["shuffle", "crop", "position"]
    assert ssrl("report", str(tmp_path / "ds")).returncode == 0
    v = ssrl("verify", str(tmp_path / "ds"))
    assert v.returncode == 0 and "verified" in v.stdout
    p = ssrl("preview", str(tmp_path / "ds"), "-n", "3")
    assert p.returncode == 0 and (tmp_path / "ds" / "preview" / "preview.png").stat().st_size > 0
    assert "<html" in (tmp_path / "ds" / "preview" / "index.html").read_text().lower()
    # tampering with a committed shard is caught
    shard = tmp_path / "ds" / "shard-00000.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    t = ssrl("verify", str(tmp_path / "ds"))
    assert t.returncode != 0 and "sha256" in t.stderr


def test_config_errors_exit_2_with_every_problem(tmp_path: Path) -> None:
    r = ssrl("generate", "-i", str(tmp_path / "missing"), "-o", str(tmp_path / "ds"), "--tasks", "shuffle,nope")
    assert r.returncode == 2 and "config error" in r.stderr and "nope" in r.stderr
    r = ssrl("generate", "-i", str(tmp_path / "missing"), "-o", str(tmp_path / "ds"))
    assert r.returncode == 2 and "missing" in r.stderr
    r = ssrl("generate", "-i", "x", "--set", "sed=3", "--set", "workers=zero")
    assert r.returncode == 2 and "did you mean seed" in r.stderr and "workers" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("inputs: [unclosed\n")
    r = ssrl("generate", "-c", str(bad))
    assert r.returncode == 2 and "not valid YAML" in r.stderr
    assert "Traceback" not in r.stderr


def test_strict_exits_3_and_store_errors_exit_4(tmp_path: Path) -> None:
    build_bad_corpus(tmp_path / "bad")
    r = ssrl("generate", "-q", "-i", str(tmp_path / "bad"), "-o", str(tmp_path / "ds"), "--strict", *SMALL)
    assert r.returncode == 3 and "bad input" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "file").write_text("x")
    r = ssrl("generate", "-q", "-i", str(tmp_path / "bad" / "good.jpg"), "-o", str(tmp_path / "file" / "ds"), *SMALL)
    assert r.returncode == 4 and "store error" in r.stderr
    r = ssrl("report", str(tmp_path / "nothing"))
    assert r.returncode == 1 and "manifest.json does not exist" in r.stderr


def test_usage_errors_exit_2_and_the_cli_needs_no_click_package() -> None:
    # typer >= 0.29 vendors click; the `click` package comes only with some extras. Block it entirely.
    code = ("import sys; sys.modules['click'] = None; from ssrl.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "generate", "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "No such option: --bogus" in r.stderr and "internal error" not in r.stderr
    r = subprocess.run([sys.executable, "-c", code, "store", "mb", "/tmp/not-s3"], capture_output=True, text=True)
    assert r.returncode == 2 and "needs an s3:// URL" in r.stderr
    r = subprocess.run([sys.executable, "-c", code, "tasks"], capture_output=True, text=True)
    assert r.returncode == 0 and "shuffle" in r.stdout
