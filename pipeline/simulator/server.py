"""The HTTP face of the simulator: a stdlib threading server on 127.0.0.1 only.

HTTP/1.1 keep-alive with Content-Length on every response (so ``requests.Session`` pools its
connections), TCP_NODELAY (no Nagle/delayed-ACK stalls between header and body writes), a deep
accept queue and daemon handler threads: enough for ~16 client threads and thousands of
requests per second. All behaviour lives in ``core.SimulatorCore``; this module only executes
its ``Reply`` (sleep, send or reset).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from pipeline.simulator.catalog import Catalog
from pipeline.simulator.config import LOOPBACK, SimulatorConfig
from pipeline.simulator.core import Reply, SimulatorCore

log = logging.getLogger("pipeline.simulator")

SIMULATOR_HEADER = "X-ReccoBeats-Simulator"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ReccoBeatsSimulator/1.0"
    disable_nagle_algorithm = True
    timeout = 120  # idle keep-alive connections are dropped after this
    server: _HttpServer

    def end_headers(self) -> None:
        # here rather than in _send, so stdlib error pages (bad request line...) carry it too
        self.send_header(SIMULATOR_HEADER, "1")
        super().end_headers()

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        core = self.server.core
        reply = core.handle(method, self.path)
        try:
            core.serve(reply, self.server.stopping)
        finally:
            # counted before the bytes leave, so a client that got its answer always finds
            # it in the counters
            core.complete(reply)
        if reply.reset:
            self._reset_connection()
        else:
            self._send(reply)

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        if reply.trickle_s > 0:  # a server that trickles its body (issue 11)
            for i in range(len(reply.body)):
                self.wfile.write(reply.body[i : i + 1])
                self.wfile.flush()
                if self.server.stopping.wait(reply.trickle_s):
                    return
            return
        self.wfile.write(reply.body)

    def _reset_connection(self) -> None:
        """Close with RST and no response, like a dropped upstream connection."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()  # drop the makefile reference so close() really closes
            self.connection.close()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], core: SimulatorCore) -> None:
        self.core = core
        self.stopping = threading.Event()
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Drop kept-alive connections, so a stopped simulator really stops answering."""
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # ConnectionError, TimeoutError, ...
            return  # clients hanging up are normal under fault injection
        log.exception("simulator: error while handling a request from %s", client_address)


class SimulatorServer:
    """The ReccoBeats simulator; a context manager: ``with SimulatorServer(cfg) as sim: ...``."""

    def __init__(
        self, config: SimulatorConfig | None = None, catalog: Catalog | None = None
    ) -> None:
        self.config = config or SimulatorConfig()
        if self.config.host != LOOPBACK:
            raise ValueError(f"the simulator listens on {LOOPBACK} only, not {self.config.host!r}")
        self.catalog = catalog or Catalog.load(
            extra_synthetic=self.config.synthetic_tracks,
            seed=self.config.seed,
            unknown_fraction=self.config.unknown_fraction,
            no_features_fraction=self.config.no_features_fraction,
            shared_isrc_fraction=self.config.shared_isrc_fraction,
        )
        self.core = SimulatorCore(self.config, self.catalog)
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> str:
        """Bind (port 0 = a free port), serve from a background thread, return the base URL."""
        if self._httpd is not None:
            raise RuntimeError("simulator already started")
        self.core.capacity.reopen()
        self._httpd = _HttpServer((self.config.host, self.config.port), self.core)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"reccobeats-simulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        log.info("ReccoBeats SIMULATOR (not the real API) listening on %s", self.url)
        return self.url

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        httpd.stopping.set()
        self.core.capacity.close()  # queued requests leave without service
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> SimulatorServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ introspection
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("simulator not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (the base URL; paths start with ``/v1``)."""
        return f"http://{self.config.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def counters(self) -> dict[str, Any]:
        """The same JSON as ``GET /__sim/counters``, without HTTP."""
        return self.core.counters_snapshot()

    def reset(self) -> None:
        """Same as ``POST /__sim/reset``: fresh counters, limiter and fault sequence."""
        self.core.reset()

    def info(self) -> dict[str, Any]:
        return self.core.info()
