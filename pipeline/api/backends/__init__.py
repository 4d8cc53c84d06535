"""Adapters of the ``LimiterBackend`` port (``pipeline/api/limiter_backend.py``) that keep a
budget outside the process: ``redis_budget`` (issue 13). Imported only when configured, so
the ``redis`` client stays an optional dependency."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from pipeline.config import shared_budget_config

if TYPE_CHECKING:
    from pipeline.api.backends.redis_budget import RedisBackend
    from pipeline.settings import Settings


def open_shared_budget(settings: Settings, stop: threading.Event) -> RedisBackend | None:
    """The run's shared budget, or ``None`` when ``shared_budget`` is off.

    Raises ``SharedBudgetError`` when Redis cannot be reached (exit 6, before any request).
    Losing Redis later sets ``stop``: every wait ends and the run checkpoints and exits 6.
    The limiter must run on the same ``clock`` (``time.monotonic``, its default).
    """
    config = shared_budget_config(settings)
    if config is None:
        return None
    from pipeline.api.backends.redis_budget import RedisBackend

    return RedisBackend(config, clock=time.monotonic, on_lost=lambda _error: stop.set())
