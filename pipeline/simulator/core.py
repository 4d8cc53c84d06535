"""One request's life, independent of the HTTP plumbing: count -> limit -> capacity -> fault
-> answer -> serve.

``SimulatorCore.handle`` turns a method and request target into a ``Reply`` (status, body,
headers, a service time, or "reset the connection"); the server then calls ``serve`` (queue
for a worker, hold it for the service time: ``capacity.py``) and ``complete`` just before
sending (so the in-flight count covers the latency, and a client that has its answer always
finds it counted).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pipeline.simulator import shapes
from pipeline.simulator.api import (
    ENDPOINTS,
    Query,
    Route,
    SimulatorApi,
    list_param,
    no_such_path,
    route,
)
from pipeline.simulator.capacity import ServerCapacity
from pipeline.simulator.catalog import Catalog
from pipeline.simulator.config import SimulatorConfig
from pipeline.simulator.counters import OTHER, SimCounters, outcome_for_status
from pipeline.simulator.faults import FaultInjector
from pipeline.simulator.limits import RateLimits

JSON = "application/json"
CONTROL_PREFIX = "/__sim/"


@dataclass(frozen=True, slots=True)
class Reply:
    status: int  # 0 when ``reset``
    body: bytes = b""
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0  # service time (the injected latency), spent holding a worker
    reset: bool = False  # close the connection without any response
    admitted: bool = False  # passed the rate limit and the concurrency cap: it uses capacity
    # accounting, for ``complete`` (None: a control request, not counted)
    endpoint: str | None = None
    outcome: str = "ok"
    block_started: bool = False
    limit_reason: str | None = None  # on a 429: which limit tripped (limits.Decision.reason)
    trickle_s: float = 0.0  # > 0: the body goes out one byte at a time, this far apart


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class SimulatorCore:
    def __init__(self, config: SimulatorConfig, catalog: Catalog) -> None:
        self.config = config
        self.catalog = catalog
        self.api = SimulatorApi(catalog, config)
        self.limits = RateLimits(config.limit_spec, clock=config.clock)
        self.faults = FaultInjector(config)
        self.counters = SimCounters(ENDPOINTS, config.window_s, clock=config.clock)
        self.capacity = ServerCapacity(config.parallelism, config.max_concurrent, config.clock)

    # ------------------------------------------------------------------ public
    def handle(self, method: str, target: str) -> Reply:
        split = urlsplit(target)
        path = split.path
        if path.startswith(CONTROL_PREFIX):
            return self._control(method, path)
        query = parse_qs(split.query, keep_blank_values=True)
        r = route(method, path)
        if r is None:
            self.counters.arrival(OTHER)
            return Reply(404, _json(no_such_path(path).body), endpoint=OTHER, outcome="404")
        ep = r.endpoint
        n_ids = len(list_param(query, "ids")) if ep in ("tracks", "audio_features") else 0
        self.counters.arrival(ep, n_ids)

        decision = self.limits.check(ep)
        if not decision.allowed:
            return self._rate_limited(
                ep, path, decision.retry_after_header, decision.reason, decision.block_started
            )
        if not self.capacity.try_enter():
            # the rate allowed it, but the server already holds max_concurrent requests
            return self._rate_limited(ep, path, 1, "concurrency", False)
        self.counters.admitted()
        return self._answer(r, ep, path, query)

    def _rate_limited(
        self, ep: str, path: str, retry_after: int, reason: str | None, block_started: bool
    ) -> Reply:
        body = shapes.error_body(shapes.RATE_LIMITED, "Too many requests", path)
        return Reply(
            429,
            _json(body),
            headers=(("Retry-After", str(retry_after)),),
            endpoint=ep,
            outcome="429",
            block_started=block_started,
            limit_reason=reason,
        )

    def _answer(self, r: Route, ep: str, path: str, query: Query) -> Reply:
        """An admitted request: its fault plan (service time, fault kind), then its answer."""
        plan = self.faults.plan()
        delay = plan.delay_s
        if plan.kind == "reset":
            return Reply(0, delay_s=delay, reset=True, endpoint=ep, outcome="resets", admitted=True)
        if plan.kind == "error500":
            error = shapes.error_body(shapes.INTERNAL, "Internal Server Error", path)
            return Reply(
                500, _json(error), delay_s=delay, endpoint=ep, outcome="5xx", admitted=True
            )
        if plan.kind == "error502":
            return Reply(
                502,
                shapes.PROXY_502_HTML.encode(),
                content_type="text/html",
                delay_s=delay,
                endpoint=ep,
                outcome="5xx",
                admitted=True,
            )
        if plan.kind == "reject400":
            invalid = shapes.validation_body([("ids", "must not be rejected, yet is")])
            return Reply(400, _json(invalid), delay_s=delay, endpoint=ep, outcome="400",
                         admitted=True)  # fmt: skip
        if plan.kind == "html404":
            return Reply(404, shapes.PROXY_404_HTML.encode(), content_type="text/html",
                         delay_s=delay, endpoint=ep, outcome="404", admitted=True)  # fmt: skip
        resp = self.api.handle(r, path, query)
        body = _json(resp.body)
        outcome = outcome_for_status(resp.status)
        if plan.kind == "malformed" and resp.status == 200:
            body = body[: max(1, len(body) // 2)]  # cut mid-document: not parseable JSON
            outcome = "malformed"
        return Reply(
            resp.status, body, delay_s=delay, endpoint=ep, outcome=outcome, admitted=True,
            trickle_s=self.config.trickle_s_per_byte,
        )  # fmt: skip

    def serve(self, reply: Reply, stop: threading.Event) -> None:
        """Spend the reply's service time holding a worker (queueing first if all are busy)."""
        if reply.admitted:
            service = self.capacity.serve(reply.delay_s, stop)
            self.counters.served(service.queue_wait_s, service.service_s)
        elif reply.delay_s > 0:
            stop.wait(reply.delay_s)

    def complete(self, reply: Reply) -> None:
        """Count the reply, right before it is sent (or the connection reset)."""
        if reply.admitted:
            self.capacity.leave()
        if reply.endpoint is not None:
            status = None if reply.reset else reply.status
            self.counters.finished(
                reply.endpoint, reply.outcome, status, reply.block_started, reply.limit_reason
            )

    def reset(self) -> None:
        """Fresh counters, limiter state and fault sequence (``POST /__sim/reset``)."""
        self.counters.reset()
        self.limits.reset()
        self.faults.reset()
        self.capacity.reset()

    def counters_snapshot(self) -> dict[str, Any]:
        snap = self.counters.snapshot()
        snap["limiter"] = self.limits.snapshot()
        snap["capacity"] = self.capacity.snapshot()
        return snap

    def info(self) -> dict[str, Any]:
        spec = self.config.limit_spec
        return {
            "simulator": True,
            "catalog_size": self.catalog.size,
            "catalog_rows": len(self.catalog.all_spotify_ids),
            "endpoints": list(ENDPOINTS),
            "limits": {
                "model": spec.model,
                "rate_per_window": spec.rate_per_window,
                "window_s": spec.window_s,
                "burst": spec.burst,
                "burst_window_s": spec.burst_window_s,
                "block_after": spec.block_after,
                "block_seconds": spec.block_seconds,
                "count_rejected": spec.count_rejected,
                "per_endpoint": spec.per_endpoint,
                "max_ids": self.config.max_ids,
            },
            "capacity": {
                "parallelism": self.config.parallelism,
                "max_concurrent": self.config.max_concurrent,
                "latency_median_s": self.config.latency_median_s,
                "latency_sigma": self.config.latency_sigma,
            },
            "config": self.config.as_dict(),
        }

    # ------------------------------------------------------------------ control plane
    def _control(self, method: str, path: str) -> Reply:
        if method == "GET" and path == "/__sim/counters":
            return Reply(200, _json(self.counters_snapshot()))
        if method == "GET" and path == "/__sim/info":
            return Reply(200, _json(self.info()))
        if method == "POST" and path == "/__sim/reset":
            self.reset()
            return Reply(200, _json({"reset": True}))
        return Reply(404, _json(no_such_path(path).body))
