"""The run's API objects: one limiter, one client, one metrics, and the shared budget.

Why apart from the orchestrator: building them reads the learned limits from the state dir
and writes them back when the run ends; that life cycle is one concept, the context manager
below.
"""

from __future__ import annotations

import threading
import time

from pipeline.api.backends import open_shared_budget
from pipeline.api.client import ReccoBeatsClient
from pipeline.api.limiter import RateLimiter
from pipeline.api.metrics import RequestMetrics
from pipeline.clock import Clock
from pipeline.config import limiter_config
from pipeline.io.storage import Storage
from pipeline.settings import Settings
from pipeline.state.learned_rate import (
    load_learned_concurrency,
    load_learned_latency,
    load_learned_limit,
    save_learned_rate,
)


class ApiResources:
    """The run's one limiter, client and metrics; on exit, the learned rate is saved.

    ``stop`` is the run's one stop signal: the limiter, the transport's backoffs and the
    stages all wait on it, so setting it ends every wait at once.
    """

    def __init__(
        self,
        settings: Settings,
        state_dir: Storage,
        stop: threading.Event,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._state_dir = state_dir
        self._clock = clock
        self._fenced = False
        self.stop = stop
        # Shared budget (issue 13): the limiter's state in Redis; unreachable -> exit 6 here.
        self.shared_budget = open_shared_budget(settings, stop)
        try:
            self._build(settings, state_dir, stop)
        except BaseException:
            # ``__exit__`` will not run: close the Redis connection and its heartbeat thread
            # here, or a long-lived worker (Airflow) keeps one per failed start.
            if self.shared_budget is not None:
                self.shared_budget.close()
            raise

    def _build(self, settings: Settings, state_dir: Storage, stop: threading.Event) -> None:
        # Only a rate 429s held below its run's ceiling: one saved at the ceiling is what that
        # run was told, and a warm start from it held tonight's higher told rate back.
        learned = load_learned_limit(state_dir) if settings.adaptive else None
        conc = load_learned_concurrency(state_dir) if settings.adaptive_concurrency else None
        self._last_latency_s = load_learned_latency(state_dir)  # kept if this run sees none
        if self.shared_budget is not None and settings.adaptive:
            learned = self.shared_budget.learned().rate or learned  # what every process learned
        self.limiter = RateLimiter(
            limiter_config(settings),
            stop=stop,
            initial_rate=learned,
            initial_concurrency=conc,
            backend=self.shared_budget,
        )
        self.metrics = RequestMetrics()
        self.client = ReccoBeatsClient(
            settings, self.limiter, self.metrics, wall_clock=self._clock
        )
        self.wall_s = 0.0

    def fence(self) -> None:
        """Save no learned rate on exit: the state lock was lost (``state/lease.py``), and the
        state dir now belongs to the run that took it over (like ``Caches.fence``)."""
        self._fenced = True

    def __enter__(self) -> ApiResources:
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.monotonic() - self._t0
        self.client.close()
        if self.shared_budget is not None:
            self.shared_budget.close()
        if self._settings.adaptive and not self._fenced:
            conc = self.limiter.learned_concurrency if self._settings.adaptive_concurrency else None
            save_learned_rate(
                self._state_dir,
                self.limiter.effective_rate,
                self._clock(),
                concurrency=conc,
                latency_s=self.limiter.latency_median_s or self._last_latency_s,
                ceiling_per_window=self.limiter.config.rate_per_window,
            )
