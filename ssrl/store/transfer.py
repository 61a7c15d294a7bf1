"""Moving folders in and out of a store as one atomic unit, and pulling them back safely.

A folder becomes visible only through its commit record ``_COMMIT.json``, written after every part:
``{"files": {relative path: {"size", "sha256", "xxh128"}}, ...}`` (``xxh128`` where the xxhash package is
installed). Readers ignore folders without one. Pulls verify every file against it (xxh128 when the record has
it, else sha256), hashed as the bytes arrive, and refuse any key that would land outside the destination.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ssrl.errors import StoreError
from ssrl.store import ALGORITHMS, Store, check_key, file_digests, unique_sibling

COMMIT = "_COMMIT.json"


def _local_files(root: Path) -> list[tuple[str, Path]]:
    if not root.is_dir():
        raise StoreError(f"{root} is not a folder")
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                path = Path(folder) / name
                out.append((path.relative_to(root).as_posix(), path))
    return out


def upload_tree(local: str | Path, store: Store, prefix: str = "", *, skip_unchanged: bool = True,
                workers: int = 4, progress: Callable[[int], None] | None = None) -> dict[str, dict[str, Any]]:
    """Upload every file under ``local`` to ``prefix/``; returns {relative path: {size, sha256, xxh128, uploaded}}.

    Each file is hashed while it is sent (``Store.put_file`` returns the digests), so the common case, a fresh
    prefix, reads every file once. With ``skip_unchanged`` one listing of the prefix finds what is already
    there; an object with the file's size and recorded sha256 is not sent again (the file is hashed first, only
    then), so a rerun after a failure only moves what is missing.
    """
    files = _local_files(Path(local))
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    present = dict(store.list_sizes(base.rstrip("/"))) if skip_unchanged else {}

    def one(rel: str, path: Path) -> tuple[str, dict[str, Any]]:
        key = check_key(base + rel)
        size = path.stat().st_size
        digests = None
        if present.get(key) == size:
            digests = file_digests(path)
            if store.checksum(key) != digests["sha256"]:
                digests = None
        sent = digests is None
        if digests is None:
            digests = store.put_file(key, path)
        if progress:
            progress(size)
        return rel, {"size": size, **digests, "uploaded": sent}

    with cf.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda item: one(*item), files))
    return dict(sorted(results))


def commit(store: Store, prefix: str, files: dict[str, dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """Write the commit record last: the folder exists for readers from this moment on."""
    record = {"files": {rel: entry(f) for rel, f in sorted(files.items())}, **extra}
    store.write_bytes(_join(prefix, COMMIT), json.dumps(record, indent=1, sort_keys=True).encode())
    return record


def entry(file: dict[str, Any]) -> dict[str, Any]:
    """What a commit record keeps of one file ``upload_tree`` reported: its size and digests."""
    return {k: file[k] for k in ("size", *ALGORITHMS) if k in file}


def read_commit(store: Store, prefix: str) -> dict[str, Any] | None:
    """The folder's commit record, or None when it has none (one GET when it exists)."""
    key = _join(prefix, COMMIT)
    try:
        data = store.read_bytes(key)
    except StoreError:
        if not store.exists(key):
            return None
        raise
    try:
        record = json.loads(data)
    except ValueError:
        raise StoreError(f"{store.object_url(key)} is not a valid commit record") from None
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        raise StoreError(f"{store.object_url(key)} is not a valid commit record")
    return record


def safe_destination(dest: Path, rel: str) -> Path:
    """Where ``rel`` lands under ``dest``; refuses keys that would escape it (``..``, absolute, links)."""
    try:
        check_key(rel)
    except StoreError:
        raise StoreError(f"refusing to pull key {rel[:200]!r}: it would land outside {dest}") from None
    target = (dest / rel).resolve()
    root = dest.resolve()
    if root != target and root not in target.parents:
        raise StoreError(f"refusing to pull key {rel[:200]!r}: it would land outside {dest}")
    if len(target.name.encode()) > 255:
        raise StoreError(f"refusing to pull key {rel[:200]!r}: file name longer than 255 bytes")
    return target


def pull_tree(store: Store, prefix: str, dest: str | Path, *, workers: int = 4,
              progress: Callable[[int], None] | None = None,
              select: Callable[[str], bool] | None = None, record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Download a committed folder (the files ``select`` keeps, default all) to ``dest`` and verify every file;
    returns its commit record (``record``: the one the caller already read, not fetched again)."""
    record = record or read_commit(store, prefix)
    if record is None:
        raise StoreError(f"{store.object_url(_join(prefix, COMMIT))} does not exist: "
                         "the folder is not committed (incomplete or still being written)")
    dest = Path(dest)
    targets = {rel: safe_destination(dest, rel)  # all refused before any download
               for rel in record["files"] if select is None or select(rel)}

    def one(rel: str) -> None:
        want = record["files"][rel]
        fetch_verified(store, _join(prefix, rel), targets[rel], want["size"], want["sha256"], want.get("xxh128"))
        if progress:
            progress(want["size"])

    with cf.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(one, sorted(targets)))
    return record


def _stamp(target: Path) -> Path:
    return target.with_name(f".{target.name}.verified")


def is_verified(target: Path, size: int, sha256: str) -> bool:
    """Whether ``target`` is a file this machine already downloaded and verified against ``sha256``, unchanged
    since (same size and mtime as its hidden stamp records): no store request and no second hashing pass."""
    try:
        stat = target.stat()
        stamp = json.loads(_stamp(target).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(stamp, dict) and stat.st_size == size == stamp.get("size")
            and stamp.get("sha256") == sha256 and stamp.get("mtime_ns") == stat.st_mtime_ns)


def fetch_verified(store: Store, key: str, target: Path, size: int, sha256: str, xxh128: str | None = None) -> bool:
    """Download ``key`` to ``target`` unless a verified copy is there; returns whether it downloaded.

    The download goes to a name unique to this process and thread, is checked against ``size`` and ``xxh128``
    when given (and xxhash installed; else ``sha256``): the digest ``get_file`` computed while the bytes arrived,
    so the file is never read back. Then it is renamed into place, so processes racing on one path (local ranks,
    a restarted pod) never see or replace a partial or corrupt file. A stamp beside it records the verification
    (by the file's sha256, its identity) for the next caller.
    """
    if is_verified(target, size, sha256):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_sibling(target, ".part")
    try:
        name, want = ("xxh128", xxh128) if xxh128 and "xxh128" in ALGORITHMS else ("sha256", sha256)
        digest = store.get_file(key, tmp, name)
        got = tmp.stat().st_size
        if got != size or digest != want:
            raise StoreError(f"{store.object_url(key)}: checksum differs from its commit record (got {got} bytes, "
                             f"{name} {digest[:12]}...; recorded {size} bytes, {name} {want[:12]}...): the object "
                             "is corrupt, truncated or was replaced after the commit")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    stamp = _stamp(target)
    stamp_tmp = unique_sibling(stamp, ".tmp")
    stamp_tmp.write_text(json.dumps({"size": size, "sha256": sha256, "mtime_ns": target.stat().st_mtime_ns}))
    os.replace(stamp_tmp, stamp)
    return True


def _join(prefix: str, key: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{key}" if prefix else key
