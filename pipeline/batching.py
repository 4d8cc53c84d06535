"""Chunked work on a bounded thread pool, shared by the stages.

The pool only bounds how many chunks are *in progress*; the limiter decides when a request
may start. Results are handed back to the caller's thread one by one (``on_done``), so a
stage records each chunk's answer at once and checkpoints every few chunks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

from tqdm import tqdm

from pipeline.errors import Cancelled

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


class Checkpointer:
    """Calls ``flush`` every ``every`` recorded chunks, so a killed run loses little."""

    def __init__(self, every: int, flush: Callable[[], object]) -> None:
        self._every = every
        self._flush = flush
        self._count = 0

    def tick(self) -> None:
        self._count += 1
        if self._count % self._every == 0:
            self._flush()


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
    unit: str = "chunk",
) -> None:
    """Run ``work`` on every chunk with at most ``max_workers`` at once.

    ``on_done(chunk, result, error)`` runs in the calling thread for each finished chunk.
    ``Cancelled`` stops submitting new chunks and is re-raised after the running ones end,
    so whatever finished is still recorded.
    """
    pending: dict[Future[R], T] = {}
    cancelled: Cancelled | None = None
    it = iter(chunks)
    bar = tqdm(total=total, desc=desc, unit=unit, disable=not progress, leave=False)
    try:
        with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=desc) as pool:

            def submit_next() -> bool:
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
