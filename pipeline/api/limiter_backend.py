"""The port between ``RateLimiter`` and the state its limits are counted in.

Why a port: today one process holds the whole request budget, so the sliding windows, the
concurrency slots, the 429 cool-down and the learned limits live in memory
(``InMemoryBackend``). Several processes sharing one API budget (issue 13: a Redis-backed
budget) need the same state in one shared place. ``RateLimiter`` therefore keeps only what is
local to a process (its FIFO queues, the waiting, statistics, the pure controllers in
``adaptive.py``) and asks a ``LimiterBackend`` for everything that must be counted once per
budget. An adapter implements the five operations below; nothing else of the limiter changes.

Contract (every adapter):

* **Atomic admission.** ``admit`` checks the cool-down-free limits (concurrency cap, sliding
  windows global and per endpoint, minimum gaps) AND records the start and takes a slot in one
  step. Two callers must never both be admitted on the last unit of budget (Redis: one Lua
  script). The cool-down is checked by the limiter before ``admit`` (it needs the cause and the
  ``max_retry_after_s`` refusal), so ``admit`` does not look at it.
* **Instants are the caller's clock.** ``now`` and every instant stored or returned
  (``Cooldown.until``, ``AdmitRule.paced_from``) are readings of the limiter's ``clock``. The
  in-memory adapter uses ``time.monotonic`` (per process). A shared adapter must be used with a
  clock every process agrees on: build the limiter with ``clock=time.time`` (the rule for a
  Redis budget; NTP-level skew is what ``margin_s`` absorbs). Durations (``wait_s``) are
  seconds, valid in any clock.
* **Leases.** A slot is a ``Lease`` returned by ``admit`` and given back with ``release``
  (idempotent: releasing twice, or a lease the backend already expired, is a no-op). A shared
  adapter should expire leases older than ``lease_ttl_s`` so a crashed process cannot hold
  slots for ever; the in-memory adapter never expires them (its process is the only holder).
* **Wake-ups.** When ``admit`` answers "wait for a slot" (``Admission.wait_s is None``), the
  limiter waits until a release *in this process* notifies it, or at most ``slot_poll_s``
  seconds when that is not ``None`` (a shared adapter: a slot freed by another process cannot
  notify us, so it sets e.g. 0.05). The in-memory adapter: ``None`` (releases all notify).
* **Thread safety.** The limiter calls the backend while holding its own lock, so an
  in-process adapter needs no lock of its own; a shared adapter must be atomic across
  processes (its own concern), and must not call back into the limiter.

Signature changes are listed here (adapters in other branches read this docstring):
``admit`` / ``release`` / ``in_use`` / ``cooldown`` / ``extend_cooldown`` / ``learned`` /
``store_learned`` as below since the first version (issue 9). Issue 10 (no signature change):
``AdmitRule.max_in_flight`` is the in-flight limit in force, which now adapts between calls
(``concurrency.py``), and ``Learned.concurrency`` is published whenever it changes.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class AdmitRule:
    """The limits one ``admit`` call checks; rates are starts per ``window_s``.

    The limiter computes it per call (the learned rate changes; pacing after a 429 widens the
    global gap), so an adapter stores no configuration of its own.
    """

    window_s: float
    #: Global starts allowed in any window (whole starts; the limiter passes >= 1).
    budget: int
    #: Minimum seconds between two consecutive global starts (jitter margin included; 0: none).
    interval_s: float
    #: Max concurrent requests (slots) under this budget: the adaptive in-flight limit in force
    #: (<= ``max_concurrency``); it may differ from one call to the next.
    max_in_flight: int
    #: Per-endpoint starts per window (``None``: only the global budget applies).
    endpoint_budget: int | None = None
    #: Minimum seconds between two consecutive starts of this endpoint (margin included).
    endpoint_interval_s: float = 0.0
    #: A start keeps counting in a window for ``window_s + margin_s`` (our start and the
    #: server's arrival differ by network jitter).
    margin_s: float = 0.0
    #: After a 429, starts are paced ``paced_interval_s`` apart (if larger than
    #: ``interval_s``), but only between starts at or after ``paced_from`` (the end of the
    #: cool-down), so the first start after the silence is not pushed back further.
    paced_interval_s: float = 0.0
    paced_from: float = math.inf


@dataclass(frozen=True, slots=True)
class Lease:
    """One concurrency slot. ``key`` identifies it in the backend; ``started_at`` is the
    instant (caller clock) the start was charged to the windows."""

    key: int
    endpoint: str
    started_at: float


@dataclass(frozen=True, slots=True)
class Admission:
    """``admit``'s answer: a ``lease`` (admitted), or how long to wait.

    ``wait_s > 0``: wait that long (time-bound: window, gap). ``wait_s is None`` and no lease:
    all slots are taken; wait for a release (see ``slot_poll_s``).
    """

    lease: Lease | None = None
    wait_s: float | None = 0.0


@dataclass(frozen=True, slots=True)
class Cooldown:
    """The shared silence after a 429: no start before ``until`` (caller clock)."""

    until: float = -math.inf
    cause: str = ""  # the endpoint whose 429 set it (for the error message)


@dataclass(frozen=True, slots=True)
class Learned:
    """What the controllers learned about the server, shared by every user of the budget.

    ``rate`` in starts per window (fractional); ``concurrency`` in requests; ``None``:
    nothing learned yet.
    """

    rate: float | None = None
    concurrency: int | None = None


@runtime_checkable
class LimiterBackend(Protocol):
    """Where a budget's windows, slots, cool-down and learned limits are kept."""

    #: Seconds a slot waiter waits at most before asking ``admit`` again (None: until notified).
    slot_poll_s: float | None

    def admit(self, endpoint: str, now: float, rule: AdmitRule) -> Admission:
        """Atomically: if a slot is free and the windows and gaps allow a start at ``now``,
        record the start (global and for ``endpoint``) and return its lease; otherwise
        return the wait (``wait_s`` seconds, or ``None``: no free slot). Never waits."""
        ...

    def release(self, lease: Lease) -> None:
        """Give the slot back (idempotent)."""
        ...

    def in_use(self) -> int:
        """Slots currently held under this budget (all holders)."""
        ...

    def cooldown(self) -> Cooldown:
        """The current (possibly past) cool-down."""
        ...

    def extend_cooldown(self, until: float, cause: str, now: float) -> float:
        """Make the cool-down last at least until ``until`` (it never shrinks).

        Returns the seconds this call added to the union of cool-down intervals (0.0 if the
        current one already lasts longer): the limiter's ``cooldown_seconds`` figure.
        """
        ...

    def learned(self) -> Learned:
        """The learned rate/concurrency every holder of this budget should start from."""
        ...

    def store_learned(self, learned: Learned) -> None:
        """Publish a controller decision (fields left ``None`` keep their stored value)."""
        ...


@dataclass
class InMemoryBackend:
    """Today's behaviour: one process owns the budget; plain deques and counters.

    Not locked: ``RateLimiter`` calls it under its own lock (see the module contract).
    """

    slot_poll_s: float | None = None
    _starts: deque[float] = field(default_factory=deque)
    _ep_starts: dict[str, deque[float]] = field(default_factory=dict)
    _last_start: float | None = None
    _ep_last_start: dict[str, float] = field(default_factory=dict)
    _leases: set[int] = field(default_factory=set)
    _next_key: int = 0
    _cooldown: Cooldown = field(default_factory=Cooldown)
    _learned: Learned = field(default_factory=Learned)

    def admit(self, endpoint: str, now: float, rule: AdmitRule) -> Admission:
        if len(self._leases) >= rule.max_in_flight:
            return Admission(wait_s=None)
        span = rule.window_s + rule.margin_s
        wait = _window_wait(self._starts, rule.budget, span, now)
        if self._last_start is not None:
            paced = self._last_start >= rule.paced_from
            gap = max(rule.paced_interval_s, rule.interval_s) if paced else rule.interval_s
            wait = max(wait, self._last_start + gap - now)
        ep_starts = self._ep_starts.setdefault(endpoint, deque())
        if rule.endpoint_budget is not None:
            wait = max(wait, _window_wait(ep_starts, rule.endpoint_budget, span, now))
        ep_last = self._ep_last_start.get(endpoint)
        if ep_last is not None:
            wait = max(wait, ep_last + rule.endpoint_interval_s - now)
        if wait > 0:
            return Admission(wait_s=wait)
        self._starts.append(now)
        ep_starts.append(now)
        self._last_start = now
        self._ep_last_start[endpoint] = now
        self._next_key += 1
        self._leases.add(self._next_key)
        return Admission(lease=Lease(self._next_key, endpoint, now))

    def release(self, lease: Lease) -> None:
        self._leases.discard(lease.key)

    def in_use(self) -> int:
        return len(self._leases)

    def cooldown(self) -> Cooldown:
        return self._cooldown

    def extend_cooldown(self, until: float, cause: str, now: float) -> float:
        current = self._cooldown.until
        if until <= current:
            return 0.0
        self._cooldown = Cooldown(until, cause)
        return until - max(current, now)

    def learned(self) -> Learned:
        return self._learned

    def store_learned(self, learned: Learned) -> None:
        self._learned = Learned(
            rate=self._learned.rate if learned.rate is None else learned.rate,
            concurrency=(
                self._learned.concurrency if learned.concurrency is None else learned.concurrency
            ),
        )


def _window_wait(starts: deque[float], budget: int, span: float, now: float) -> float:
    """Seconds until one more start fits: a start at t counts while now < t + span."""
    while starts and starts[0] + span <= now:
        starts.popleft()
    excess = len(starts) - budget
    if excess < 0:
        return 0.0
    return starts[excess] + span - now  # when the (excess+1)-th oldest expires
