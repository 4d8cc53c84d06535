"""Server-side rate limits of the simulated API: pure logic on an injectable clock, no HTTP.

The real limit is unpublished (api notes §5), so the simulator offers the three shapes a client
must survive (design §3):

* ``budget``  -- at most ``rate_per_window`` starts in ANY sliding window of ``window_s``, plus at
  most ``burst`` starts in any ``burst_window_s`` (1 s): a per-minute budget with a burst cap.
* ``spacing`` -- strict spacing: one start per ``window_s / rate_per_window`` seconds, no burst.
* ``block``   -- ``budget`` plus a temporary block: the ``block_after``-th 429 within
  ``window_s`` starts a block of ``block_seconds`` during which every request gets 429. The
  request that trips the block is told the block's length in its Retry-After; 429s served
  during a block do not extend it, and the 429 history restarts after it.
* ``none``    -- no limit (benchmarks of everything else).

Rejected requests do NOT count against the budget by default (``count_rejected=False``), as on
most real servers; with ``count_rejected=True`` every rejected request is recorded as a start,
so a client that hammers through 429s keeps itself locked out. Retry-After is the time until the
limit that tripped would admit the request (oldest start leaving the window, next spacing slot,
block end), rounded up to whole seconds and at least 1 -- honouring it exactly always works.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

MODELS = ("budget", "spacing", "block", "none")
GLOBAL_KEY = "*"
#: Tolerance in the client's favour, so float noise never turns "exactly on time" into a 429.
EPS = 1e-6


@dataclass(frozen=True)
class LimitSpec:
    """Which limit applies, and its numbers."""

    model: str = "budget"
    rate_per_window: float = 600  # budget: floor(rate) starts per window; spacing: exact rate
    window_s: float = 60.0
    burst: int = 20  # starts allowed in any burst_window_s; 0 = no burst cap
    burst_window_s: float = 1.0
    block_after: int = 3
    block_seconds: float = 30.0
    count_rejected: bool = False
    per_endpoint: bool = False  # False: one limit shared by all endpoints

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, not {self.model!r}")
        if not self.rate_per_window > 0:
            raise ValueError("rate_per_window must be > 0")
        if self.window_s <= 0 or self.burst_window_s <= 0:
            raise ValueError("window_s and burst_window_s must be > 0")
        if self.burst < 0:
            raise ValueError("burst must be >= 0 (0 = no burst cap)")
        if self.block_after < 1 or self.block_seconds <= 0:
            raise ValueError("block_after must be >= 1 and block_seconds > 0")

    @property
    def capacity(self) -> int:
        """Starts admitted per window by the budget models (a whole number, at least 1)."""
        return max(1, math.floor(self.rate_per_window + EPS))

    @property
    def spacing_s(self) -> float:
        return self.window_s / self.rate_per_window


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one request; ``reason`` says which limit tripped."""

    allowed: bool
    retry_after_s: float = 0.0
    reason: str | None = None  # "window" | "burst" | "spacing" | "blocked"
    block_started: bool = False

    @property
    def retry_after_header(self) -> int:
        """Integer seconds, rounded up, at least 1 (the header only exists on a 429)."""
        return max(1, math.ceil(self.retry_after_s - EPS))


_ALLOW = Decision(True)


@dataclass
class _State:
    starts: deque[float] = field(default_factory=deque)  # within window_s
    burst_starts: deque[float] = field(default_factory=deque)  # within burst_window_s
    rejects: deque[float] = field(default_factory=deque)  # 429s within window_s (block model)
    last_start: float | None = None  # spacing model
    blocked_until: float = float("-inf")
    blocks: int = 0


class RateLimits:
    """Admits or rejects request starts; thread-safe; one state globally or per endpoint."""

    def __init__(self, spec: LimitSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self._clock = clock
        self._lock = threading.Lock()
        self._states: dict[str, _State] = {}

    def reset(self) -> None:
        with self._lock:
            self._states.clear()

    def check(self, endpoint: str = GLOBAL_KEY) -> Decision:
        """Decide on a request starting now, and record it (atomically)."""
        spec = self.spec
        if spec.model == "none":
            return _ALLOW
        with self._lock:
            now = self._clock()
            key = endpoint if spec.per_endpoint else GLOBAL_KEY
            st = self._states.get(key)
            if st is None:
                st = self._states[key] = _State()
            self._expire(st, now)
            if spec.model == "block" and now < st.blocked_until - EPS:
                if spec.count_rejected:
                    self._record_start(st, now)
                return Decision(False, st.blocked_until - now, "blocked")
            if spec.model == "spacing":
                return self._check_spacing(st, now)
            return self._check_budget(st, now)

    def snapshot(self) -> dict[str, dict[str, float | int]]:
        """Per limit key: starts in the current window and remaining block seconds."""
        with self._lock:
            now = self._clock()
            out: dict[str, dict[str, float | int]] = {}
            for key, st in self._states.items():
                self._expire(st, now)
                out[key] = {
                    "in_window": len(st.starts),
                    "blocked_for_s": max(0.0, st.blocked_until - now),
                    "blocks": st.blocks,
                }
            return out

    # ------------------------------------------------------------------ internals
    def _expire(self, st: _State, now: float) -> None:
        spec = self.spec
        for dq, span in (
            (st.starts, spec.window_s),
            (st.burst_starts, spec.burst_window_s),
            (st.rejects, spec.window_s),
        ):
            limit = now - span + EPS
            while dq and dq[0] <= limit:
                dq.popleft()

    def _record_start(self, st: _State, now: float) -> None:
        st.starts.append(now)
        st.burst_starts.append(now)
        st.last_start = now

    def _check_spacing(self, st: _State, now: float) -> Decision:
        interval = self.spec.spacing_s
        if st.last_start is None or now >= st.last_start + interval - EPS:
            self._record_start(st, now)
            return _ALLOW
        if self.spec.count_rejected:
            self._record_start(st, now)
        return Decision(False, st.last_start + interval - now, "spacing")

    def _budget_wait(self, st: _State, now: float) -> tuple[str, float] | None:
        spec = self.spec
        waits: list[tuple[float, str]] = []
        if len(st.starts) >= spec.capacity:
            # the start whose expiry brings the count below the budget
            oldest = st.starts[len(st.starts) - spec.capacity]
            waits.append((oldest + spec.window_s - now, "window"))
        if spec.burst and len(st.burst_starts) >= spec.burst:
            oldest = st.burst_starts[len(st.burst_starts) - spec.burst]
            waits.append((oldest + spec.burst_window_s - now, "burst"))
        if not waits:
            return None
        wait, reason = max(waits)
        return reason, wait

    def _check_budget(self, st: _State, now: float) -> Decision:
        spec = self.spec
        tripped = self._budget_wait(st, now)
        if tripped is None:
            self._record_start(st, now)
            return _ALLOW
        if spec.count_rejected:
            self._record_start(st, now)
            tripped = self._budget_wait(st, now) or tripped
        reason, wait = tripped
        if spec.model == "block":
            st.rejects.append(now)
            if len(st.rejects) >= spec.block_after:
                st.blocked_until = now + spec.block_seconds
                st.rejects.clear()
                st.blocks += 1
                return Decision(False, spec.block_seconds, "blocked", block_started=True)
        return Decision(False, wait, reason)
