"""The stage runner: a bounded pool, answers recorded in the caller's thread, one stop signal."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pipeline.errors import Cancelled, ServerError
from pipeline.stages.runner import chunked, run_chunks, run_stage
from tests.conftest import job_settings
from tests.stage_support import API, stage_context


def test_chunked_keeps_order_and_size() -> None:
    assert chunked([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
    with pytest.raises(ValueError):
        chunked([1], 0)


def test_at_most_max_workers_run_at_once_and_results_land_in_the_calling_thread() -> None:
    lock = threading.Lock()
    running = peak = 0
    gate = threading.Barrier(3, timeout=5)
    caller = threading.get_ident()
    seen: list[tuple[int, int | None, int]] = []

    def work(n: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        if n < 3:
            gate.wait()  # the first three meet: proves three really ran at once
        with lock:
            running -= 1
        return n * 10

    def on_done(n: int, result: int | None, error: BaseException | None) -> None:
        seen.append((n, result, threading.get_ident()))

    run_chunks(
        range(9), work, on_done, max_workers=3, desc="t", total=9, progress=False,
        stop=threading.Event(),
    )  # fmt: skip
    assert peak == 3
    assert sorted((n, r) for n, r, _ in seen) == [(n, n * 10) for n in range(9)]
    assert {t for _, _, t in seen} == {caller}


def test_a_set_stop_event_starts_no_new_chunk_and_raises_cancelled() -> None:
    stop = threading.Event()
    started: list[int] = []

    def work(n: int) -> int:
        started.append(n)
        stop.set()  # e.g. SIGTERM arrives while the first chunk runs
        return n

    done: list[int] = []
    with pytest.raises(Cancelled):
        run_chunks(
            range(10), work, lambda n, r, e: done.append(n), max_workers=1, desc="t",
            total=10, progress=False, stop=stop,
        )  # fmt: skip
    assert started == [0]
    assert done == [0]  # what finished is still recorded


def test_run_stage_tallies_api_errors_propagates_others_and_always_checkpoints(
    tmp_path: Path,
) -> None:
    settings = job_settings(tmp_path, API)
    failures: list[int] = []
    with stage_context(settings, tmp_path / "state") as ctx:
        ctx.caches.tracks.put(_one_track_row())

        def work(n: int) -> int:
            if n == 1:
                raise ServerError("503 after retries", endpoint="tracks")
            return n

        run_stage(
            [0, 1, 2], work, ctx=ctx, on_result=lambda c, r: None,
            on_failure=lambda c, e: failures.append(c), max_workers=2, desc="t",
        )  # fmt: skip
        assert failures == [1]

        def broken(n: int) -> int:
            raise KeyError("a bug, not an API failure")

        with pytest.raises(KeyError):
            run_stage(
                [0], broken, ctx=ctx, on_result=lambda c, r: None,
                on_failure=lambda c, e: None, max_workers=1, desc="t",
            )  # fmt: skip
    # checkpoint_all ran at the end even though the stage raised: a fresh load sees the row
    with stage_context(settings, tmp_path / "state") as ctx:
        assert len(ctx.caches.tracks) == 1


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
