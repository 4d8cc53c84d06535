"""What a user watching the run sees: one bar per stage, an overall requests line, and one
finished line per stage.

Why a module of its own: the runner used to open bare tqdm bars whose total grew as chunks
were planned, so a bar closed at "81 %" when fewer chunks came than planned and the final
screen looked stuck. Here a closed bar is set to what was done (100 %, with its failures), so
it stays on screen as that stage's finished line. ``requests`` on top counts HTTP attempts
against the dry-run plan's upper bound, and tqdm's rate gives the ETA. Without a terminal
(cron, Airflow, ``--no-progress``) there are no bars; each stage logs its finished line once.
Log records never break a bar: the CLI routes them through ``tqdm.write``
(``pipeline.logs.progress_safe_logging``).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from tqdm import tqdm

log = logging.getLogger(__name__)

_DESC_WIDTH = 15


class RunProgress:
    """Bars for ``works`` (``StageWork``) plus the overall ``requests`` line."""

    def __init__(
        self,
        works: Sequence[Any],
        *,
        enabled: bool,
        planned_requests: int | None = None,
        attempts: Callable[[], int] | None = None,
    ) -> None:
        self._enabled = enabled
        self._attempts = attempts
        self._t0 = time.monotonic()
        self._works = list(works)
        self._failed = {id(w): 0 for w in works}
        self._done = {id(w): 0 for w in works}
        self._overall = tqdm(
            total=planned_requests or None,
            desc="requests".ljust(_DESC_WIDTH),
            unit="req",
            disable=not enabled or attempts is None,
            leave=True,
        )
        self._bars = {
            id(w): tqdm(
                total=w.planned,
                desc=str(w.desc).ljust(_DESC_WIDTH),
                unit="chunk",
                disable=not enabled,
                leave=True,
            )
            for w in works
        }

    def chunk_done(self, work: Any, *, failed: bool, stopped: bool = False) -> None:
        """A chunk of ``work`` was recorded (or failed after its retries; ``stopped``: it
        ended early on the stop signal and counts as neither)."""
        if stopped:
            return
        self._done[id(work)] += 1
        self._failed[id(work)] += int(failed)
        bar = self._bars[id(work)]
        bar.total = max(work.planned, bar.n + 1)
        if self._failed[id(work)]:
            bar.set_postfix_str(f"{self._failed[id(work)]} failed", refresh=False)
        bar.update(1)
        if self._attempts is not None and not self._overall.disable:
            done = self._attempts()
            if self._overall.total is not None and done > self._overall.total:
                self._overall.total = done  # retries: more attempts than planned calls
            self._overall.update(done - self._overall.n)

    def close(self) -> list[str]:
        """Turn every bar into its finished line; return the stages' lines (logged instead
        when there is no terminal).

        Why bars are cleared and their final text written again: tqdm bars at nested
        positions closed with ``leave=True`` overwrite each other's lines (and the next log
        record lands in the middle of one). Clearing them all, then writing each final
        state with ``tqdm.write``, leaves exactly one clean line per bar.
        """
        lines = []
        wall = time.monotonic() - self._t0
        finals: list[str] = []
        if not self._overall.disable and self._attempts is not None:
            done = self._attempts()
            self._overall.total = done
            self._overall.update(done - self._overall.n)
            finals.append(str(self._overall))
        for work in self._works:
            bar = self._bars[id(work)]
            done, failed = self._done[id(work)], self._failed[id(work)]
            lines.append(finished_line(str(work.desc), done, failed, wall))
            bar.total = bar.n  # what was done is 100 %: no bar left "stuck at 81 %"
            bar.set_postfix_str("done" + (f", {failed} failed" if failed else ""), refresh=False)
            if not bar.disable:
                finals.append(str(bar))
        for bar in [*reversed(self._bars.values()), self._overall]:
            bar.leave = False
            bar.close()
        for text in finals:
            tqdm.write(text, file=sys.stderr)
        if not self._enabled:
            for line in lines:
                log.info("%s", line)
        return lines


def finished_line(desc: str, chunks: int, failed: int, wall_s: float) -> str:
    """``resolve IDs: done, 8 chunks (0 failed) in 2.1 s``."""
    return f"{desc}: done, {chunks} chunks ({failed} failed) in {wall_s:.1f} s"
