"""Where datasets, checkpoints and evaluations live: one small interface, addressed by URL.

Keys are relative posix paths ("tasks/demo/shard-00000.parquet"). Writes are atomic: an object is either
absent or complete, never half-written. The local folder is the embedded default; an S3/MinIO backend
registers under the ``s3`` scheme (see ``register_backend``). ``transfer`` moves folders with commit records,
``checkpoints`` names and prunes training steps. May import only ``ssrl.errors``.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import hashlib
import importlib
import io
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

from ssrl.errors import StoreError

__all__ = ["ALGORITHMS", "Digests", "HashingReader", "LocalStore", "Store", "check_key", "copy_hashing",
           "file_digests", "open_store", "read_url", "register_backend", "sha256_file", "unique_sibling"]


def check_key(key: str) -> str:
    """Refuse keys that could escape the store's root (``..``, absolute paths, empty parts, NUL).

    >>> check_key("tasks/demo/shard-00000.parquet")
    'tasks/demo/shard-00000.parquet'
    >>> check_key("../etc/passwd")
    Traceback (most recent call last):
    ...
    ssrl.errors.StoreError: unsafe object key '../etc/passwd': it must be a relative path without '..'
    """
    parts = key.split("/")
    if (not key or key.startswith("/") or "\\" in key or "\0" in key or any(p in ("..", ".", "") for p in parts)
            or len(key) > 1024):
        raise StoreError(f"unsafe object key {key!r}: it must be a relative path without '..'")
    return key


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


try:
    import xxhash
except ImportError:  # pragma: no cover - installed with the train extra (datasets) and the s3 extra
    xxhash = None

#: Digests a transfer computes, by name. ``sha256`` is a file's identity (commit records, skip-unchanged, stamps);
#: ``xxh128`` (XXH3-128, over 10x less CPU than sha256) verifies downloads when a record carries it. Only sha256
#: without the xxhash package. Neither is a signature: whoever can replace an object can rewrite its record, so
#: both guard against corruption and truncation, which 128 bits detect as surely as 256.
ALGORITHMS: dict[str, Callable[[], Any]] = {"sha256": hashlib.sha256}
if xxhash is not None:
    ALGORITHMS["xxh128"] = xxhash.xxh3_128


class Digests:
    """Digests of one stream of bytes, fed block by block (``names``: default every one in ``ALGORITHMS``).

    >>> d = Digests(["sha256"])
    >>> d.update(b"ab"); d.update(b"c")
    >>> d.hexdigests() == {"sha256": hashlib.sha256(b"abc").hexdigest()}
    True
    """

    def __init__(self, names: Iterable[str] | None = None):
        self._hashes = {name: ALGORITHMS[name]() for name in (ALGORITHMS if names is None else names)}

    def update(self, block: Any) -> None:
        for h in self._hashes.values():
            h.update(block)

    def hexdigests(self) -> dict[str, str]:
        return {name: h.hexdigest() for name, h in self._hashes.items()}


def file_digests(path: str | Path, chunk: int = 1 << 20) -> dict[str, str]:
    """Every digest of ``ALGORITHMS`` of a local file, in one read."""
    digests = Digests()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digests.update(block)
    return digests.hexdigests()


class HashingReader(io.RawIOBase):
    """A read-only view of ``raw`` that feeds every byte read through it to ``Digests``, so a file is hashed while
    it is sent instead of in a pass of its own before.

    >>> r = HashingReader(io.BytesIO(b"abc"))
    >>> r.read(2) + r.read()
    b'abc'
    >>> r.size, r.digests.hexdigests()["sha256"] == hashlib.sha256(b"abc").hexdigest()
    (3, True)
    """

    def __init__(self, raw: BinaryIO):
        self.raw, self.size, self.digests = raw, 0, Digests()

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self.raw.read(-1 if size is None else size)
        self.digests.update(data)
        self.size += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer) or 0
        self.digests.update(memoryview(buffer)[:n])
        self.size += n
        return n


def copy_hashing(src: BinaryIO, dst: BinaryIO, size: int | None = None, digest: str = "sha256",
                 chunk: int = 1 << 20, depth: int = 4) -> tuple[int, str]:
    """Copy ``src`` to ``dst`` through a few reused buffers, hashing each block on its way; returns (bytes copied,
    hex ``digest``, one of ``ALGORITHMS``). One pass: every block is hashed while it is in the CPU cache and never
    read back.

    A body of more than two blocks (``size``: the expected length, when known) is pipelined: a helper thread
    hashes and writes block i while this one reads block i+1, so a single big download is not slowed to the sum of
    network, hashing and disk time (each of the three releases the GIL).
    """
    h = ALGORITHMS[digest]()
    total = 0
    if size is not None and size <= 2 * chunk:
        view = memoryview(bytearray(chunk))
        while n := src.readinto(view):
            h.update(view[:n])
            dst.write(view[:n])
            total += n
        return total, h.hexdigest()
    free: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
    full: queue.SimpleQueue[tuple[memoryview, int] | None] = queue.SimpleQueue()
    for _ in range(depth):
        free.put(memoryview(bytearray(chunk)))
    failed: list[BaseException] = []

    def hash_and_write() -> None:
        try:
            while (item := full.get()) is not None:
                view, n = item
                h.update(view[:n])
                dst.write(view[:n])
                free.put(view)
        except BaseException as e:  # handed to the reading thread, which raises it
            failed.append(e)
            free.put(None)

    helper = threading.Thread(target=hash_and_write, name="ssrl-copy-hashing", daemon=True)
    helper.start()
    try:
        while (view := free.get()) is not None and (n := src.readinto(view)):
            full.put((view, n))
            total += n
    finally:
        full.put(None)
        helper.join()
    if failed:
        raise failed[0]
    return total, h.hexdigest()


def unique_sibling(path: Path, suffix: str) -> Path:
    """A hidden name beside ``path`` that no other process or thread uses (for writes renamed into place)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}{suffix}")


class Store(abc.ABC):
    """Interface of every backend. ``url`` names the root; every message names the object's full URL."""

    url: str

    @abc.abstractmethod
    def join(self, *keys: str) -> Store:
        """A store rooted at a sub-prefix of this one."""
        ...

    @abc.abstractmethod
    def read_bytes(self, key: str) -> bytes:
        ...

    def write_bytes(self, key: str, data: bytes) -> None:
        with self.open_write(key) as f:
            f.write(data)

    def put_file(self, key: str, local: str | Path) -> dict[str, str]:
        """Upload a local file, streamed, atomically; returns the digests (``ALGORITHMS``) of the bytes sent, hashed
        as they went."""
        with self.open_write(key) as f, open(local, "rb") as src:
            reader = HashingReader(src)
            while block := reader.read(1 << 20):
                f.write(block)
        return reader.digests.hexdigests()

    def get_file(self, key: str, local: str | Path, digest: str = "sha256") -> str:
        """Download to a local path (written whole under a name of its own, then renamed into place); returns the hex
        ``digest`` (a name in ``ALGORITHMS``) of the bytes written, hashed as they arrived, so a caller verifies
        without reading the file back."""
        local = Path(local)
        data = self.read_bytes(key)
        tmp = unique_sibling(local, ".part")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)
        h = ALGORITHMS[digest]()
        h.update(data)
        return str(h.hexdigest())

    def checksum(self, key: str) -> str | None:
        """sha256 of the object when the backend knows it cheaply (local: computed; S3: upload metadata)."""
        return None

    @abc.abstractmethod
    def open_write(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A file to write; it becomes visible at ``key`` only when the block exits without error."""
        ...

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        ...

    @abc.abstractmethod
    def size(self, key: str) -> int:
        ...

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix`` (recursively), sorted, relative to the store's root."""
        ...

    def list_sizes(self, prefix: str = "") -> list[tuple[str, int]]:
        """(key, size) pairs; backends that get sizes with the listing override this."""
        return [(k, self.size(k)) for k in self.list(prefix)]

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        ...

    def local_path(self, key: str) -> Path | None:
        """The object's path on this machine when the backend is a local folder, else None."""
        return None

    def discard_partial(self, key: str) -> None:  # noqa: B027 — optional hook, nothing to do by default
        """Remove what a killed writer of ``key`` left behind; call only when no one else writes ``key``."""

    def object_url(self, key: str) -> str:
        return f"{self.url.rstrip('/')}/{key}"


class LocalStore(Store):
    """A folder on this machine. Temporary files are hidden (leading dot) and renamed into place."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.url = self.root.as_uri()

    def join(self, *keys: str) -> LocalStore:
        return LocalStore(self._path("/".join(keys)))

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"{self.object_url(key)} does not exist") from None
        except OSError as e:
            raise StoreError(f"cannot read {self.object_url(key)}: {e.strerror}") from None

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as e:
            raise StoreError(f"cannot write {self.object_url(key)}: {e.strerror}") from None
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise StoreError(f"{self.object_url(key)} does not exist") from None

    def list(self, prefix: str = "") -> list[str]:
        prefix = prefix.strip("/")
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        keys = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.root)
            keys += [(rel / n).as_posix() for n in filenames if not n.startswith(".")]
        return sorted(keys)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def local_path(self, key: str) -> Path:
        return self._path(key)

    def get_file(self, key: str, local: str | Path, digest: str = "sha256") -> str:
        local = Path(local)
        tmp = unique_sibling(local, ".part")
        try:
            src = open(self._path(key), "rb")  # noqa: SIM115 — closed by the with below
        except FileNotFoundError:
            raise StoreError(f"{self.object_url(key)} does not exist") from None
        try:
            with src, open(tmp, "wb") as dst:
                got = copy_hashing(src, dst, os.fstat(src.fileno()).st_size, digest)[1]
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)
        return got

    def checksum(self, key: str) -> str | None:
        return sha256_file(self._path(key)) if self.exists(key) else None

    def discard_partial(self, key: str) -> None:
        path = self._path(key)
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _lazy(target: str) -> Callable[[str], Store]:
    """A factory that imports ``module:Class`` on first use, so an optional backend's client (the minio
    package for ``s3://``) is needed only by those who use it, and its module never imports back here at
    import time of this one."""

    def factory(url: str) -> Store:
        module, _, name = target.partition(":")
        return getattr(importlib.import_module(module), name)(url)

    return factory


_BACKENDS: dict[str, Callable[[str], Store]] = {
    "file": lambda url: LocalStore(urlparse(url).path),
    "s3": _lazy("ssrl.store.s3:S3Store"),
}


def register_backend(scheme: str, factory: Callable[[str], Store]) -> None:
    """Make ``open_store`` understand ``scheme://...`` URLs."""
    _BACKENDS[scheme] = factory


@functools.lru_cache(maxsize=32)
def _root_store(root: str) -> Store:
    return open_store(root)


def read_url(location: str) -> bytes:
    """Bytes of a local path or an object URL (``s3://bucket/key``); one client per bucket and process."""
    if "://" not in location or location.startswith("file://"):
        path = location[len("file://"):] if location.startswith("file://") else location
        try:
            return Path(path).read_bytes()
        except OSError as e:
            raise StoreError(f"cannot read {path}: {e.strerror}") from None
    scheme, rest = location.split("://", 1)
    bucket, _, key = rest.partition("/")
    return _root_store(f"{scheme}://{bucket}").read_bytes(key)


def open_store(url: str | Path) -> Store:
    """A store for a URL: a plain path or ``file://`` is a local folder.

    >>> open_store("/tmp/x").url
    'file:///tmp/x'
    """
    text = str(url)
    scheme = urlparse(text).scheme if "://" in text else ""
    if not scheme:
        return LocalStore(text)
    if scheme not in _BACKENDS:
        known = ", ".join(f"{s}://" for s in sorted(_BACKENDS))
        raise StoreError(f"no store backend for {scheme}:// URLs (known: {known}, or a plain path)")
    return _BACKENDS[scheme](text)
