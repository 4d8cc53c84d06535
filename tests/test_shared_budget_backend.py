"""``RedisBackend`` against a real redis-server: the LimiterBackend contract, shared.

Two backends with the same budget name stand for two processes (each has its own connection
pool, lease token and heartbeat); the server is real, so the atomicity, the server clock and
the failure modes are Redis' own. Whole-process behaviour (4 CLI runs, kill -9, Redis stopped
mid-run) is in tests/test_shared_budget_processes.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.api.backends.redis_budget import RedisBackend
from pipeline.api.limiter_backend import AdmitRule, Lease, LimiterBackend
from pipeline.config import SharedBudgetConfig
from pipeline.errors import SharedBudgetError
from tests.redis_support import RedisServer, free_port

WINDOW = AdmitRule(window_s=1.0, budget=5, interval_s=0.0, max_in_flight=100)


@pytest.fixture
def make_backend(redis_url: str) -> Iterator[Callable[..., RedisBackend]]:
    made: list[RedisBackend] = []

    def make(
        name: str = "test",
        *,
        url: str = redis_url,
        lease_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_lost: Callable[[SharedBudgetError], None] | None = None,
    ) -> RedisBackend:
        config = SharedBudgetConfig(url=url, name=name, lease_s=lease_s, timeout_s=1.0)
        backend = RedisBackend(config, clock=clock, on_lost=on_lost)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def admit_all(backend: RedisBackend, n: int, rule: AdmitRule = WINDOW) -> list[Lease | None]:
    return [backend.admit("tracks", time.monotonic(), rule).lease for _ in range(n)]


def test_it_is_a_limiter_backend(make_backend: Callable[..., RedisBackend]) -> None:
    assert isinstance(make_backend(), LimiterBackend)


def test_two_processes_share_one_window(make_backend: Callable[..., RedisBackend]) -> None:
    a, b = make_backend(), make_backend()
    assert all(admit_all(a, 3))
    assert all(admit_all(b, 2))
    refused = b.admit("tracks", time.monotonic(), WINDOW)
    assert refused.lease is None
    assert refused.wait_s is not None and 0.9 < refused.wait_s <= 1.0
    assert a.admit("audio_features", time.monotonic(), WINDOW).lease is None  # global window


def test_budgets_of_different_names_are_apart(make_backend: Callable[..., RedisBackend]) -> None:
    a, other = make_backend("one"), make_backend("two")
    assert all(admit_all(a, 5))
    assert all(admit_all(other, 5))
    assert a.admit("tracks", time.monotonic(), WINDOW).lease is None


def test_endpoint_budget_and_gaps(make_backend: Callable[..., RedisBackend]) -> None:
    a, b = make_backend(), make_backend()
    rule = AdmitRule(window_s=1.0, budget=10, interval_s=0.0, max_in_flight=10, endpoint_budget=2)
    assert all(admit_all(a, 2, rule))
    assert b.admit("tracks", time.monotonic(), rule).lease is None  # the endpoint's 2 are used
    assert b.admit("audio_features", time.monotonic(), rule).lease is not None
    gap = AdmitRule(window_s=1.0, budget=10, interval_s=0.3, max_in_flight=10)
    c = make_backend("gaps")
    assert c.admit("track", time.monotonic(), gap).lease is not None
    waiting = make_backend("gaps").admit("track", time.monotonic(), gap)
    assert waiting.lease is None and waiting.wait_s is not None and 0.2 < waiting.wait_s <= 0.3


def test_slots_are_counted_across_processes(make_backend: Callable[..., RedisBackend]) -> None:
    rule = AdmitRule(window_s=1.0, budget=100, interval_s=0.0, max_in_flight=2)
    a, b = make_backend(), make_backend()
    held = admit_all(a, 2, rule)
    assert all(held) and b.in_use() == 2
    full = b.admit("tracks", time.monotonic(), rule)
    assert full.lease is None and full.wait_s is None  # wait for a slot, polling
    assert b.slot_poll_s is not None and b.slot_poll_s <= 0.1
    first = held[0]
    assert first is not None
    a.release(first)
    a.release(first)  # idempotent
    assert b.admit("tracks", time.monotonic(), rule).lease is not None


def test_a_live_holder_keeps_its_leases_past_their_lifetime(
    make_backend: Callable[..., RedisBackend],
) -> None:
    rule = AdmitRule(window_s=1.0, budget=100, interval_s=0.0, max_in_flight=1)
    a, b = make_backend(lease_s=0.6), make_backend(lease_s=0.6)
    assert a.admit("tracks", time.monotonic(), rule).lease is not None
    time.sleep(1.5)  # real time: the heartbeat must renew the lease (2.5 lifetimes)
    assert b.in_use() == 1
    assert b.admit("tracks", time.monotonic(), rule).lease is None


def test_a_dead_holders_leases_expire(make_backend: Callable[..., RedisBackend]) -> None:
    rule = AdmitRule(window_s=1.0, budget=100, interval_s=0.0, max_in_flight=2)
    dead, alive = make_backend(lease_s=0.5), make_backend(lease_s=0.5)
    assert all(admit_all(dead, 2, rule))
    dead._stop.set()  # the heartbeat stops as a SIGKILL would stop it; nothing is released
    dead._heartbeat.join()
    assert alive.admit("tracks", time.monotonic(), rule).lease is None
    deadline = time.monotonic() + 2.0
    while alive.in_use() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive.in_use() == 0
    assert all(admit_all(alive, 2, rule))


def test_a_cooldown_seen_by_one_pauses_all(make_backend: Callable[..., RedisBackend]) -> None:
    a, b = make_backend(), make_backend()
    now = time.monotonic()
    assert a.extend_cooldown(now + 2.0, "tracks", now) == pytest.approx(2.0, abs=0.01)
    assert a.extend_cooldown(now + 1.0, "tracks", now) == 0.0  # never shrinks
    seen = b.cooldown()
    assert seen.cause == "tracks"
    assert seen.until - time.monotonic() == pytest.approx(2.0, abs=0.05)
    blocked = b.admit("audio_features", time.monotonic(), WINDOW)
    assert blocked.lease is None and blocked.wait_s == pytest.approx(2.0, abs=0.05)


def test_host_clocks_do_not_matter(make_backend: Callable[..., RedisBackend]) -> None:
    """A host whose clock is an hour ahead sees the same window and the same cool-down."""
    skewed: Callable[[], float] = lambda: time.monotonic() + 3600.0  # noqa: E731
    a, b = make_backend(), make_backend(clock=skewed)
    assert all(admit_all(a, 5))
    refused = b.admit("tracks", skewed(), WINDOW)
    assert refused.lease is None and refused.wait_s is not None and refused.wait_s <= 1.0
    now = time.monotonic()
    a.extend_cooldown(now + 3.0, "tracks", now)
    assert b.cooldown().until - skewed() == pytest.approx(3.0, abs=0.05)


def test_a_learned_rate_caps_every_process(make_backend: Callable[..., RedisBackend]) -> None:
    from pipeline.api.limiter_backend import Learned

    a, b = make_backend(), make_backend()
    assert b.learned() == Learned()
    a.store_learned(Learned(rate=2.5))
    assert b.learned() == Learned(rate=2.5)
    got = admit_all(b, 5)  # the rule says 5 per window; the learned 2.5 allows 2
    assert [lease is not None for lease in got] == [True, True, False, False, False]
    a.store_learned(Learned(concurrency=1))
    assert b.learned() == Learned(rate=2.5, concurrency=1)
    wide = AdmitRule(window_s=1.0, budget=100, interval_s=0.0, max_in_flight=10)
    c = make_backend("conc")
    c.store_learned(Learned(concurrency=1))
    assert c.admit("tracks", time.monotonic(), wide).lease is not None
    assert c.admit("tracks", time.monotonic(), wide).wait_s is None  # the learned 1 caps 10


def test_unreachable_at_start_is_one_clear_error(
    make_backend: Callable[..., RedisBackend],
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(SharedBudgetError, match=r"cannot reach Redis at 127\.0\.0\.1:\d+/0"):
        make_backend(url=url)


def test_lost_mid_run_fails_closed_and_says_so_once(
    private_redis: RedisServer, make_backend: Callable[..., RedisBackend]
) -> None:
    lost: list[SharedBudgetError] = []
    seen = threading.Event()

    def on_lost(error: SharedBudgetError) -> None:
        lost.append(error)
        seen.set()

    backend = make_backend(url=private_redis.url, lease_s=3.0, on_lost=on_lost)
    lease = backend.admit("tracks", time.monotonic(), WINDOW).lease
    assert lease is not None
    private_redis.stop()
    t0 = time.monotonic()
    assert seen.wait(3.0), "the heartbeat did not notice Redis going away"
    noticed = time.monotonic() - t0
    assert noticed < 2.0
    with pytest.raises(SharedBudgetError, match="shared budget lost"):
        backend.admit("tracks", time.monotonic(), WINDOW)
    backend.release(lease)  # does not raise: the loss is reported already
    private_redis.start()  # back, but empty: still closed, no silent reconnect
    with pytest.raises(SharedBudgetError):
        backend.cooldown()
    assert len(lost) == 1
    assert backend.lost is lost[0]


def test_a_run_that_fails_to_start_closes_its_shared_budget(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ApiResources`` opens Redis (and its heartbeat thread) before it reads the state dir;
    when that read fails, ``__exit__`` never runs, so the constructor must close Redis
    itself, or a long-lived worker (Airflow) keeps a connection and a thread per failure."""
    import pipeline.api_resources as api_resources
    from pipeline.clock import utc_now
    from pipeline.errors import StateError
    from pipeline.io.storage import open_storage
    from tests.conftest import job_settings

    def unreadable(_state_dir: object) -> float:
        raise StateError("state dir unreadable")  # what a broken state dir raises

    monkeypatch.setattr(api_resources, "load_learned_limit", unreadable)
    settings = job_settings(tmp_path, "http://127.0.0.1:9", shared_budget=redis_url, adaptive=True)
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(StateError):
        api_resources.ApiResources(
            settings, open_storage(tmp_path / "state"), threading.Event(), utc_now
        )
    started = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert not [t.name for t in started if t.name.startswith("budget-heartbeat")]
