"""Faults on real S3 servers, shown to happen: the server dies while an upload has a multipart upload open or while
a checkpoint pull is downloading, the generator dies mid-run; nothing is lost, doubled or left half-done.

Each test asserts its fault took effect (the client was still running when the server or it was killed, and
the client logged its retries), so it fails if the fault is taken out.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from minio import Minio

from ssrl.dataset.generate import GenerateConfig, run
from ssrl.dataset.shards import iter_rows
from ssrl.store import open_store
from tests.conftest import wait_for
from tests.servers import ACCESS_KEY, SECRET_KEY, S3Server, cleanup, start_server

SMALL = ["--set", "min_pixels=3136", "--set", "max_pixels=50176"]
PART = 5 << 20  # the smallest part S3 allows; the fault files are 2.4 parts each
BUCKET = "ssrl"


@pytest.fixture
def own_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Start a server of this test's own (it gets killed), with a user's environment pointing at it: small parts,
    and retries that outlast a slow restart on a loaded machine (0.25 s doubling to 8 s, 14 times: 80 s)."""
    from ssrl.store import _root_store

    started: list[S3Server] = []

    def start(kind: str) -> S3Server:
        srv = start_server(kind, tmp_path / kind)
        started.append(srv)
        srv.make_bucket(BUCKET)
        config = tmp_path / "store.yaml"
        config.write_text(f"part_size: {PART}\nparallel: 2\nretries: 14\nbackoff: 0.25\ntimeout: 20\n")
        for k, v in {**srv.env(), "SSRL_STORE_CONFIG": str(config)}.items():
            monkeypatch.setenv(k, v)
        _root_store.cache_clear()
        return srv

    yield start
    for srv in started:
        cleanup(srv)
    _root_store.cache_clear()


@pytest.fixture(params=["minio", "seaweedfs"])
def server(request: pytest.FixtureRequest, own_server) -> S3Server:
    return own_server(request.param)


@pytest.fixture
def minio(own_server) -> S3Server:
    return own_server("minio")


def client(srv: S3Server) -> Minio:
    return Minio(f"127.0.0.1:{srv.port}", ACCESS_KEY, SECRET_KEY, secure=False)


def keys(srv: S3Server, prefix: str) -> list[str]:
    return sorted(o.object_name for o in client(srv).list_objects(BUCKET, prefix=prefix, recursive=True))


def open_uploads(srv: S3Server, keys: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(key, upload id) of the incomplete multipart uploads in the bucket, and of each of ``keys``: after a restart
    MinIO lists the uploads it had on disk only when asked for their exact key."""
    c = client(srv)
    found = {(u.object_name, u.upload_id) for prefix in ("", *keys)
             for u in c._list_multipart_uploads(BUCKET, prefix=prefix).uploads}
    return sorted(found)


def big_files(folder: Path, n: int, size: int = 12 << 20) -> dict[str, str]:
    """n random files larger than the part size; returns {name: sha256}."""
    folder.mkdir(parents=True)
    out = {}
    for i in range(n):
        data = os.urandom(size)
        (folder / f"part-{i:02d}.bin").write_bytes(data)
        out[f"part-{i:02d}.bin"] = hashlib.sha256(data).hexdigest()
    return out


def kill_and_restart(srv: S3Server, client_proc: subprocess.Popen) -> None:
    """SIGKILL the server while the client runs, then start it again on the same port and data."""
    srv.kill()
    assert srv.proc.returncode == -signal.SIGKILL
    assert client_proc.poll() is None, "the client finished before the server died: no fault happened"
    srv.start(timeout=120)


@pytest.mark.slow
def test_server_killed_with_multipart_upload_open(server: S3Server, tmp_path: Path) -> None:
    want = big_files(tmp_path / "dataset", 12)
    cmd = [sys.executable, "-m", "ssrl", "store", "upload", str(tmp_path / "dataset"), "s3://ssrl/tasks/big", "-w",
           "2"]
    proc = subprocess.Popen(cmd, env=os.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[tuple[str, str]] = []

    def uploading() -> bool:
        seen[:] = open_uploads(server) if proc.poll() is None else []
        return bool(seen)
    wait_for("a multipart upload open while the uploader runs", uploading, 120, every=0.01)
    kill_and_restart(server, proc)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "retrying write" in err and "unreachable" in err, err[-3000:]  # the uploader met the dead server
    assert "Traceback" not in err
    names = [k.removeprefix("tasks/big/") for k in keys(server, "tasks/big/")]
    assert names == sorted(want)  # nothing missing, nothing doubled
    store = open_store("s3://ssrl/tasks/big")
    for name, digest in want.items():
        assert hashlib.sha256(store.read_bytes(name)).hexdigest() == digest == store.checksum(name), name
    # The uploads open at the kill were aborted by the retry, not left to hold storage forever.
    left = open_uploads(server, tuple(f"tasks/big/{name}" for name in want))
    assert left == [], f"left open: {left} (open at the kill: {seen})"


@pytest.mark.slow
def test_server_killed_during_ckpt_pull(minio: S3Server, tmp_path: Path) -> None:
    """One server suffices here (the upload fault runs on both): the download path is the same GET either way."""
    server = minio
    from ssrl.store.checkpoints import save_checkpoint

    want = big_files(tmp_path / "ckpt", 8)
    save_checkpoint(open_store("s3://ssrl/checkpoints/run"), 3, tmp_path / "ckpt")
    dest = tmp_path / "pulled"
    cmd = [sys.executable, "-m", "ssrl", "ckpt", "pull", "s3://ssrl/checkpoints/run", str(dest)]
    proc = subprocess.Popen(cmd, env=os.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The minio client streams each object into "<name>.<etag>.part.minio" before renaming it.
    wait_for("a download in progress",
             lambda: proc.poll() is None and dest.is_dir() and any(".part" in p.name for p in dest.iterdir()),
             120, every=0.01)
    done_at_kill = {p.name for p in dest.iterdir() if p.name in want}
    kill_and_restart(server, proc)
    assert len(done_at_kill) < len(want)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "retrying download" in err or "retrying stat" in err, err[-3000:]
    assert "step 3 ->" in out + err
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".")) == sorted(want)
    assert not [p.name for p in dest.iterdir() if p.name.endswith((".part", ".minio"))]  # no partial file left
    for name, digest in want.items():
        assert hashlib.sha256((dest / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.slow
def test_generator_killed_mid_run_resumes_byte_identical(minio: S3Server, synth_dir: Path, tmp_path: Path) -> None:
    args = [sys.executable, "-m", "ssrl", "generate", "-q", "-i", str(synth_dir), "--shard-size", "1", *SMALL]
    subprocess.run([*args, "-o", str(tmp_path / "clean")], check=True, capture_output=True)
    proc = subprocess.Popen([*args, "-o", "s3://ssrl/tasks/killed"], env=os.environ, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # the first committed shard, polled closely: a whole run of these 8 small scenes takes about a second now
    wait_for("shard 0 committed", lambda: "tasks/killed/shard-00000.json" in keys(minio, "tasks/killed/"), 120,
             every=0.01)
    assert proc.poll() is None, "the generator finished before it was killed"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert "tasks/killed/manifest.json" not in keys(minio, "tasks/killed/")
    out = subprocess.run([*args, "-o", "s3://ssrl/tasks/killed"], env=os.environ, capture_output=True, text=True)
    assert out.returncode == 0 and "already committed" in out.stderr, out.stderr
    store = open_store("s3://ssrl/tasks/killed")
    local = {p.name: p.read_bytes() for p in (tmp_path / "clean").iterdir() if p.is_file()}
    assert store.list() == sorted(local)
    for name, data in local.items():
        assert store.read_bytes(name) == data, name


@pytest.mark.slow
def test_generate_reads_sources_from_the_store(s3: str, synth_dir: Path, tmp_path: Path) -> None:
    from ssrl.store.transfer import upload_tree

    upload_tree(synth_dir, open_store(f"{s3}/sources/synth"))
    base = {"shard_size": 4, "min_pixels": 3136, "max_pixels": 50176}
    run(GenerateConfig(inputs=[f"{s3}/sources/synth"], output=f"{s3}/tasks/remote", **base))
    run(GenerateConfig(inputs=[str(synth_dir)], output=str(tmp_path / "local"), **base))
    remote = open_store(f"{s3}/tasks/remote")
    for shard in sorted((tmp_path / "local").glob("shard-*.parquet")):
        assert remote.read_bytes(shard.name) == shard.read_bytes()
    rows = list(iter_rows(f"{s3}/tasks/remote"))
    assert {r["task"] for r in rows} == {"shuffle", "flip", "crop", "depth_order", "position"}
    assert all(r["source_id"].startswith("synth-") for r in rows)
