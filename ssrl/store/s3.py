"""S3 backend of ``ssrl.store`` (MinIO, AWS S3, Ceph RGW, SeaweedFS, Garage...), through the ``minio`` client.

Plain S3 semantics only: an object appears when its PUT (or multipart upload) completes, which is what
makes ``open_write`` atomic. Files stream from disk in parts (memory flat in file size), several parts
in parallel, and every call is retried with exponential backoff on connection errors and 5xx answers.

Every byte is hashed as it passes: an upload returns the digests of what it sent (sha256, and xxh128 where
xxhash is installed) and a download the one asked for of what it wrote, so ``transfer`` records and verifies
checksums without a pass of its own over the file. The sha256 is kept with the object (metadata for a one-part
upload, whose PUT is signed with that same digest; a tag once a multipart upload completes, since its headers
leave before its last byte is read).

Endpoint and credentials come from the environment — the variables a Kubernetes Secret mounts — or from
a YAML file named by ``SSRL_STORE_CONFIG`` (default ``~/.config/ssrl/store.yaml``); never from the
command line. The secret never appears in a message, a log line or a ``repr``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlparse

import urllib3
import yaml

from ssrl.errors import StoreError, StoreUnavailableError
from ssrl.store import Digests, HashingReader, Store, check_key, copy_hashing, unique_sibling

try:
    from minio import Minio
    from minio.commonconfig import Tags
    from minio.error import S3Error
    from minio.helpers import MIN_PART_SIZE
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise StoreError("s3:// URLs need the minio client: pip install 'ssrl[s3]'") from e

T = TypeVar("T")
log = logging.getLogger(__name__)

ENV_ENDPOINT = "SSRL_S3_ENDPOINT"
ENV_ACCESS_KEY = "AWS_ACCESS_KEY_ID"
ENV_SECRET_KEY = "AWS_SECRET_ACCESS_KEY"
ENV_SESSION_TOKEN = "AWS_SESSION_TOKEN"
ENV_REGION = "AWS_REGION"
ENV_CONFIG = "SSRL_STORE_CONFIG"
DEFAULT_CONFIG = Path("~/.config/ssrl/store.yaml")
SHA256_META = "sha256"
CONTENT_SHA256 = "x-amz-content-sha256"
_FATAL_CODES = {"NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken",
                "ExpiredToken"}
_RETRYABLE_CODES = {"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout", "XMinioServerNotInitialized",
                    "XMinioStorageFull", "OperationAborted"}


@dataclass(frozen=True)
class S3Settings:
    """How to reach the S3 service. ``endpoint`` is a URL such as ``http://127.0.0.1:9000``."""

    endpoint: str
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None
    part_size: int = 16 * 1024 * 1024
    parallel: int = 4
    retries: int = 6
    backoff: float = 0.25
    timeout: float = 60.0

    @classmethod
    def load(cls, env: dict[str, str] | None = None) -> S3Settings:
        """Environment first, then the config file; a clear error naming the variables when nothing is set."""
        env = dict(os.environ) if env is None else env
        path = Path(env.get(ENV_CONFIG, str(DEFAULT_CONFIG))).expanduser()
        file: dict[str, Any] = {}
        if path.is_file():
            try:
                file = yaml.safe_load(path.read_text()) or {}
            except (OSError, yaml.YAMLError) as e:
                raise StoreError(f"store config {path} cannot be read: {type(e).__name__}") from None
            if not isinstance(file, dict):
                raise StoreError(f"store config {path} must be a mapping (endpoint, access_key, secret_key, ...)")
        endpoint = env.get(ENV_ENDPOINT) or file.get("endpoint")
        if not endpoint:
            raise StoreError(f"no S3 endpoint: set {ENV_ENDPOINT} (e.g. http://minio:9000) or 'endpoint' in {path}")
        extra = {k: file[k] for k in ("part_size", "parallel", "retries", "backoff", "timeout") if k in file}
        return cls(
            endpoint=str(endpoint),
            access_key=env.get(ENV_ACCESS_KEY) or file.get("access_key"),
            secret_key=env.get(ENV_SECRET_KEY) or file.get("secret_key"),
            session_token=env.get(ENV_SESSION_TOKEN) or file.get("session_token"),
            region=env.get(ENV_REGION) or file.get("region"),
            **extra,
        )

    def client(self) -> Minio:
        parsed = urlparse(self.endpoint if "://" in self.endpoint else f"https://{self.endpoint}")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise StoreError(f"{ENV_ENDPOINT} must look like http(s)://host:port, got {self.endpoint!r}")
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(10.0, self.timeout), read=self.timeout),
            maxsize=max(10, self.parallel * 2),
            retries=urllib3.Retry(total=0, connect=0, read=0, redirect=3, raise_on_status=False),
        )
        return _Client(parsed.netloc, access_key=self.access_key, secret_key=self.secret_key,
                       session_token=self.session_token, secure=parsed.scheme == "https", region=self.region,
                       http_client=http)


class _Client(Minio):
    """``Minio`` that signs a request body with the sha256 the caller already computed for it (header
    ``x-amz-content-sha256``) instead of hashing the body a second time.

    Over plain HTTP, SigV4 signs the sha256 of every body and the server checks it; for a one-part upload that
    is the very digest ssrl records, so the bytes are hashed once and the server still refuses a body that
    differs from it. Over HTTPS minio-py sends UNSIGNED-PAYLOAD with a Content-MD5, untouched here.
    ``_build_headers`` is minio-py 7's (pinned < 8).
    """

    def _build_headers(self, host: str, headers: dict[str, Any] | None = None, body: bytes | None = None,
                       creds: Any = None) -> tuple[dict[str, Any], Any]:
        known = (headers or {}).get(CONTENT_SHA256)
        if not known or not body or creds is None or self._base_url.is_https:
            return super()._build_headers(host, headers, body, creds)
        built, date = super()._build_headers(host, headers, None, creds)
        built["Content-Length"] = str(len(body))
        built[CONTENT_SHA256] = known
        return built, date


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ("bucket", "a/b")."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StoreError(f"not an s3:// URL: {url!r} (expected s3://bucket/prefix)")
    prefix = parsed.path.strip("/")
    if prefix:
        check_key(prefix)
    return parsed.netloc, prefix


class S3Store(Store):
    """A bucket and prefix. Keys are relative to the prefix; messages name ``s3://bucket/prefix/key``."""

    def __init__(self, url: str, settings: S3Settings | None = None, client: Minio | None = None):
        self.bucket, self.prefix = parse_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.settings = settings or S3Settings.load()
        self.client = client or self.settings.client()

    def __repr__(self) -> str:
        return f"S3Store({self.url!r}, endpoint={self.settings.endpoint!r})"

    # ---------------------------------------------------------------------------------------- plumbing
    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, key: str, fn: Callable[[], T]) -> T:
        """Run one S3 call with retries; translate every failure into a StoreError naming the object."""
        where = self.object_url(key) if key else self.url
        delay = self.settings.backoff
        for attempt in range(self.settings.retries + 1):
            try:
                return fn()
            except S3Error as e:
                retry = e.code in _RETRYABLE_CODES or (e.response is not None and e.response.status >= 500)
                if not retry or attempt == self.settings.retries:
                    fatal = e.code in _FATAL_CODES
                    raise (StoreUnavailableError if fatal else StoreError)(self._explain(e, what, where)) from None
            except (urllib3.exceptions.HTTPError, http.client.HTTPException, ConnectionError, TimeoutError) as e:
                if attempt == self.settings.retries:
                    raise StoreUnavailableError(
                        f"cannot {what} {where}: S3 endpoint {self.settings.endpoint} unreachable after "
                        f"{attempt + 1} attempts ({type(e).__name__})") from None
                log.warning("retrying %s %s: %s unreachable (%s), attempt %d of %d", what, where,
                            self.settings.endpoint, type(e).__name__, attempt + 2, self.settings.retries + 1)
            time.sleep(min(delay, 8.0))
            delay *= 2
        raise AssertionError("unreachable")

    def _explain(self, e: S3Error, what: str, where: str) -> str:
        if e.code in ("NoSuchKey", "NoSuchObject"):
            return f"{where} does not exist"
        if e.code == "NoSuchBucket":
            return (f"bucket {self.bucket!r} does not exist at {self.settings.endpoint} "
                    f"(create it: ssrl store mb s3://{self.bucket})")
        if e.code in _FATAL_CODES:
            return (f"cannot {what} {where}: access denied by {self.settings.endpoint} ({e.code}); check "
                    f"{ENV_ACCESS_KEY} / {ENV_SECRET_KEY} (or the store config file)")
        return f"cannot {what} {where}: {e.code}: {e.message}"

    # ---------------------------------------------------------------------------------------- interface
    def join(self, *keys: str) -> S3Store:
        sub = "/".join(k.strip("/") for k in keys if k.strip("/"))
        return S3Store(f"s3://{self.bucket}/{self._key(sub) if sub else self.prefix}", self.settings, self.client)

    def read_bytes(self, key: str) -> bytes:
        def get() -> bytes:
            resp = self.client.get_object(self.bucket, self._key(key))
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()
        return self._call("read", key, get)

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        self._key(key)
        fd, tmp = tempfile.mkstemp(prefix=".ssrl-upload-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
            self.put_file(key, tmp)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def write_bytes(self, key: str, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        self._call("write", key, lambda: self._put_one(key, data, digest))

    def _put_one(self, key: str, data: bytes, digest: str) -> Any:
        """One PUT with the digest in the object's metadata and as the signed payload hash (``_Client``)."""
        return self.client.put_object(self.bucket, self._key(key), io.BytesIO(data), len(data),
                                      metadata={SHA256_META: digest, CONTENT_SHA256: digest},
                                      part_size=max(len(data), MIN_PART_SIZE))

    def put_file(self, key: str, local: str | Path) -> dict[str, str]:
        """Upload ``local``; returns the digests of the bytes sent. A file up to one part is read once and sent in
        one PUT; a bigger one streams in parts (``part_size``, ``parallel`` at a time) through a hashing reader."""
        size = os.stat(local).st_size
        if size <= self.settings.part_size:
            with open(local, "rb") as f:
                data = f.read(size)
            digests = Digests()
            digests.update(data)
            found = digests.hexdigests()
            self._call("write", key, lambda: self._put_one(key, data, found["sha256"]))
            return found
        reader: HashingReader | None = None
        attempts = 0

        def put() -> Any:
            nonlocal attempts, reader
            attempts += 1
            if attempts > 1:  # the failed attempt's multipart upload stays open when the server died under it
                self._abort_uploads(key)
            with open(local, "rb") as f:
                reader = HashingReader(f)
                return self.client.put_object(self.bucket, self._key(key), reader, size,
                                              part_size=self.settings.part_size,
                                              num_parallel_uploads=self.settings.parallel)
        self._call("write", key, put)
        assert reader is not None and reader.size == size
        found = reader.digests.hexdigests()
        self._call("tag", key, lambda: self._tag_sha256(key, found["sha256"]))
        return found

    def _tag_sha256(self, key: str, digest: str) -> None:
        """Keep a multipart object's digest as its ``sha256`` tag (a server without tagging: ``checksum`` is None,
        and ``upload_tree`` sends the file again instead of skipping it)."""
        tags = Tags.new_object_tags()
        tags[SHA256_META] = digest
        try:
            self.client.set_object_tags(self.bucket, self._key(key), tags)
        except S3Error as e:
            if e.code != "NotImplemented":
                raise
            log.warning("%s does not support object tags: %s keeps no sha256 of its own", self.settings.endpoint,
                        self.object_url(key))

    def _abort_uploads(self, key: str) -> None:
        """Abort the incomplete multipart uploads of exactly this key: they hold storage and would never complete.

        The minio client aborts its own upload on failure, but that abort fails too when the server is down.
        minio-py 7 has no public call for listing or aborting uploads, hence its private ones (pinned < 8).
        """
        full = self._key(key)
        for upload in self.client._list_multipart_uploads(self.bucket, prefix=full).uploads:
            if upload.object_name == full:
                self.client._abort_multipart_upload(self.bucket, full, upload.upload_id)

    def get_file(self, key: str, local: str | Path, digest: str = "sha256") -> str:
        """Download with one GET into a name of this process and thread, hashing each block as it lands, then rename
        it into place; returns the hex ``digest``. A body cut short is retried from its start."""
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = unique_sibling(local, ".part")

        def get() -> str:
            resp = self.client.get_object(self.bucket, self._key(key))
            try:
                want = int(resp.headers.get("content-length", -1))
                # urllib3's response copies every block through its own buffer; its http.client response reads
                # straight into ours (the body is never content-encoded: ssrl stores bytes as they are)
                body = getattr(resp, "_fp", None) or resp
                with open(tmp, "wb") as f:
                    got, found = copy_hashing(body, f, want if want >= 0 else None, digest)
                if want >= 0 and got != want:
                    raise http.client.IncompleteRead(b"", want - got)
            except BaseException:
                resp.close()  # the connection is in an unknown state: never reuse it
                raise
            finally:
                resp.release_conn()
            return found

        try:
            found = self._call("download", key, get)
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)
        return found

    def exists(self, key: str) -> bool:
        try:
            self._stat(key)
            return True
        except StoreError as e:
            if "does not exist" in str(e) and "bucket" not in str(e):
                return False
            raise

    def _stat(self, key: str) -> Any:
        return self._call("stat", key, lambda: self.client.stat_object(self.bucket, self._key(key)))

    def size(self, key: str) -> int:
        return int(self._stat(key).size)

    def checksum(self, key: str) -> str | None:
        meta = {k.lower(): v for k, v in (self._stat(key).metadata or {}).items()}
        if f"x-amz-meta-{SHA256_META}" in meta:
            return str(meta[f"x-amz-meta-{SHA256_META}"])
        if meta.get("x-amz-tagging-count", "0") == "0":
            return None
        tags = self._call("read tags of", key, lambda: self.client.get_object_tags(self.bucket, self._key(key)))
        return (tags or {}).get(SHA256_META)

    def list(self, prefix: str = "") -> list[str]:
        return [k for k, _ in self.list_sizes(prefix)]

    def list_sizes(self, prefix: str = "") -> list[tuple[str, int]]:
        prefix = prefix.strip("/")
        full = self._key(prefix) if prefix else self.prefix
        start = f"{full}/" if full else ""
        objs = self._call("list", prefix, lambda: list(self.client.list_objects(self.bucket, prefix=start,
                                                                                recursive=True)))
        root = f"{self.prefix}/" if self.prefix else ""
        return sorted((o.object_name[len(root):], int(o.size or 0)) for o in objs if not o.is_dir)

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self.client.remove_object(self.bucket, self._key(key)))

    def make_bucket(self) -> bool:
        """Create the bucket if needed; True when it was created."""
        if self._call("check bucket", "", lambda: self.client.bucket_exists(self.bucket)):
            return False
        self._call("create bucket", "", lambda: self.client.make_bucket(self.bucket))
        return True
