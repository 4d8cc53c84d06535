"""StateLock: one run per state dir, waiting, release, unusable dirs, temp-file sweep; the
object-store lease (``LeaseLock``) on an in-memory store: waiting on the injected clock, and
a lost lease stopping the run."""

from __future__ import annotations

import json
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from pipeline import orchestrator
from pipeline.errors import (
    EXIT_LOCK_LOST,
    Cancelled,
    OutputError,
    StateError,
    StateLockedError,
    StateLockLostError,
    exit_code_for,
)
from pipeline.orchestrator import run_job
from pipeline.settings import Settings
from pipeline.simulator import SimulatorServer
from pipeline.state.caches import Caches
from pipeline.state.learned_rate import LEARNED_RATE_NAME
from pipeline.state.lease import LOCK_NAME, LeaseLock
from pipeline.state.lock import StateLock
from pipeline.stop import StopSignal, aborts
from tests.conftest import ceil40, job_settings, sample_frame
from tests.state_support import FakeClock

NO_WAIT = 0.0

# -- lock ----------------------------------------------------------------------------------


def test_state_dir_creates_dir_and_lock(tmp_path: Path) -> None:
    target = tmp_path / "a" / "state"
    with StateLock(target, NO_WAIT) as sd:
        assert target.is_dir()
        assert sd.locked
        assert (target / ".lock").exists()
    assert not sd.locked


def test_second_state_dir_raises_locked(tmp_path: Path) -> None:
    locked = pytest.raises(StateLockedError, match=r"another run holds .*\.lock")
    with StateLock(tmp_path, NO_WAIT), locked:
        StateLock(tmp_path, NO_WAIT).__enter__()


def test_second_state_dir_waits_up_to_lock_wait(tmp_path: Path) -> None:
    with StateLock(tmp_path, NO_WAIT):
        started = time.monotonic()
        with pytest.raises(StateLockedError, match=r"waited 0\.3s") as info:
            StateLock(tmp_path, lock_wait_s=0.3).__enter__()
        assert time.monotonic() - started >= 0.29
    # the message names what a user sets, not the internal field name alone
    assert "--lock-wait or RECCOBEATS_LOCK_WAIT_S" in str(info.value)
    assert "lock_wait_s" in Settings.model_fields  # ... whose variable that is


def test_lock_released_on_exit_allows_next_run(tmp_path: Path) -> None:
    with StateLock(tmp_path, NO_WAIT):
        pass
    with StateLock(tmp_path, NO_WAIT) as sd:
        assert sd.locked


def test_unusable_state_dir_raises_state_error(tmp_path: Path) -> None:
    # Root ignores chmod, so make the path impossible: a directory under a regular file.
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(StateError, match="cannot create state dir") as info:
        StateLock(blocker / "sub", NO_WAIT).__enter__()
    assert not isinstance(info.value, StateLockedError)


def test_taking_the_lock_removes_temp_files_of_killed_writes(tmp_path: Path) -> None:
    torn = [tmp_path / ".registry.parquet.abc.tmp", tmp_path / "t.parquet.journal" / ".e.x.tmp"]
    torn[1].parent.mkdir()
    for p in torn:
        p.write_bytes(b"half")
    kept = tmp_path / "registry.parquet"
    kept.write_bytes(b"real")
    with StateLock(tmp_path, NO_WAIT):
        assert not any(p.exists() for p in torn)
        assert kept.read_bytes() == b"real"


# -- the lease on object storage --------------------------------------------------------------


class MemoryLockStore:
    """The conditional writes ``LeaseLock`` uses, in memory; ``down`` makes every call fail."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.down: OSError | None = None
        self._etags = iter(range(1, 1_000_000))

    def uri(self, rel: str = "") -> str:
        return f"mem://state/{rel}"

    def read_with_etag(self, rel: str) -> tuple[bytes, str] | None:
        self._check()
        return self.files.get(rel)

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        self._check()
        if rel in self.files:
            return False
        self.files[rel] = (data, str(next(self._etags)))
        return True

    def replace_if_match(self, rel: str, data: bytes, etag: str) -> bool:
        self._check()
        if rel not in self.files or self.files[rel][1] != etag:
            return False
        self.files[rel] = (data, str(next(self._etags)))
        return True

    def delete(self, rels: list[str]) -> None:
        self._check()
        for rel in rels:
            self.files.pop(rel, None)

    def owner(self) -> str | None:
        got = self.files.get(LOCK_NAME)
        return json.loads(got[0])["owner"] if got else None

    def _check(self) -> None:
        if self.down is not None:
            raise self.down


class ClockedStop(threading.Event):
    """A stop event whose ``wait`` lets the fake clock pass instead of real time."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        self.clock.advance(seconds=timeout)
        return self.is_set()


def lease(store: MemoryLockStore, clock: FakeClock, **kw: object) -> LeaseLock:
    values: dict[str, object] = {"lock_wait_s": NO_WAIT, "lease_s": 60.0, "heartbeat": False}
    values.update(kw)
    return LeaseLock(store, clock=clock, **values)  # type: ignore[arg-type]


def test_waiting_for_a_held_lease_is_timed_on_the_injected_clock() -> None:
    store, clock = MemoryLockStore(), FakeClock()
    holder = lease(store, clock).__enter__()
    stop = ClockedStop(clock)
    with pytest.raises(StateLockedError, match=r"waited 2\.5s.*RECCOBEATS_LOCK_WAIT_S"):
        lease(store, clock, lock_wait_s=2.5, stop=stop).__enter__()
    assert stop.waits == [1.0, 1.0, 0.5]  # polls every POLL_S until the clock says 2.5 s
    assert store.owner() == holder.owner


def test_a_lease_taken_over_stops_the_run_and_leaving_raises_lock_lost() -> None:
    store, clock, stop = MemoryLockStore(), FakeClock(), StopSignal()
    slow = lease(store, clock, stop=stop).__enter__()
    stopped_when_fenced: list[bool] = []
    slow.on_lost(lambda: stopped_when_fenced.append(stop.is_set()))
    clock.advance(seconds=120)  # paused past its 60 s lease: a successor takes over
    thief = lease(store, clock).__enter__()
    assert thief.took_over is not None

    slow._renew()  # the heartbeat's next beat
    assert aborts(stop)  # the run's one stop: every wait ends, nothing new starts
    assert stopped_when_fenced == [False]  # the caches were fenced before the stop

    with pytest.raises(StateLockLostError, match=r"now held by .*another run took over") as info:
        slow.__exit__(Cancelled, Cancelled("stop requested"), None)
    assert exit_code_for(info.value) == EXIT_LOCK_LOST
    assert store.owner() == thief.owner  # the successor's lock is left alone
    late: list[str] = []
    slow.on_lost(lambda: late.append("told"))  # subscribing after the loss: told at once
    assert late == ["told"]


def test_a_lease_that_cannot_be_renewed_in_time_stops_the_run_before_it_expires() -> None:
    store, clock, stop = MemoryLockStore(), FakeClock(), StopSignal()
    held = lease(store, clock, stop=stop).__enter__()  # expires 60 s from now; beats every 20 s
    store.down = OSError("connection reset")
    clock.advance(seconds=20)
    held._beat()  # one missed beat: the lease still outlives the next one
    assert not stop.is_set() and held.lost is None
    clock.advance(seconds=20)
    held._beat()  # the next beat would come at the expiry: another run may take over then
    assert aborts(stop)
    assert held.lost is not None and "connection reset" in str(held.lost)
    # The store is still down when the run leaves the lock: releasing fails too, and that
    # error used to replace the loss (exit 1 instead of 9).
    with pytest.raises(StateLockLostError, match="could not be renewed"):
        held.__exit__(Cancelled, Cancelled("stop requested"), None)


def test_renewals_keep_the_lease_alive() -> None:
    store, clock, stop = MemoryLockStore(), FakeClock(), StopSignal()
    held = lease(store, clock, stop=stop).__enter__()
    for _ in range(10):  # 200 s of beats on a 60 s lease: each renewal pushes it on
        clock.advance(seconds=20)
        held._beat()
    assert not stop.is_set() and held.lost is None
    held.__exit__(None, None, None)
    assert store.owner() is None


def test_a_lost_lease_does_not_replace_another_error() -> None:
    """A run that failed for its own reason (disk full: exit 8) keeps that exit code."""
    store, clock = MemoryLockStore(), FakeClock()
    slow = lease(store, clock, stop=StopSignal()).__enter__()
    clock.advance(seconds=120)
    lease(store, clock).__enter__()
    slow._renew()
    assert slow.lost is not None
    assert slow.__exit__(OutputError, OutputError("disk full"), None) is None  # not raised over


@pytest.mark.integration
def test_a_run_whose_lease_is_lost_stops_saves_by_appending_only_and_exits_9(
    tmp_path: Path, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole run: once its lease is taken over, the run stops through its one stop
    event, rewrites no checkpoint of the state the successor now owns (its answers go to
    the journal only), and raises ``StateLockLostError`` (exit 9), not a 130 stop."""
    store, clock = MemoryLockStore(), FakeClock()
    held: list[LeaseLock] = []

    def lease_on_memory(_state: object, **kw: Any) -> LeaseLock:
        held.append(LeaseLock(store, heartbeat=False, **kw))  # the run's clock and stop
        return held[0]

    journal_all, once = Caches.journal_all, threading.Lock()

    def save_then_lose_the_lease(caches: Caches) -> dict[str, int]:
        saved = journal_all(caches)
        if once.acquire(blocking=False):  # after the first answer is saved
            clock.advance(seconds=held[0].lease.total_seconds() * 2)  # paused past it
            lease(store, clock).__enter__()  # a successor takes the lock over
            held[0]._renew()  # the heartbeat's next beat sees it
        return saved

    monkeypatch.setattr("pipeline.orchestrator.lock_state_dir", lease_on_memory)
    monkeypatch.setattr(Caches, "journal_all", save_then_lose_the_lease)
    settings = job_settings(tmp_path, simulator.url, max_concurrency=1, adaptive=True)
    with pytest.raises(StateLockLostError, match="another run took over") as info:
        run_job(settings, date(2025, 3, 1), clock=clock)
    assert exit_code_for(info.value) == EXIT_LOCK_LOST
    state = tmp_path / "state"
    assert not list(state.glob("*.parquet"))  # no checkpoint rewritten after the loss
    assert list(state.glob("registry.parquet.journal/*.parquet"))  # answers appended
    assert not (state / LEARNED_RATE_NAME).exists()  # nor the successor's learned rate
    asked = simulator.counters()["requests_total"]
    assert asked < ceil40(len(set(sample_frame()["spotify_id"].dropna())))  # stopped early


@pytest.mark.integration
def test_a_lease_lost_after_the_last_answer_publishes_nothing_and_exits_9(
    tmp_path: Path, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lost once every stage is done, the stop it sets has nobody left to wait on it: the run
    used to publish the date and write an ``ok`` report, then exit 9 leaving the lock."""
    store, clock = MemoryLockStore(), FakeClock()
    held: list[LeaseLock] = []

    def lease_on_memory(_state: object, **kw: Any) -> LeaseLock:
        held.append(LeaseLock(store, heartbeat=False, **kw))
        return held[0]

    nothing_fetched = orchestrator.nothing_fetched

    def lose_the_lease_then_check(*args: Any) -> object:
        clock.advance(seconds=held[0].lease.total_seconds() * 2)  # paused past the lease
        lease(store, clock).__enter__()  # a successor takes the lock over
        held[0]._renew()  # the heartbeat's next beat sees it
        return nothing_fetched(*args)

    monkeypatch.setattr(orchestrator, "lock_state_dir", lease_on_memory)
    monkeypatch.setattr(orchestrator, "nothing_fetched", lose_the_lease_then_check)
    with pytest.raises(StateLockLostError, match="another run took over"):
        run_job(job_settings(tmp_path, simulator.url), date(2025, 3, 1), clock=clock)
    assert simulator.counters()["requests_total"] > 0  # every stage ran
    out = tmp_path / "output"
    assert not (out / "tracks").exists() and not (out / "runs").exists()
