"""The stage runner: one bounded pool for all stages, downstream first, one stop signal."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.api.concurrency import INITIAL_LIMIT
from pipeline.config import ttl_config
from pipeline.errors import APIError, Cancelled, ServerError
from pipeline.stages.runner import StageWork, chunked, run_stages
from pipeline.state.caches import Caches
from tests.conftest import job_settings
from tests.stage_support import API, sid, stage_context


class ListWork(StageWork[int, int]):
    """Chunks from a list; ``job`` runs in the worker; answers recorded with their thread."""

    def __init__(self, chunks: list[int], job: Callable[[int], int], desc: str = "w") -> None:
        super().__init__()
        self.queue = deque(chunks)
        self.planned = len(chunks)
        self.job = job
        self.desc = desc
        self.recorded: list[tuple[int, int, int]] = []
        self.failed: list[int] = []
        self.listeners: list[Callable[[int], None]] = []

    def has_queued(self) -> bool:
        return bool(self.queue)

    def take(self) -> int | None:
        return self.queue.popleft() if self.queue else None

    def run(self, chunk: int) -> int:
        return self.job(chunk)

    def record(self, chunk: int, result: int) -> None:
        self.recorded.append((chunk, result, threading.get_ident()))
        for listener in self.listeners:
            listener(chunk)

    def fail(self, chunk: int, error: APIError) -> None:
        self.failed.append(chunk)


def test_chunked_keeps_order_and_size() -> None:
    assert chunked([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
    with pytest.raises(ValueError):
        chunked([1], 0)


def test_at_most_pool_size_chunks_run_at_once_and_answers_land_in_the_calling_thread(
    tmp_path: Path,
) -> None:
    lock = threading.Lock()
    running = peak = 0
    gate = threading.Barrier(3, timeout=5)

    def job(n: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        if n < 3:
            gate.wait()  # the first three meet: proves three really ran at once
        with lock:
            running -= 1
        return n * 10

    work = ListWork(list(range(9)), job)
    with stage_context(job_settings(tmp_path, API, max_concurrency=3), tmp_path / "s") as ctx:
        run_stages([work], ctx)
    assert peak == 3
    assert sorted((n, r) for n, r, _ in work.recorded) == [(n, n * 10) for n in range(9)]
    assert {t for _, _, t in work.recorded} == {threading.get_ident()}


def test_downstream_starts_while_upstream_is_still_in_flight(tmp_path: Path) -> None:
    """The stage boundary costs no idle time: chunk 1 upstream waits for downstream's start."""
    downstream_started = threading.Event()

    def upstream_job(n: int) -> int:
        if n == 1:
            assert downstream_started.wait(5), "downstream did not start during upstream"
        return n

    def downstream_job(n: int) -> int:
        downstream_started.set()
        return n

    up = ListWork([0, 1], upstream_job, "up")
    down = ListWork([], downstream_job, "down")
    up.listeners.append(lambda chunk: down.queue.append(100 + chunk))
    with stage_context(job_settings(tmp_path, API, max_concurrency=2), tmp_path / "s") as ctx:
        run_stages([down, up], ctx)
    assert [c for c, _, _ in down.recorded] == [100, 101]


def test_ready_downstream_chunks_go_first(tmp_path: Path) -> None:
    """Whenever the runner takes an upstream chunk, downstream has none ready: a free place
    goes to finishing rows, not to starting new ones (the room here: 1 in flight + 2)."""
    taken: list[str] = []
    up = ListWork(list(range(8)), lambda n: n, "up")
    down = ListWork([], lambda n: n, "down")
    up.listeners.append(lambda chunk: down.queue.append(chunk))
    take_up, take_down = up.take, down.take

    def up_take() -> int | None:
        chunk = take_up()
        if chunk is not None:
            taken.append(f"up{chunk}" + (" with down ready" if down.queue else ""))
        return chunk

    def down_take() -> int | None:
        chunk = take_down()
        if chunk is not None:
            taken.append(f"down{chunk}")
        return chunk

    up.take, down.take = up_take, down_take  # type: ignore[method-assign]
    with stage_context(job_settings(tmp_path, API, max_concurrency=1), tmp_path / "s") as ctx:
        run_stages([down, up], ctx)
    assert sorted(taken) == sorted([f"up{n}" for n in range(8)] + [f"down{n}" for n in range(8)])
    assert taken[:3] == ["up0", "up1", "up2"]  # nothing downstream yet: the room fills up
    assert [t for t in taken if t.endswith("with down ready")] == []


def test_a_set_stop_event_starts_no_new_chunk_and_raises_cancelled(tmp_path: Path) -> None:
    with stage_context(job_settings(tmp_path, API, max_concurrency=1), tmp_path / "s") as ctx:

        def job(n: int) -> int:
            ctx.stop.set()  # e.g. SIGTERM arrives while the first chunk runs
            return n

        work = ListWork(list(range(10)), job)
        with pytest.raises(Cancelled):
            run_stages([work], ctx)
    assert [c for c, _, _ in work.recorded] == [0]  # what finished is still recorded


def test_api_errors_are_tallied_others_propagate_and_state_is_always_checkpointed(
    tmp_path: Path,
) -> None:
    # No journal append per chunk: only the runner's final checkpoint can save the row below.
    settings = job_settings(tmp_path, API, checkpoint_every_chunks=1000)

    def job(n: int) -> int:
        if n == 1:
            raise ServerError("503 after retries", endpoint="tracks")
        return n

    with stage_context(settings, tmp_path / "state") as ctx:
        work = ListWork([0, 1, 2], job)
        run_stages([work], ctx)
        assert work.failed == [1]

        def broken(n: int) -> int:
            raise KeyError("a bug, not an API failure")

        ctx.caches.tracks.put(_one_track_row())  # put after the first run's checkpoint
        with pytest.raises(KeyError):
            run_stages([ListWork([0], broken)], ctx)
    # checkpoint_all ran at the end even though the stage raised: a fresh load sees the row
    with stage_context(settings, tmp_path / "state") as ctx:
        assert len(ctx.caches.tracks) == 1


def test_a_record_that_raises_costs_no_other_answer_and_is_raised(tmp_path: Path) -> None:
    """Nothing fetched is lost to one failing ``record``: the chunks answered with it or
    after it are still recorded (their stages downstream fed), then its error propagates."""
    first_recorded = threading.Event()

    def job(n: int) -> int:
        if n:  # answered only once chunk 0's record has raised
            assert first_recorded.wait(timeout=10)
        return n

    class Failing(ListWork):
        def record(self, chunk: int, result: int) -> None:
            if chunk == 0:
                first_recorded.set()
                raise KeyError("a bug in record")
            super().record(chunk, result)

    work = Failing([0, 1, 2], job)
    settings = job_settings(tmp_path, API, max_concurrency=3)
    with (
        stage_context(settings, tmp_path / "s") as ctx,
        pytest.raises(KeyError, match="a bug in record"),
    ):
        run_stages([work], ctx)
    assert sorted(c for c, _, _ in work.recorded) == [1, 2]
    assert work.outstanding == 0


def _one_track_row():  # type: ignore[no-untyped-def]
    from pipeline.api.records import Artist, Track
    from pipeline.state.rows_from_records import tracks_frame

    track = Track(
        reccobeats_id="rb-1",
        spotify_id="A" * 22,
        title="t",
        artists=(Artist("a", "n", None),),
        duration_ms=1,
        isrc=None,
        popularity=1,
        available_countries=None,
        href="https://open.spotify.com/track/" + "A" * 22,
    )
    return tracks_frame([track])


def test_an_answer_is_journaled_on_disk_before_the_caller_records_it(tmp_path: Path) -> None:
    """A kill -9 loses only what the process never had: once a worker has an answer, it is
    saved before the caller thread (which may lag behind) even sees the chunk done."""
    state = tmp_path / "s"
    on_disk_at_record: dict[int, set[str]] = {}

    with stage_context(job_settings(tmp_path, API, max_concurrency=2), state) as ctx:

        def job(n: int) -> int:
            ctx.caches.registry.record_missing([sid(n)])
            return n

        class Checking(ListWork):
            def record(self, chunk: int, result: int) -> None:
                fresh = Caches.load(state, ttl_config(job_settings(tmp_path, API)))
                known = fresh.registry.known([sid(chunk)], count=False)
                on_disk_at_record[chunk] = set(known["spotify_id"])
                super().record(chunk, result)

        run_stages([Checking(list(range(6)), job)], ctx)

    assert on_disk_at_record == {n: {sid(n)} for n in range(6)}


def _queued_after_starts(tmp_path: Path, starts: int, **settings: object) -> tuple[int, int]:
    """Hold every job; once ``starts`` have started (the runner takes a chunk before it
    submits it, and takes no more than its room), how many of 20 are still queued, and the
    stage pool's size. All 20 must land once released."""
    started = threading.Semaphore(0)
    gate = threading.Event()

    def job(n: int) -> int:
        started.release()
        assert gate.wait(timeout=10)
        return n

    work = ListWork(list(range(20)), job)
    with stage_context(job_settings(tmp_path, API, **settings), tmp_path / "s") as ctx:
        runner = threading.Thread(target=run_stages, args=([work], ctx))
        runner.start()
        for _ in range(starts):
            assert started.acquire(timeout=10)
        queued = len(work.queue)
        gate.set()
        runner.join(timeout=10)
        pool = ctx.config.pool_size
    assert sorted(c for c, _, _ in work.recorded) == list(range(20))
    return queued, pool


def test_chunks_started_follow_the_in_flight_limit_not_the_pool(tmp_path: Path) -> None:
    """The pool is sized to the cap (16) + 2 but only the limit in force (4 at the start)
    plus 2 ready ones are started: 16 threads queued on the limiter woke each other on every
    answer and starved the ones saving answers (a kill then lost 4-11 answered chunks)."""
    queued, pool = _queued_after_starts(tmp_path, INITIAL_LIMIT + 2, max_concurrency=16)
    assert (queued, pool) == (20 - (INITIAL_LIMIT + 2), 18)


def test_at_the_cap_two_chunks_are_still_ready_behind_the_limit(tmp_path: Path) -> None:
    """At the cap (here a fixed 4) 2 chunks wait on the limiter too: with the pool at the
    cap none did, and each answer's parsing and journaling left its slot empty (held at 2
    on 2 workers, 1 in flight a fifth of the run)."""
    settings = {"max_concurrency": 4, "adaptive_concurrency": False}
    queued, _ = _queued_after_starts(tmp_path, 4 + 2, **settings)
    assert queued == 20 - (4 + 2)
