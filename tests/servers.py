"""Real object-store servers on 127.0.0.1 for the tests, each in its own process.

- GCS: gcp-storage-emulator (the JSON API that gcsfs and google-cloud-storage speak).
- S3: moto in server mode, with IAM authentication switched on once a user and its access
  key exist, so every request must be signed with that key's secret.

A server gets a free port, is polled until it answers (or fails loudly with its log), and is
stopped by ``stop()``. Clients for the test side (google-cloud-storage, boto3) are deliberately
not the ones the project uses (gcsfs, s3fs), so uploads and downloads check the project's
objects with an independent implementation of each protocol.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

START_TIMEOUT = 90.0  # seconds; moto imports a lot on a slow machine
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with _NO_PROXY.open(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _post(url: str, body: bytes, timeout: float = 10.0) -> bytes:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "text/plain"})
    with _NO_PROXY.open(req, timeout=timeout) as r:
        return r.read()


class ServerProcess:
    """A server subprocess on 127.0.0.1:<free port>, ready once ``ready_path`` answers 200."""

    def __init__(self, name: str, argv: list[str], ready_path: str, log_dir: Path, env: dict | None = None):
        self.name = name
        self._argv = argv  # "{port}" is replaced by the chosen port
        self._ready_path = ready_path
        self._log_dir = Path(log_dir)
        self._env = env
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def start(self, attempts: int = 5) -> ServerProcess:
        """Start on a free port; retry on another port if this one was taken meanwhile."""
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            self.log_path = self._log_dir / f"{self.name}-{self.port}.log"
            argv = [a.replace("{port}", str(self.port)) for a in self._argv]
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **(self._env or {})},
                )
            try:
                self._wait_ready()
                return self
            except RuntimeError:
                log = self.log_tail()
                self.stop()
                if "already in use" in log and attempt < attempts:
                    continue
                raise
        raise AssertionError("unreachable")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last = "no answer yet"
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {code} before answering on {self.url}; log:\n{self.log_tail()}"
                )
            try:
                status, _ = _get(self.url + self._ready_path)
                if status == 200:
                    return
                last = f"HTTP {status}"
            except OSError as e:
                last = repr(e)
            time.sleep(0.1)
        raise RuntimeError(
            f"{self.name} did not answer on {self.url}{self._ready_path} within {START_TIMEOUT:.0f} s "
            f"(last: {last}); log:\n{self.log_tail()}"
        )

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} on {self.url} is not running; log:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)


# The emulator serves one request at a time from http.server's HTTPServer, whose listen backlog
# is 5: a client that opens more connections at once (gcsfs fetches a batch of images
# concurrently) has the rest dropped until TCP retries them a second later. A deeper backlog
# keeps requests queued instead; they are still served one by one.
_GCS_EMULATOR = """
import sys, http.server
http.server.HTTPServer.request_queue_size = 256
from gcp_storage_emulator.__main__ import main
main(sys.argv[1:])
"""


def gcs_emulator(log_dir: Path) -> ServerProcess:
    """gcp-storage-emulator, in memory (nothing kept between runs)."""
    argv = [sys.executable, "-c", _GCS_EMULATOR, "start", "--host", "127.0.0.1", "--port", "{port}", "--in-memory"]
    return ServerProcess("gcs-emulator", argv, "/", log_dir).start()


def moto_s3(log_dir: Path) -> ServerProcess:
    """moto's server (every AWS API, S3 and IAM among them)."""
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "{port}"]
    return ServerProcess("moto", argv, "/moto-api/", log_dir).start()


S3_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


def s3_user_and_enforce_auth(server: ServerProcess, region: str) -> tuple[str, str]:
    """Create an IAM user allowed to use S3; from then on moto checks every signature.

    Returns (access key id, secret access key): moto generates both at random.
    """
    import boto3

    admin = {
        "endpoint_url": server.url,
        "region_name": region,
        "aws_access_key_id": "bootstrap",
        "aws_secret_access_key": "bootstrap",
    }
    iam = boto3.client("iam", **admin)
    iam.create_user(UserName="converter")
    iam.put_user_policy(UserName="converter", PolicyName="s3", PolicyDocument=json.dumps(S3_POLICY))
    key = iam.create_access_key(UserName="converter")["AccessKey"]
    _post(server.url + "/moto-api/reset-auth", b"0")  # every later request is authenticated
    return key["AccessKeyId"], key["SecretAccessKey"]
