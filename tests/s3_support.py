"""A real S3-compatible server for the object-storage tests: moto in server mode on loopback.

Why a server and not moto's in-process mock: the code under test talks to S3 through s3fs /
aiobotocore over HTTP exactly as users' runs do (endpoint from ``AWS_ENDPOINT_URL``,
conditional PUTs, ``ListObjectsV2``, batched deletes); a server keeps that whole stack real
and lets subprocesses (the kill -9 tests) share the same bucket. Nothing of the filesystem
layer is mocked.

``s3_server`` starts one ``ThreadedMotoServer`` per test session on a free 127.0.0.1 port
and points ``AWS_ENDPOINT_URL`` and dummy credentials at it. ``s3_root`` gives each test a
fresh bucket URI. Missing ``moto[server]``/``s3fs`` skips outside CI and fails in CI
(``CI=true``), so a skipped object-storage suite never passes as green.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

LOOPBACK = "127.0.0.1"
_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str

    def env(self) -> dict[str, str]:
        """Environment a subprocess needs to reach this server the standard way."""
        return {**_ENV, "AWS_ENDPOINT_URL": self.endpoint_url}

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint_url}

    def new_bucket(self) -> str:
        """A fresh, empty bucket; returns its name."""
        import s3fs

        name = f"t-{uuid.uuid4().hex[:16]}"
        fs = s3fs.S3FileSystem(endpoint_url=self.endpoint_url, skip_instance_cache=True)
        fs.mkdir(name)
        return name


def _require(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        message = f"{module} missing: pip install -e '.[dev]' (moto[server] and s3fs)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    _require("moto.server")
    _require("s3fs")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
    port = _free_port()
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=port, verbose=False)
    server.start()
    info = S3Server(f"http://{LOOPBACK}:{port}")
    saved = {k: os.environ.get(k) for k in [*_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(info.env())
    try:
        yield info
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@pytest.fixture
def s3_root(s3_server: S3Server) -> str:
    """``s3://<fresh bucket>``: nothing another test wrote is visible."""
    return f"s3://{s3_server.new_bucket()}"
