"""What every fetch stage is handed: the client, the state, its config and the stop signal.

Why a typed object: the stages used to take a ``**common`` dict (client, caches, settings,
progress), so neither a reader nor the type checker could tell what a stage depends on. A
stage now reads only ``ctx``; the orchestrator builds one per run.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from pipeline.api.client import ReccoBeatsClient
from pipeline.config import StageConfig
from pipeline.errors import Cancelled
from pipeline.stages.budget import RunBudget
from pipeline.state.caches import Caches


@dataclass(frozen=True)
class StageContext:
    client: ReccoBeatsClient
    caches: Caches
    config: StageConfig
    #: The run's one stop signal (set by SIGTERM/SIGINT or a caller): no new chunk starts once
    #: it is set, and every wait of the stages ends at once.
    stop: threading.Event = field(default_factory=threading.Event)
    progress: bool = False
    #: The run's request/time budget (``None``: unlimited).
    run_budget: RunBudget | None = None
    #: Upper bound of the requests this run makes (the dry-run plan): the ``requests`` bar's
    #: total, so its ETA means something (``None``: unknown, no total shown).
    planned_requests: int | None = None

    def pause(self, seconds: float, why: str) -> None:
        """Wait ``seconds`` unless the run is stopped first (then ``Cancelled``)."""
        if seconds > 0 and self.stop.wait(seconds):
            raise Cancelled(f"stop requested during {why}")
        if self.stop.is_set():
            raise Cancelled(f"stop requested during {why}")
