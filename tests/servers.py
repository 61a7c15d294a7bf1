"""Real S3 servers for the tests: MinIO and SeaweedFS built from source by scripts/tools.sh.

Each server runs on free loopback ports with a temporary data folder and its own credentials. A missing binary
skips locally and fails in CI (the skip rule in tests/conftest.py): storage tests never pass vacuously.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ACCESS_KEY = "ssrl-test-access"
SECRET_KEY = "ssrl-test-secret-0123456789"


@functools.cache
def tool(name: str) -> Path:
    """A binary scripts/tools.sh built at its pin (never one from PATH)."""
    folders = subprocess.run([str(ROOT / "scripts" / "tools.sh"), "--path"], capture_output=True, text=True,
                             check=True).stdout.strip().split(":")
    for folder in folders:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    pytest.skip(f"{name} is not built (run scripts/tools.sh {name})")
    raise AssertionError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Server:
    kind: str
    binary: Path
    data: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    log: Path | None = None
    extra_ports: list[int] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a user sets (e.g. from a Kubernetes Secret) to reach this server."""
        return {"SSRL_S3_ENDPOINT": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "SSRL_STORE_CONFIG": str(self.data / "no-config.yaml")}

    def _command(self) -> list[str]:
        if self.kind == "minio":
            return [str(self.binary), "server", str(self.data / "disk"), "--address", f"127.0.0.1:{self.port}",
                    "--console-address", f"127.0.0.1:{free_port()}", "--quiet"]
        if not self.extra_ports:
            self.extra_ports = _port_block(3)
        master, volume, filer = self.extra_ports
        config = self.data / "s3.json"
        config.write_text(json.dumps({"identities": [{"name": "test", "credentials": [
            {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}], "actions": ["Admin", "Read", "Write", "List",
                                                                             "Tagging"]}]}))
        return [str(self.binary), "server", f"-dir={self.data / 'disk'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}", "-s3",
                f"-s3.port={self.port}", f"-s3.config={config}", "-volume.max=0", "-master.volumeSizeLimitMB=64"]

    def start(self, timeout: float = 60.0) -> None:
        (self.data / "disk").mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, MINIO_ROOT_USER=ACCESS_KEY, MINIO_ROOT_PASSWORD=SECRET_KEY,
                   MINIO_BROWSER="off", MINIO_UPDATE="off")
        self.log = self.data / f"{self.kind}.log"
        self.proc = subprocess.Popen(self._command(), stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited: {self.log.read_text()[-2000:]}")
            if self._ready():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.kind} not ready after {timeout}s: {self.log.read_text()[-2000:]}")

    def _ready(self) -> bool:
        import urllib3
        from minio import Minio

        try:
            if self.kind == "minio":
                urllib.request.urlopen(f"{self.endpoint}/minio/health/ready", timeout=1).close()
            # No retries: urllib3 would honour a Retry-After for minutes (seen when another test's server had
            # taken the port first); failing fast lets start() see that its own process exited and try new ports.
            http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=1, read=5))
            Minio(f"127.0.0.1:{self.port}", ACCESS_KEY, SECRET_KEY, secure=False, http_client=http).list_buckets()
            return True
        except Exception:
            return False

    def kill(self) -> None:
        """SIGKILL, as a crashed node would die."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def make_bucket(self, name: str) -> None:
        from minio import Minio

        client = Minio(f"127.0.0.1:{self.port}", ACCESS_KEY, SECRET_KEY, secure=False)
        deadline = time.time() + 30
        while True:  # SeaweedFS may need a moment before its filer accepts buckets
            try:
                if not client.bucket_exists(name):
                    client.make_bucket(name)
                return
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)


def _port_block(n: int) -> list[int]:
    """n free ports whose +10000 gRPC companions (SeaweedFS convention) are free too."""
    ports: list[int] = []
    while len(ports) < n:
        p = free_port()
        if p + 10000 < 65536 and p not in ports:
            try:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p + 10000))
                ports.append(p)
            except OSError:
                continue
    return ports


def start_server(kind: str, data: Path, attempts: int = 3) -> S3Server:
    """Start on fresh ports, retrying: under load another process can take a port between pick and bind."""
    binary = tool("minio" if kind == "minio" else "weed")
    for attempt in range(attempts):
        server = S3Server(kind, binary, data / f"try{attempt}")
        try:
            server.start(timeout=120.0)
            return server
        except RuntimeError:
            server.stop()
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def cleanup(server: S3Server) -> None:
    """SIGKILL (no graceful stop: SeaweedFS takes 10 s over it) and remove the data, which nothing keeps."""
    server.kill()
    shutil.rmtree(server.data, ignore_errors=True)


class JSONHandler(http.server.BaseHTTPRequestHandler):
    """Base of the tests' stand-in HTTP services (vLLM server, teacher VLM, API server): JSON answers, no access
    log on stderr."""

    def _answer(self, obj: object) -> None:
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass

