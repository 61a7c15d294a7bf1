"""The S3 backend against real servers (MinIO and SeaweedFS built from source): no mock stands in."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import xxhash
from minio.error import S3Error

from ssrl.errors import StoreError, StoreUnavailableError
from ssrl.store import open_store
from ssrl.store.checkpoints import latest_step, list_steps, pull_checkpoint, save_checkpoint
from ssrl.store.s3 import S3Settings, S3Store
from ssrl.store.transfer import COMMIT, upload_tree


def test_basic_operations(s3: str) -> None:
    store = open_store(f"{s3}/root")
    assert isinstance(store, S3Store)
    store.write_bytes("a/b.txt", b"hello")
    store.write_bytes("a/c/d.bin", os.urandom(1000))
    assert store.read_bytes("a/b.txt") == b"hello" and store.size("a/c/d.bin") == 1000
    assert store.list() == ["a/b.txt", "a/c/d.bin"] and store.list("a/c") == ["a/c/d.bin"]
    assert store.exists("a/b.txt") and not store.exists("a/zz")
    assert store.checksum("a/b.txt") == hashlib.sha256(b"hello").hexdigest()
    assert store.join("a").read_bytes("b.txt") == b"hello"
    store.delete("a/b.txt")
    assert store.list() == ["a/c/d.bin"]
    with pytest.raises(StoreError, match=r"s3://t-\w+/root/nope does not exist"):
        store.read_bytes("nope")


def test_open_write_is_atomic(s3: str) -> None:
    store = open_store(s3)
    with pytest.raises(RuntimeError), store.open_write("x.parquet") as f:
        f.write(b"half a shard")
        raise RuntimeError("writer killed")
    assert store.list() == []


def test_multipart_streaming_roundtrip(s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "store.yaml"
    config.write_text("part_size: 5242880\nparallel: 3\n")
    monkeypatch.setenv("SSRL_STORE_CONFIG", str(config))
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        for _ in range(22):
            f.write(os.urandom(1 << 20))
    store = S3Store(s3)
    assert store.settings.part_size == 5 * 1024 * 1024
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    xxh128 = xxhash.xxh3_128(big.read_bytes()).hexdigest()
    assert store.put_file("ckpt/model.safetensors", big) == {"sha256": digest, "xxh128": xxh128}  # hashed while sent
    assert store.get_file("ckpt/model.safetensors", tmp_path / "back.bin") == digest  # hashed while received
    assert store.get_file("ckpt/model.safetensors", tmp_path / "back.bin", "xxh128") == xxh128
    assert hashlib.sha256((tmp_path / "back.bin").read_bytes()).hexdigest() == digest
    assert store.checksum("ckpt/model.safetensors") == digest  # kept as a tag: known only after the last part
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.bin", "big.bin", "store.yaml"]  # no temp left


def test_one_part_put_is_signed_with_its_recorded_digest(s3: str) -> None:
    """A one-part PUT is signed with the digest ssrl records instead of a second hash of the body; the server still
    checks it, so a body that does not match its digest is refused, not stored."""
    store = S3Store(s3)
    data = os.urandom(100_000)
    store.write_bytes("ok.bin", data)
    assert store.checksum("ok.bin") == hashlib.sha256(data).hexdigest() and store.read_bytes("ok.bin") == data
    with pytest.raises(S3Error, match="XAmzContentSHA256Mismatch"):
        store._put_one("bad.bin", data, hashlib.sha256(b"other bytes").hexdigest())
    assert not store.exists("bad.bin")


def test_upload_tree_skips_unchanged_multipart_files(s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "store.yaml").write_text("part_size: 5242880\n")
    monkeypatch.setenv("SSRL_STORE_CONFIG", str(tmp_path / "store.yaml"))
    src = tmp_path / "ckpt"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(6 << 20))  # two parts
    (src / "small.json").write_text("{}")
    store = S3Store(f"{s3}/up")
    first = upload_tree(src, store)
    assert [f["uploaded"] for f in first.values()] == [True, True]
    assert first["big.bin"]["sha256"] == hashlib.sha256((src / "big.bin").read_bytes()).hexdigest()
    assert [f["uploaded"] for f in upload_tree(src, store).values()] == [False, False]
    data = bytearray((src / "big.bin").read_bytes())
    data[-1] ^= 1  # same size, other bytes
    (src / "big.bin").write_bytes(bytes(data))
    third = upload_tree(src, store)
    assert {k: f["uploaded"] for k, f in third.items()} == {"big.bin": True, "small.json": False}
    assert store.checksum("big.bin") == third["big.bin"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_clear_errors_without_secrets(s3: str, s3_server, tmp_path: Path) -> None:
    env = s3_server.env()
    bad = S3Store(s3, S3Settings.load({**env, "AWS_SECRET_ACCESS_KEY": "wrong-secret-value"}))
    with pytest.raises(StoreUnavailableError, match="access denied") as e:
        bad.list()
    assert "wrong-secret-value" not in str(e.value) and "wrong-secret-value" not in repr(bad)
    missing = S3Store("s3://no-such-bucket-here", S3Settings.load(env))
    with pytest.raises(StoreUnavailableError, match="bucket 'no-such-bucket-here' does not exist"):
        missing.read_bytes("x")
    (tmp_path / "fast.yaml").write_text("retries: 1\nbackoff: 0.01\n")
    from tests.servers import free_port

    down = S3Store(s3, S3Settings.load({**env, "SSRL_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}",
                                        "SSRL_STORE_CONFIG": str(tmp_path / "fast.yaml")}))
    with pytest.raises(StoreUnavailableError, match="unreachable after 2 attempts"):
        down.write_bytes("x", b"y")
    with pytest.raises(StoreError, match="SSRL_S3_ENDPOINT"):
        S3Settings.load({"SSRL_STORE_CONFIG": str(tmp_path / "none.yaml")})


@pytest.mark.slow
def test_upload_skips_unchanged_and_cli(s3: str, s3_server, tmp_path: Path) -> None:
    src = tmp_path / "data"
    (src / "sub").mkdir(parents=True)
    for i in range(5):
        (src / "sub" / f"f{i}.bin").write_bytes(os.urandom(2000 + i))
    store = open_store(f"{s3}/up")
    first = upload_tree(src, store)
    assert sum(f["uploaded"] for f in first.values()) == 5
    (src / "sub" / "f0.bin").write_bytes(b"changed")
    second = upload_tree(src, store)
    assert [k for k, f in second.items() if f["uploaded"]] == ["sub/f0.bin"]
    env = {**os.environ, **s3_server.env()}
    r = subprocess.run([sys.executable, "-m", "ssrl", "store", "upload", str(src), f"{s3}/cli"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0 and "5 uploaded, 0 unchanged" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "ssrl", "store", "ls", f"{s3}/cli"], env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0 and "sub/f4.bin" in r.stdout
    no_creds = {k: v for k, v in env.items() if not k.startswith(("AWS_", "SSRL_S3"))}
    r = subprocess.run([sys.executable, "-m", "ssrl", "store", "ls", f"{s3}/cli"], env=no_creds,
                       capture_output=True, text=True)
    assert r.returncode == 4 and "SSRL_S3_ENDPOINT" in r.stderr and "Traceback" not in r.stderr


def _checkpoint(folder: Path, seed: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"seed": seed}))
    (folder / "model.safetensors").write_bytes(os.urandom(50_000))
    (folder / "trainer_state.json").write_text("{}")
    return folder


def test_checkpoints_commit_latest_and_half_written(s3: str, tmp_path: Path) -> None:
    run = open_store(f"{s3}/checkpoints/run-1")
    save_checkpoint(run, 10, _checkpoint(tmp_path / "c10", 10))
    save_checkpoint(run, 20, _checkpoint(tmp_path / "c20", 20))
    upload_tree(_checkpoint(tmp_path / "c30", 30), run, "step-30")  # parts uploaded, crash before the record
    assert list_steps(run) == [10, 20] and latest_step(run) == 20
    got = pull_checkpoint(run, tmp_path / "pulled")
    assert got == 20 and json.loads((tmp_path / "pulled" / "config.json").read_text()) == {"seed": 20}
    with pytest.raises(StoreError, match="not a committed checkpoint"):
        pull_checkpoint(run, tmp_path / "p30", 30)
    run.write_bytes("step-10/model.safetensors", b"bit rot")
    with pytest.raises(StoreError, match="checksum differs"):
        pull_checkpoint(run, tmp_path / "p10", 10)


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_pull_refuses_a_corrupt_multipart_object(s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 damage: str) -> None:
    """The digest computed while the bytes arrive is compared with the commit record: an object changed after the
    commit (same size or cut short) fails the pull, and nothing of it lands in the destination."""
    (tmp_path / "store.yaml").write_text("part_size: 5242880\n")
    monkeypatch.setenv("SSRL_STORE_CONFIG", str(tmp_path / "store.yaml"))
    ckpt = _checkpoint(tmp_path / "c1", 1)
    data = os.urandom(11 << 20)
    (ckpt / "model.safetensors").write_bytes(data)
    run = S3Store(f"{s3}/checkpoints/corrupt")
    save_checkpoint(run, 1, ckpt)
    bad = data[:-1] if damage == "truncated" else data[:5000] + bytes([data[5000] ^ 0x80]) + data[5001:]
    (tmp_path / "bad.bin").write_bytes(bad)
    run.put_file("step-1/model.safetensors", tmp_path / "bad.bin")
    dest = tmp_path / "pulled"
    with pytest.raises(StoreError, match=r"model.safetensors: checksum differs from its commit record"):
        pull_checkpoint(run, dest)
    assert not (dest / "model.safetensors").exists()
    assert not [p.name for p in dest.iterdir() if "model.safetensors" in p.name]  # no temp file, no stamp
    run.put_file("step-1/model.safetensors", ckpt / "model.safetensors")  # repaired: the pull now succeeds
    assert pull_checkpoint(run, dest) == 1 and (dest / "model.safetensors").read_bytes() == data


@pytest.mark.parametrize("key", ["../evil.txt", "/etc/evil", "a/../../evil", "x" * 300, "a/./b"])
def test_hostile_keys_refused_on_pull(s3: str, tmp_path: Path, key: str) -> None:
    run = open_store(f"{s3}/checkpoints/hostile")
    run.write_bytes("step-1/ok.txt", b"ok")
    record = {"files": {"ok.txt": {"size": 2, "sha256": hashlib.sha256(b"ok").hexdigest()},
                        key: {"size": 1, "sha256": "0" * 64}}, "step": 1}
    run.write_bytes(f"step-1/{COMMIT}", json.dumps(record).encode())
    dest = tmp_path / "dest"
    with pytest.raises(StoreError, match="refusing to pull key"):
        pull_checkpoint(run, dest, 1)
    assert not (tmp_path / "evil.txt").exists() and not dest.exists()
