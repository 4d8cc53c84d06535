"""A run's request and time budget: spend at most that, then stop cleanly and publish.

Why the stages own it (not the limiter): a budget decides which *chunk* starts, and a chunk
that never starts leaves its IDs cleanly ``pending`` for the next run, while a request cut off
in the middle of a chunk wastes the calls the chunk already made. The runner asks
``allows_start`` before each chunk; at the deadline it drains the run's stop signal
(``StopSignal.drain``): every wait (window, cool-down, stagger) ends at once, and the
requests already on the wire finish and are kept (until session 27 the deadline set the stop
itself, which also abandoned them: charged to the API's limit, their IDs left pending).

Requests are HTTP attempts (retries included), counted by the run's metrics, so the figure
matches what the server sees. A chunk normally costs one request; a chunk that needs more
(retries, bisection) can take the run a few requests past ``max_requests`` (at most the
chunks in progress when the budget ran out times their retries), which the report shows.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RunBudget:
    """``max_requests`` attempts and/or ``time_budget_s`` seconds from ``start()``.

    ``reached`` names the budget that stopped the run (``"max_requests"`` or
    ``"time_budget"``), or is ``None``.
    """

    def __init__(
        self,
        *,
        max_requests: int | None,
        time_budget_s: float | None,
        spent: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_requests = max_requests
        self.time_budget_s = time_budget_s
        self._spent = spent
        self.chunks_started = 0
        self._clock = clock
        self.deadline: float | None = None
        self.reached: str | None = None
        #: When the last chunk in progress ended (clock), set by the runner.
        self.ended_at: float | None = None

    @property
    def limited(self) -> bool:
        return self.max_requests is not None or self.time_budget_s is not None

    def start(self) -> None:
        if self.time_budget_s is not None:
            self.deadline = self._clock() + self.time_budget_s

    def seconds_left(self) -> float | None:
        """Until the deadline (>= 0), or ``None`` without a time budget."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self._clock())

    def allows_start(self) -> bool:
        """May one more chunk start? (The runner then calls ``started``.)"""
        if self.reached is not None:
            return False
        # Requests committed: each chunk started makes at least one (it may not have started
        # its request yet); the attempts count is larger when chunks retried.
        committed = max(self._spent(), self.chunks_started)
        if self.max_requests is not None and committed >= self.max_requests:
            self.reached = "max_requests"
            return False
        if self.deadline is not None and self._clock() >= self.deadline:
            self.reached = "time_budget"
            return False
        return True

    def ended(self) -> None:
        self.ended_at = self._clock()

    @property
    def past_deadline_s(self) -> float | None:
        """How long after the deadline the last call in progress ended (None: not reached)."""
        if self.deadline is None or self.ended_at is None or self.reached != "time_budget":
            return None
        return max(0.0, self.ended_at - self.deadline)

    def started(self) -> None:
        self.chunks_started += 1

    def clear(self) -> None:
        """All the work was done after all: the budget did not stop anything."""
        self.reached = None

    def expire(self) -> None:
        """The deadline passed while chunks were waiting (the runner then drains the stop)."""
        if self.reached is None:
            self.reached = "time_budget"

    @property
    def spent(self) -> int:
        return self._spent()
