"""A real ``redis-server`` for the shared-budget tests: started on a free loopback port, stopped.

Why a real server and not a fake: the behaviour under test is Redis' own (Lua atomicity, the
server's ``TIME``, what a client sees when the server goes away), which a fake would only
imitate. The server keeps nothing on disk (``--save '' --appendonly no``, its ``--dir`` a temp
dir) and listens on 127.0.0.1 only.

Missing binary: ``make redis-server`` installs it (apt-get, as root). Outside CI the tests skip
with that hint; in CI (``CI`` set to true) a missing server FAILS the tests: a skipped
shared-budget suite must never pass as green.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 10.0
_MISSING = (
    "redis-server not found on PATH: run `make redis-server` (installs it with apt-get as root) "
    "or install it with your package manager"
)


def redis_binary() -> str | None:
    return shutil.which("redis-server")


def require_redis_binary() -> str:
    """The binary's path; fail in CI, skip elsewhere, when there is none."""
    path = redis_binary()
    if path is not None:
        return path
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(_MISSING + " (CI: the shared-budget tests must run)", pytrace=False)
    pytest.skip(_MISSING)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _ping(port: int, timeout: float = 0.2) -> bool:
    """A raw RESP PING (no client library needed to know the server is up)."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process; ``stop()`` and ``start()`` again keep the same port."""

    def __init__(self, binary: str, workdir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> RedisServer:
        if self.running:
            return self
        log = (self.workdir / f"redis-{self.port}.log").open("ab")
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", LOOPBACK,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip
        self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = (self.workdir / f"redis-{self.port}.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server exited at start:\n{tail[-2000:]}")
            if _ping(self.port):
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer PING within {START_TIMEOUT_S}s")

    def stop(self) -> None:
        """SIGTERM and wait: clients see the connection close, as when Redis goes down."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def flush(self) -> None:
        import redis

        with redis.Redis(host=LOOPBACK, port=self.port) as r:
            r.flushall()


def start_redis(workdir: Path) -> RedisServer:
    """A started server; retries on a new port if another process took the free one."""
    binary = require_redis_binary()
    last: Exception | None = None
    for _ in range(3):
        server = RedisServer(binary, workdir)
        try:
            return server.start()
        except RuntimeError as exc:
            last = exc
    raise RuntimeError(f"could not start redis-server: {last}")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One server for the whole session (tests use distinct budget names, or ``redis_url``)."""
    with tempfile.TemporaryDirectory(prefix="reccobeats-redis-") as tmp:
        server = start_redis(Path(tmp))
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server, emptied: each test starts from no budget state."""
    if not redis_server.running:  # a test may have stopped it: bring it back
        redis_server.start()
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test's own, which the test may stop and start (Redis lost mid-run)."""
    server = start_redis(tmp_path)
    try:
        yield server
    finally:
        server.stop()
