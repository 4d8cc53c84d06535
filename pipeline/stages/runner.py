"""The stage runner: every fetch stage's chunks on one bounded pool, next stage overlapping.

Why one pool for all stages: a stage used to wait for the previous one's last response before
its first request, so each boundary idled the budget for about one response latency (30-60 s
at production latencies). Stages are now ``StageWork`` objects fed by the ones upstream: the
features stage gets each resolve chunk's found IDs as it lands and asks them once it holds a
full batch (or once resolve is done), and a playlist's recommendations are asked as soon as
all of its tracks are answered. The scheduler starts the ready chunk of the first stage in
the order it is given (``work_order`` rows_first: features, then new IDs, then
recommendations, since a seed call completes no track row), which is also what makes rows
complete first when a run is stopped early.

The pool bounds how many chunks are *in progress*; the limiter decides when a request may
start. Results are handed back to the calling thread one by one, so each answer is recorded
(and journaled) at once without a lock, and downstream stages are fed from that thread too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pipeline.config import READY_BEHIND_LIMIT
from pipeline.errors import APIError, Cancelled, SharedBudgetError, TransportError
from pipeline.stages.progress import RunProgress
from pipeline.stop import aborts, drain

if TYPE_CHECKING:
    from pipeline.stages.context import StageContext

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


def chunked(items: Sequence[T], size: int) -> list[list[T]]:
    """Split ``items`` into lists of at most ``size`` (order kept)."""
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


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


class StageWork(Generic[T, R]):
    """One stage's chunks as the scheduler sees them.

    ``take`` (caller thread) hands out the next ready chunk or ``None``; ``run`` (a worker
    thread) asks the API; ``record`` / ``fail`` (caller thread) store the answer and feed the
    stages downstream. ``outstanding`` counts chunks taken and not yet recorded, so a stage
    downstream can tell when nothing more will come (``done``).
    """

    desc = "stage"
    #: At most this many of the stage's chunks in progress at once (None: the pool's size).
    max_in_progress: int | None = None

    def __init__(self) -> None:
        self.outstanding = 0
        self.planned = 0  # chunks known so far (the progress bar's total)

    def take(self) -> T | None:
        raise NotImplementedError

    def run(self, chunk: T) -> R:
        raise NotImplementedError

    def record(self, chunk: T, result: R) -> None:
        raise NotImplementedError

    def fail(self, chunk: T, error: APIError) -> None:
        raise NotImplementedError

    def has_queued(self) -> bool:
        raise NotImplementedError

    @property
    def done(self) -> bool:
        return self.outstanding == 0 and not self.has_queued()


def run_stages(works: Sequence[StageWork[Any, Any]], ctx: StageContext) -> None:
    """Run every chunk of ``works`` (most downstream first) until all are done.

    An ``APIError`` (a request that failed after its retries) goes to the stage's ``fail``
    and the run goes on; anything else (from a worker, or raised by ``record``/``fail``)
    propagates once the running chunks have ended and their answers are recorded. A
    set stop event (or ``Cancelled`` from a worker) starts no new chunk, lets the running
    ones end (their waits end at once on the same event) and raises ``Cancelled``. Answers
    are journaled as they land (``SaveCadence``); ``ctx.caches.checkpoint_all`` (a full
    rewrite) runs at the end, also when the run is interrupted.
    """
    if all(w.done for w in works):
        return  # nothing to ask: no pool, no bars, no checkpoint
    stop, budget = ctx.stop, ctx.run_budget
    pool_size = max(1, ctx.config.pool_size)
    cadence = SaveCadence(ctx.config.checkpoint_every_chunks, ctx.caches.journal_all)
    bars = RunProgress(
        works,
        enabled=ctx.progress,
        planned_requests=ctx.planned_requests,
        attempts=lambda: ctx.client.metrics.attempts,
    )
    pending: dict[Future[Any], tuple[StageWork[Any, Any], Any]] = {}
    in_progress = {id(w): 0 for w in works}
    cancelled: Cancelled | None = None
    unreachable = False
    failure: BaseException | None = None
    try:
        with ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="stage") as pool:

            def fill() -> None:
                while len(pending) < _room(ctx, pool_size) and not stop.is_set():
                    if budget is not None and not budget.allows_start():
                        return  # budget spent: what runs finishes, nothing new starts
                    for work in works:
                        cap = work.max_in_progress or pool_size
                        if in_progress[id(work)] >= cap:
                            continue
                        chunk = work.take()
                        if chunk is not None:
                            if budget is not None:
                                budget.started()
                            work.outstanding += 1
                            in_progress[id(work)] += 1
                            future = pool.submit(_run_and_save, work, chunk, cadence)
                            pending[future] = (work, chunk)
                            break
                    else:
                        return  # nothing ready anywhere

            fill()
            while pending:
                left = budget.seconds_left() if budget and not stop.is_set() else None
                finished, _ = wait(pending, timeout=left, return_when=FIRST_COMPLETED)
                if not finished:  # the time budget ran out: every wait ends now,
                    assert budget is not None  # the requests on the wire finish
                    budget.expire()
                    drain(stop)
                    continue
                for fut in finished:
                    work, chunk = pending.pop(fut)
                    in_progress[id(work)] -= 1
                    exc = fut.exception()
                    try:
                        if isinstance(exc, Cancelled):
                            cancelled = exc
                        elif exc is None:
                            work.record(chunk, fut.result())
                        elif isinstance(exc, APIError):
                            work.fail(chunk, exc)
                            if isinstance(exc, TransportError) and not ctx.client.metrics.answered:
                                # Nothing has answered this run: a wrong URL or the API down.
                                # Stop now (the caller raises NothingFetchedError, exit 7).
                                unreachable = True
                                stop.set()
                        else:
                            failure = _first_failure(failure, exc)
                    except Exception as err:
                        # A record/fail that raises must not cost the other answers already
                        # fetched (this batch's and those in flight): they are still recorded,
                        # no new chunk starts, and ``err`` is raised once they are.
                        failure = _first_failure(failure, err)
                    finally:
                        work.outstanding -= 1
                    bars.chunk_done(
                        work, failed=isinstance(exc, APIError), stopped=isinstance(exc, Cancelled)
                    )
                if cancelled is None and failure is None:
                    fill()
    finally:
        if budget is not None:
            budget.ended()
        bars.close()
        ctx.caches.checkpoint_all()
    if failure is not None:
        raise failure
    if unreachable:
        return  # nothing answered: the caller says so (NothingFetchedError), publishes nothing
    # A budget stop is a clean end (the caller publishes what it has), unless a real stop
    # (a signal, a lost shared budget) came too: that one is raised, as without a budget.
    by_budget = not aborts(stop) and not isinstance(cancelled, SharedBudgetError)
    if budget is not None and budget.reached is not None and by_budget:
        if all(w.done for w in works) and cancelled is None:
            budget.clear()  # the budget ran out exactly with the work
        return
    if cancelled is not None:
        raise cancelled
    if stop.is_set():
        raise Cancelled("stop requested")


def _first_failure(first: BaseException | None, new: BaseException) -> BaseException:
    """The failure the run raises: the first; a later one is logged, never dropped unseen."""
    if first is None:
        return new
    log.error("another failure after %r: %r", first, new, exc_info=new)
    return first


def _room(ctx: StageContext, pool_size: int) -> int:
    """Chunks to keep started: the in-flight limit in force plus 2 ready behind it.

    Why not the pool's size: the pool is sized to the cap (16) + 2 for when latency needs
    it, but with the limit at ~5 the other threads only queued on the limiter, and every
    answer woke them all. That churn delayed the threads saving answers by ~250 ms (measured
    from the HTTP answer to the journal), and a kill lost 4-11 answered chunks with 2-3 in
    flight at the server; started this way, 1-4. Why 2 ready: a thread parses, records and
    journals its answer before it takes the next chunk, and without one waiting on the
    limiter that slot stays empty meanwhile. The pool was the cap alone, so at the cap none
    was ready: held at 2 on 2 workers (L 0.5 s) the job had 1 in flight a fifth of the time.
    """
    return min(pool_size, ctx.client.limiter.concurrency_limit + READY_BEHIND_LIMIT)


def _run_and_save(work: StageWork[T, R], chunk: T, cadence: SaveCadence) -> R:
    """A worker asks for its chunk, then journals the answer it put (in the same thread).

    Why in the worker: the caller thread records, plans and draws bars for every chunk; when
    it lags, answers already in memory waited there for their save, and a kill lost them as
    well as the requests in flight (14 extra requests of 243 at 16 in flight, measured).
    Saved here, an answer is on disk before its future is even done.
    """
    try:
        return work.run(chunk)
    finally:
        cadence.tick()


class SaveCadence:
    """Calls ``flush`` (a journal append) every ``every`` chunks: a kill loses little.

    The journal append is O(new rows), ~2 ms per changed table, so the default is every
    chunk: a kill then costs only the requests in flight. (An earlier rule spaced whole-table
    rewrites by their duration; after a slow first write a kill could lose ~25 requests at
    130 req/s: docs/reliability.md.) ``tick`` is called from the worker threads; the
    tables' own write locks keep concurrent appends apart.
    """

    def __init__(self, every: int, flush: Callable[[], object]) -> None:
        self._every = max(1, every)
        self._flush = flush
        self._since = 0
        self._lock = threading.Lock()

    def tick(self) -> None:
        with self._lock:
            self._since += 1
            due = self._since >= self._every
            if due:
                self._since = 0
        if due:
            self._flush()
