"""The on-disk dataset: Parquet shards in the layout EasyR1/verl-style trainers and HF ``datasets`` read.

Columns: ``id``, ``problem`` (one ``<image>`` per image), ``answer``, ``images`` (list of {bytes, path}),
``task``, ``source_id``, ``meta`` (JSON). The schema carries Hugging Face feature metadata so
``datasets.load_dataset("parquet", ...)`` decodes ``images`` as a list of images, whatever their count.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from ssrl.errors import SSRLError
from ssrl.store import LocalStore, Store, open_store

log = logging.getLogger(__name__)

SHARD_FILE = "shard-{:05d}.parquet"
SHARD_RECORD = "shard-{:05d}.json"
ROW_GROUP = 32

_FEATURES = {
    "id": {"dtype": "string", "_type": "Value"},
    "problem": {"dtype": "string", "_type": "Value"},
    "answer": {"dtype": "string", "_type": "Value"},
    "images": {"feature": {"_type": "Image"}, "_type": "List"},
    "task": {"dtype": "string", "_type": "Value"},
    "source_id": {"dtype": "string", "_type": "Value"},
    "meta": {"dtype": "string", "_type": "Value"},
}
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("problem", pa.string()),
        ("answer", pa.string()),
        ("images", pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))),
        ("task", pa.string()),
        ("source_id", pa.string()),
        ("meta", pa.string()),
    ],
    metadata={b"huggingface": json.dumps({"info": {"features": _FEATURES}}).encode()},
)


def shard_name(index: int) -> str:
    return SHARD_FILE.format(index)


def record_key(shard_file: str) -> str:
    """Key of a shard file's commit record: ``shard-00003.parquet`` -> ``shard-00003.json``."""
    return shard_file.removesuffix(".parquet") + ".json"


class _HashingFile:
    """Counts and hashes what pyarrow writes, so the commit record needs no second read."""

    def __init__(self, f: BinaryIO):
        self._f, self.sha = f, hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self._f.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self.closed = True


class ShardWriter:
    """Streams rows into one shard in row groups (memory bounded by ``ROW_GROUP`` rows); atomic on exit."""

    def __init__(self, store: Store, key: str):
        self.store, self.key = store, key
        self.rows = 0
        self.bytes = 0
        self.sha256 = ""
        self._pending: list[dict[str, Any]] = []

    def __enter__(self) -> ShardWriter:
        self._cm = self.store.open_write(self.key)
        self._file = _HashingFile(self._cm.__enter__())
        self._writer = pq.ParquetWriter(self._file, SCHEMA, compression="zstd", write_statistics=False)
        return self

    def add(self, row: dict[str, Any]) -> None:
        self._pending.append(row)
        self.rows += 1
        if len(self._pending) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_pylist(self._pending, schema=SCHEMA), row_group_size=ROW_GROUP)
            self._pending = []

    def __exit__(self, exc_type, exc, tb) -> bool | None:
        try:
            if exc_type is None:
                self._flush()
            self._writer.close()
        except BaseException as e:
            self._cm.__exit__(type(e), e, e.__traceback__)  # discards the temporary file
            raise
        self.bytes, self.sha256 = self._file.size, self._file.sha.hexdigest()
        return self._cm.__exit__(exc_type, exc, tb)


# ------------------------------------------------------------------------------------------ reading
def in_holdout(source_id: str, fraction: float) -> bool:
    """Whether a source belongs to the held-out split: a fixed hash of its id, so training (which skips these
    sources) and evaluation (which keeps only them) agree without a second dataset, and every task made from
    one image lands on the same side.

    >>> sum(in_holdout(f"img-{i}", 0.1) for i in range(10_000))
    991
    >>> in_holdout("img-1", 0.0), in_holdout("img-1", 1.0)
    (False, True)
    """
    if fraction <= 0:
        return False
    digest = hashlib.blake2b(source_id.encode(), digest_size=8, person=b"ssrl-holdout").digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def committed_shards(store: Store) -> list[str]:
    """Shard files that have a commit record; anything else (a crashed writer's leftovers) is ignored."""
    keys = set(store.list())
    out = []
    for key in sorted(keys):
        if key.startswith("shard-") and key.endswith(".json"):
            rec = json.loads(store.read_bytes(key))
            if rec.get("file") in keys:
                out.append(rec["file"])
    return out


def read_manifest(url: str | Store) -> dict[str, Any]:
    store = open_store(url) if isinstance(url, str) else url
    if not store.exists("manifest.json"):
        raise SSRLError(f"{store.object_url('manifest.json')} does not exist: the dataset is incomplete or "
                        "not generated yet (run `ssrl generate` until every shard is committed)")
    return json.loads(store.read_bytes("manifest.json"))


def poll_delays(first: float = 1.0, factor: float = 2.0, cap: float = 30.0) -> Iterator[float]:
    """Exponential backoff between polls: quick when the writer is about to finish, a few requests a minute when not.

    >>> import itertools; list(itertools.islice(poll_delays(), 8))
    [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    """
    delay = first
    while True:
        yield delay
        delay = min(delay * factor, cap)


def wait_for_manifest(url: str | Store, timeout: float, *, cap: float = 30.0) -> dict[str, Any]:
    """The dataset's manifest, waiting up to ``timeout`` seconds for it to appear (polling with backoff).

    The generator writes ``manifest.json`` last, when every shard is committed: a trainer or evaluator started
    beside it (one Helm release, one kustomization) must not read a partial dataset. ``timeout`` 0 checks once.
    """
    store = open_store(url) if isinstance(url, str) else url
    key = "manifest.json"
    if isinstance(store, LocalStore) and not store.root.is_dir():  # a generator creates its folder first: a typo
        raise SSRLError(f"dataset {store.root} does not exist")
    start = time.monotonic()
    delays = poll_delays(cap=cap)
    polls = 0
    while not store.exists(key):
        waited = time.monotonic() - start
        if waited >= timeout:
            raise SSRLError(f"{store.object_url(key)} did not appear within {timeout:g} s (dataset_wait): the dataset "
                            f"{store.url} is incomplete; is `ssrl generate -o {store.url}` still running, or did it "
                            "fail? Raise dataset_wait to wait longer")
        if not polls:
            log.warning("waiting up to %g s for %s (the generator writes it when every shard is committed)",
                        timeout, store.object_url(key))
        polls += 1
        time.sleep(min(next(delays), timeout - waited))
    if polls:
        log.warning("%s appeared after %.0f s", store.object_url(key), time.monotonic() - start)
    return json.loads(store.read_bytes(key))


def iter_rows(url: str | Store, limit: int | None = None, tasks: list[str] | None = None) -> Iterator[dict]:
    """Rows of every committed shard, in order, reading one row group at a time."""
    store = open_store(url) if isinstance(url, str) else url
    shards = committed_shards(store)
    if not shards:
        raise SSRLError(f"{store.url} holds no committed shards")
    n = 0
    for key in shards:
        local = store.local_path(key)
        source = pa.BufferReader(store.read_bytes(key)) if local is None else str(local)
        pf = pq.ParquetFile(source)
        for g in range(pf.num_row_groups):
            for row in pf.read_row_group(g).to_pylist():
                if tasks and row["task"] not in tasks:
                    continue
                yield row
                n += 1
                if limit is not None and n >= limit:
                    return
