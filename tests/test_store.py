import hashlib
import io
import os
import threading
from pathlib import Path

import pytest
import xxhash

from ssrl.errors import StoreError
from ssrl.store import LocalStore, check_key, copy_hashing, file_digests, open_store
from ssrl.store.transfer import fetch_verified, is_verified


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a/../../b", "", "a//b", "a\\b", "x" * 2000, "a/./b", "a\0b"])
def test_hostile_keys_refused(key: str) -> None:
    with pytest.raises(StoreError, match="unsafe object key"):
        check_key(key)


def test_atomic_write_and_listing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write_bytes("a/b.txt", b"hello")
    assert store.read_bytes("a/b.txt") == b"hello" and store.size("a/b.txt") == 5
    with pytest.raises(RuntimeError), store.open_write("a/c.bin") as f:
        f.write(b"half")
        raise RuntimeError("killed mid-write")
    assert not store.exists("a/c.bin")
    assert store.list() == ["a/b.txt"] and list((tmp_path / "a").iterdir()) == [tmp_path / "a" / "b.txt"]
    assert store.join("a").list() == ["b.txt"]
    with pytest.raises(StoreError, match="does not exist"):
        store.read_bytes("nope")


def test_discard_partial_removes_only_that_keys_leftovers(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    (tmp_path / ".shard-00001.parquet.abc.tmp").write_bytes(b"x")
    (tmp_path / ".shard-00002.parquet.abc.tmp").write_bytes(b"x")
    store.discard_partial("shard-00001.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".shard-00002.parquet.abc.tmp"]
    assert store.list() == []


def test_open_store_urls(tmp_path: Path) -> None:
    assert open_store(tmp_path).url == tmp_path.resolve().as_uri()
    assert open_store(f"file://{tmp_path}").local_path("x") == tmp_path.resolve() / "x"
    with pytest.raises(StoreError, match="no store backend for gs://"):
        open_store("gs://bucket/x")


def test_put_and_get_return_the_digests_of_the_bytes_moved(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    data = os.urandom(3 << 20)
    (tmp_path / "src.bin").write_bytes(data)
    want = {"sha256": hashlib.sha256(data).hexdigest(), "xxh128": xxhash.xxh3_128(data).hexdigest()}
    assert store.put_file("a/src.bin", tmp_path / "src.bin") == want == file_digests(tmp_path / "src.bin")
    assert store.get_file("a/src.bin", tmp_path / "back.bin") == want["sha256"]
    assert store.get_file("a/src.bin", tmp_path / "back.bin", "xxh128") == want["xxh128"]
    assert (tmp_path / "back.bin").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.bin", "src.bin", "store"]  # no temp file left
    with pytest.raises(StoreError, match="does not exist"):
        store.get_file("a/nope", tmp_path / "nope")


@pytest.mark.parametrize("by", ["xxh128", "sha256"])  # a record with xxh128, and one of an older ssrl without it
@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "extended"])
def test_fetch_refuses_an_object_that_differs_from_its_record(tmp_path: Path, damage: str, by: str) -> None:
    store = LocalStore(tmp_path / "store")
    data = os.urandom(3 << 20)  # several blocks: the pipelined copy
    bad = {"flipped byte": data[:1000] + bytes([data[1000] ^ 1]) + data[1001:], "truncated": data[:-1],
           "extended": data + b"\0"}[damage]
    store.write_bytes("x.bin", bad)
    target = tmp_path / "dest" / "x.bin"
    sha256, xxh128 = hashlib.sha256(data).hexdigest(), xxhash.xxh3_128(data).hexdigest()
    with pytest.raises(StoreError, match=f"checksum differs from its commit record .*{by}"):
        fetch_verified(store, "x.bin", target, len(data), sha256, xxh128 if by == "xxh128" else None)
    assert list((tmp_path / "dest").iterdir()) == []  # neither the bad file nor a temp one, nor a stamp
    assert not is_verified(target, len(data), sha256)
    store.write_bytes("x.bin", data)  # repaired: fetched, verified and stamped
    assert fetch_verified(store, "x.bin", target, len(data), sha256, xxh128 if by == "xxh128" else None)
    assert target.read_bytes() == data and is_verified(target, len(data), sha256)


class _Broken(io.RawIOBase):
    """A stream whose ``readinto``/``write`` fails after ``after`` bytes (a connection reset, a full disk)."""

    def __init__(self, data: bytes, after: int):
        self.src, self.after, self.moved = io.BytesIO(data), after, 0

    def readinto(self, b) -> int:
        if self.moved >= self.after:
            raise ConnectionResetError("peer went away")
        n = self.src.readinto(b)
        self.moved += n
        return n

    def write(self, b) -> int:
        if self.moved >= self.after:
            raise OSError(28, "No space left on device")
        self.moved += len(b)
        return len(b)


@pytest.mark.parametrize("size", [0, 1000, 3 << 20, (5 << 20) + 7])
def test_copy_hashing_pipelined_and_not(size: int) -> None:
    data = os.urandom(size)
    out = io.BytesIO()
    assert copy_hashing(io.BytesIO(data), out, None, chunk=1 << 20) == (size, hashlib.sha256(data).hexdigest())
    assert out.getvalue() == data
    assert copy_hashing(io.BytesIO(data), io.BytesIO(), size, "xxh128")[1] == xxhash.xxh3_128(data).hexdigest()


def test_copy_hashing_raises_a_failure_on_either_side() -> None:
    data = os.urandom(6 << 20)
    threads = threading.active_count()
    with pytest.raises(ConnectionResetError):
        copy_hashing(_Broken(data, 3 << 20), io.BytesIO(), len(data))
    with pytest.raises(OSError, match="No space left"):
        copy_hashing(io.BytesIO(data), _Broken(b"", 2 << 20), len(data))
    assert threading.active_count() == threads  # the helper thread ended either way
