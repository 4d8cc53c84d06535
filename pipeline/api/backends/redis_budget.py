"""``RedisBackend``: the limiter's state in Redis, so several processes spend ONE request budget.

Why: each process with its own limiter multiplies the real rate by the number of processes
(issue 13). With ``shared_budget = "redis://..."`` every process that names the same
``budget_name`` keeps its windows, slots, cool-down and learned limits here; the limiter and
its pure controllers (``pipeline/api/limiter_backend.py``, ``adaptive.py``) do not change.

How (decision and measurements: docs/decisions.md, "Shared budget"):

* **Admission is one Lua script** (``lua/admit.lua``): check cool-down, leases, windows and
  gaps and record the start in one atomic step, on the server's ``TIME``. Host clocks never
  enter Redis: a caller's instants travel as offsets from its own ``now`` and come back as
  durations, so skewed hosts still share one window (only the round trip, ~0.1 ms on a LAN,
  is uncertain; ``jitter_margin_s`` covers it). The ``limits`` package and pyrate-limiter
  stamp entries with the client's clock; neither has leases or a shared cool-down.
* **Slots are leases** that expire ``lease_s`` after their last renewal; a heartbeat thread
  renews this process's leases every ``lease_s / 3`` (at most every 0.5 s). A process killed
  with SIGKILL stops renewing, so its slots are free again within ``lease_s``.
* **Fail closed.** Any Redis error (refused, reset, slower than ``timeout_s``) marks the
  budget lost: every later call raises ``SharedBudgetError`` (a ``Cancelled``: the run stops,
  checkpoints and exits 6), and ``on_lost`` (the run's stop event) ends every wait at once. The
  heartbeat probes Redis even while nothing is sent, so a loss during a long wait is seen
  within ``0.5 s + timeout_s``. There is never a fallback to an unshared limit. No automatic
  reconnect either: a restarted Redis (no persistence) forgot the window, and a process that
  went on would burst.

Keys: ``reccobeats:budget:{<name>}:...`` (the hash tag keeps one budget in one cluster slot).
``release`` after a loss does not raise (it runs in ``finally`` blocks, and the lease expires
by itself); the loss is already raised by the next ``admit`` and signalled through ``on_lost``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from importlib import resources
from typing import Any, NoReturn
from urllib.parse import urlsplit

from pipeline.api.limiter_backend import Admission, AdmitRule, Cooldown, Learned, Lease
from pipeline.config import SharedBudgetConfig
from pipeline.errors import SharedBudgetError

log = logging.getLogger(__name__)

#: A waiter for a slot re-asks this often: a slot freed in another process cannot notify us.
SLOT_POLL_S = 0.05
#: The heartbeat renews leases and probes Redis at least this often (loss detection).
MAX_HEARTBEAT_S = 0.5
#: A learned rate nobody revised for this long is forgotten (tomorrow's settings may differ;
#: the per-state-dir learned rate still seeds each run).
LEARNED_TTL_S = 24 * 3600
_US = 1_000_000
_NEVER = ""  # Lua: tonumber("") is nil


def _script(name: str) -> str:
    return resources.files("pipeline.api.backends").joinpath("lua", name).read_text("utf-8")


def redacted(url: str) -> str:
    """``host:port/db`` of a Redis URL, without the password (it goes into error messages)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    return f"{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


class RedisBackend:
    """A ``LimiterBackend`` (see ``limiter_backend.py``) whose state lives in Redis.

    ``clock`` must be the limiter's clock (any clock: only offsets from it reach Redis).
    ``on_lost`` is called once, from whichever thread first sees Redis fail.
    """

    slot_poll_s: float | None = SLOT_POLL_S

    def __init__(
        self,
        config: SharedBudgetConfig,
        *,
        clock: Callable[[], float],
        on_lost: Callable[[SharedBudgetError], None] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._on_lost = on_lost
        self._where = f"Redis at {redacted(config.url)}, budget {config.name!r}"
        self._lost: SharedBudgetError | None = None
        self._lock = threading.Lock()  # guards _held and _lost (heartbeat vs limiter threads)
        self._held: dict[int, str] = {}
        self._next_key = 0
        self._token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        prefix = f"reccobeats:budget:{{{config.name}}}"
        self._k_starts = f"{prefix}:starts"
        self._k_ep = f"{prefix}:ep:"
        self._k_leases = f"{prefix}:leases"
        self._k_state = f"{prefix}:state"
        self._k_learned = f"{prefix}:learned"
        self._lease_us = int(config.lease_s * _US)
        self._redis = _connect(config, self._where)
        self._admit = self._redis.register_script(_script("admit.lua"))
        self._extend = self._redis.register_script(_script("extend_cooldown.lua"))
        self._cooldown = self._redis.register_script(_script("cooldown.lua"))
        self._leases = self._redis.register_script(_script("leases.lua"))
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(
            target=self._beat, name=f"budget-heartbeat-{config.name}", daemon=True
        )
        self._heartbeat.start()

    # -- LimiterBackend ---------------------------------------------------------------------

    def admit(self, endpoint: str, now: float, rule: AdmitRule) -> Admission:
        with self._lock:
            self._next_key += 1
            key = self._next_key
        lease_id = f"{self._token}:{key}"
        paced = rule.paced_from - now
        args: list[Any] = [
            _us(rule.window_s),
            _us(rule.margin_s),
            rule.budget,
            _us(rule.interval_s),
            rule.max_in_flight,
            _NEVER if rule.endpoint_budget is None else rule.endpoint_budget,
            _us(rule.endpoint_interval_s),
            _us(rule.paced_interval_s),
            _offset(paced),
            self._lease_us,
            lease_id,
            endpoint,
        ]
        keys = [
            self._k_starts,
            self._k_ep + endpoint,
            self._k_leases,
            self._k_state,
            self._k_learned,
        ]
        code, value_us, _server_now = self._call(self._admit, keys, args)
        if code == 0:
            with self._lock:
                self._held[key] = lease_id
            return Admission(lease=Lease(key, endpoint, now))
        if code == 2:
            return Admission(wait_s=None)
        return Admission(wait_s=max(int(value_us), 1) / _US)

    def release(self, lease: Lease) -> None:
        with self._lock:
            lease_id = self._held.pop(lease.key, None)
            lost = self._lost is not None
        if lease_id is None or lost:
            return  # released already, or Redis is gone and the lease expires on its own
        # A loss here is recorded (``lost``, ``on_lost``) and raised by the next admit.
        with contextlib.suppress(SharedBudgetError):
            self._call(self._redis.zrem, self._k_leases, lease_id)

    def in_use(self) -> int:
        return int(self._call(self._leases, [self._k_leases], [self._lease_us]))

    def cooldown(self) -> Cooldown:
        remaining_us, cause = self._call(self._cooldown, [self._k_state], [])
        if remaining_us is None:
            return Cooldown()
        return Cooldown(self._clock() + int(remaining_us) / _US, _text(cause))

    def extend_cooldown(self, until: float, cause: str, now: float) -> float:
        if until == float("-inf"):
            return 0.0
        added_us, _remaining = self._call(self._extend, [self._k_state], [_us(until - now), cause])
        return int(added_us) / _US

    def learned(self) -> Learned:
        rate, concurrency = self._call(self._redis.hmget, self._k_learned, "rate", "concurrency")
        return Learned(
            rate=None if rate is None else float(rate),
            concurrency=None if concurrency is None else int(concurrency),
        )

    def store_learned(self, learned: Learned) -> None:
        mapping: dict[str, float | int] = {}
        if learned.rate is not None:
            mapping["rate"] = learned.rate
        if learned.concurrency is not None:
            mapping["concurrency"] = learned.concurrency
        if mapping:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(self._k_learned, mapping=mapping)
            pipe.expire(self._k_learned, LEARNED_TTL_S)
            self._call(pipe.execute)

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def lost(self) -> SharedBudgetError | None:
        """The loss, once Redis failed (the run must then exit with it)."""
        with self._lock:
            return self._lost

    def close(self) -> None:
        """Stop the heartbeat, give back leases still held, drop the connections."""
        self._stop.set()
        if self._heartbeat is not threading.current_thread():
            self._heartbeat.join(timeout=5)
        with self._lock:
            held, self._held = list(self._held.values()), {}
            lost = self._lost is not None
        if held and not lost:
            # A loss here is recorded already; the leases then expire on their own.
            with contextlib.suppress(SharedBudgetError):
                self._call(self._redis.zrem, self._k_leases, *held)
        self._redis.close()

    def __enter__(self) -> RedisBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _beat(self) -> None:
        """Renew our leases (a killed process cannot, so its slots expire) and probe Redis."""
        period = min(self.config.lease_s / 3, MAX_HEARTBEAT_S)
        while not self._stop.wait(period):
            with self._lock:
                held = list(self._held.values())
            try:
                self._call(self._leases, [self._k_leases], [self._lease_us, *held])
            except SharedBudgetError:
                return

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            lost = self._lost
        if lost is not None:
            raise lost
        import redis

        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            self._lose(exc)

    def _lose(self, exc: Exception) -> NoReturn:
        error = SharedBudgetError(
            f"shared budget lost: {self._where}: {exc}; stopped sending (fail closed: no "
            "fallback to an unshared limit); the run checkpoints its state and exits; run it "
            "again when Redis is back"
        )
        with self._lock:
            first = self._lost is None
            if first:
                self._lost = error
            error = self._lost or error
        if first:
            log.error("%s", error)
            if self._on_lost is not None:
                self._on_lost(error)
        raise error from exc


def _connect(config: SharedBudgetConfig, where: str) -> Any:
    """A client that fails fast (no retries: a retried admit could double-count, and a
    reconnect after a restart would meet an empty window); raises at once if unreachable."""
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:
        raise SharedBudgetError(
            "shared budget: the redis client is not installed (pip install 'reccobeats-etl[redis]')"
        ) from None
    client = redis.Redis.from_url(
        config.url,
        socket_timeout=config.timeout_s,
        socket_connect_timeout=config.timeout_s,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
        health_check_interval=0,
    )
    try:
        info = client.info("server")
    except redis.RedisError as exc:
        client.close()
        raise SharedBudgetError(f"shared budget: cannot reach {where}: {exc}") from None
    version = str(info.get("redis_version", "0"))
    if int(version.split(".")[0]) < 5:
        client.close()
        raise SharedBudgetError(
            f"shared budget: {where} runs Redis {version}; 5 or newer is needed (scripts that "
            "read TIME before writing)"
        )
    return client


def _us(seconds: float) -> int:
    return round(seconds * _US)


def _offset(seconds: float) -> int | str:
    """An instant as microseconds from now for Lua: +inf is "never", -inf "long ago"."""
    if seconds == float("inf"):
        return _NEVER
    return -(10**15) if seconds == float("-inf") else _us(seconds)


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")
