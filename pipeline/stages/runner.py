"""Chunked work on a bounded thread pool, shared by the stages.

The pool only bounds how many chunks are *in progress*; the limiter decides when a request
may start. Results are handed back to the caller's thread one by one (``on_done``), so a
stage records each chunk's answer at once and checkpoints every few chunks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from tqdm import tqdm

from pipeline.errors import APIError, Cancelled

if TYPE_CHECKING:
    from pipeline.stages.context import StageContext

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


class SaveCadence:
    """Calls ``flush`` (a journal append) every ``every`` recorded chunks: a kill loses little.

    The stages flush with a journal append (``TtlTable.journal``: O(new rows), ~2 ms per
    changed table), so the default is every chunk: a kill then costs only the requests in
    flight. (An earlier rule spaced whole-table rewrites by their duration; after a slow
    first write a kill could lose ~25 requests at 130 req/s: docs/reliability.md.)
    """

    def __init__(self, every: int, flush: Callable[[], object]) -> None:
        self._every = max(1, every)
        self._flush = flush
        self._since = 0

    def tick(self) -> None:
        self._since += 1
        if self._since >= self._every:
            self._flush()
            self._since = 0


def chunked(items: Sequence[T], size: int) -> list[list[T]]:
    """Split ``items`` into lists of at most ``size`` (order kept)."""
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def run_chunks(
    chunks: Iterable[T],
    work: Callable[[T], R],
    on_done: Callable[[T, R | None, BaseException | None], None],
    *,
    max_workers: int,
    desc: str,
    total: int,
    progress: bool,
    stop: threading.Event,
    unit: str = "chunk",
) -> None:
    """Run ``work`` on every chunk with at most ``max_workers`` at once.

    ``on_done(chunk, result, error)`` runs in the calling thread for each finished chunk.
    A set ``stop`` event (or ``Cancelled`` from a worker) stops submitting new chunks; the
    running ones end (their waits end at once on the same event) and ``Cancelled`` is raised,
    so whatever finished is still recorded.
    """
    pending: dict[Future[R], T] = {}
    cancelled: Cancelled | None = None
    it = iter(chunks)
    bar = tqdm(total=total, desc=desc, unit=unit, disable=not progress, leave=False)
    try:
        with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=desc) as pool:

            def submit_next() -> bool:
                if stop.is_set():
                    return False
                try:
                    chunk = next(it)
                except StopIteration:
                    return False
                pending[pool.submit(work, chunk)] = chunk
                return True

            for _ in range(max_workers):
                if not submit_next():
                    break
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    chunk = pending.pop(fut)
                    exc = fut.exception()
                    if isinstance(exc, Cancelled):
                        cancelled = exc
                    else:
                        on_done(chunk, None if exc else fut.result(), exc)
                    bar.update(1)
                    if cancelled is None:
                        submit_next()
    finally:
        bar.close()
    if cancelled is not None:
        raise cancelled
    if stop.is_set():
        raise Cancelled(f"stop requested during {desc}")


@dataclass
class StageTally:
    """Chunk and failure counts every chunked stage reports (its outcome extends this)."""

    chunks: int = 0
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def failure(self, ids: Iterable[str], error: APIError, stage: str) -> None:
        """A chunk failed after its retries: its IDs stay unrecorded, to be asked again."""
        ids = list(ids)
        self.chunks += 1
        self.failed.extend(ids)
        self.errors.append(str(error))
        log.warning("%s: chunk of %d failed: %s", stage, len(ids), error)


def run_stage(
    chunks: Sequence[T],
    work: Callable[[T], R],
    *,
    ctx: StageContext,
    on_result: Callable[[T, R], None],
    on_failure: Callable[[T, APIError], None],
    max_workers: int,
    desc: str,
) -> None:
    """``run_chunks`` as every stage uses it.

    An ``APIError`` (a request that failed after its retries) goes to ``on_failure`` and the
    stage goes on; anything else propagates. Answers are saved with a cheap journal append
    (``ctx.caches.journal_all``) as they land, and ``ctx.caches.checkpoint_all`` (a full
    rewrite) runs at the end, also when the stage is interrupted. Both callbacks run in the calling
    thread, so they may update the stage's tallies without a lock.
    """
    cadence = SaveCadence(ctx.config.checkpoint_every_chunks, ctx.caches.journal_all)

    def on_done(chunk: T, result: R | None, error: BaseException | None) -> None:
        if error is None:
            on_result(chunk, result)  # type: ignore[arg-type]
        elif isinstance(error, APIError):
            on_failure(chunk, error)
        else:
            raise error
        cadence.tick()

    try:
        run_chunks(
            chunks,
            work,
            on_done,
            max_workers=max_workers,
            desc=desc,
            total=len(chunks),
            progress=ctx.progress,
            stop=ctx.stop,
        )
    finally:
        ctx.caches.checkpoint_all()
