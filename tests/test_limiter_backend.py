"""The limiter's backend port and its in-memory adapter (today's behaviour).

A shared adapter (Redis, issue 13) must pass the same contract; these tests pin what the
in-memory one does, so the port's docstring and the code cannot drift apart.
"""

from __future__ import annotations

from pipeline.api.limiter_backend import (
    AdmitRule,
    Cooldown,
    InMemoryBackend,
    Learned,
    LimiterBackend,
)


def rule(**kw: object) -> AdmitRule:
    base: dict[str, object] = {"window_s": 10.0, "budget": 2, "interval_s": 0.0, "max_in_flight": 8}
    base.update(kw)
    return AdmitRule(**base)  # type: ignore[arg-type]


def test_in_memory_backend_implements_the_port() -> None:
    assert isinstance(InMemoryBackend(), LimiterBackend)


def test_admit_charges_the_window_and_says_how_long_to_wait() -> None:
    b = InMemoryBackend()
    first = b.admit("tracks", 0.0, rule())
    second = b.admit("tracks", 1.0, rule())
    assert first.lease is not None and second.lease is not None
    assert first.lease.started_at == 0.0
    third = b.admit("tracks", 2.0, rule())
    assert third.lease is None
    assert third.wait_s == 8.0  # the oldest start leaves the window at 10.0
    assert b.admit("tracks", 10.0, rule()).lease is not None


def test_margin_keeps_a_start_counting_longer() -> None:
    b = InMemoryBackend()
    b.admit("tracks", 0.0, rule(budget=1, margin_s=0.5))
    assert b.admit("tracks", 10.0, rule(budget=1, margin_s=0.5)).wait_s == 0.5


def test_gaps_global_and_per_endpoint() -> None:
    b = InMemoryBackend()
    r = rule(budget=100, interval_s=1.0, endpoint_interval_s=3.0)
    assert b.admit("tracks", 0.0, r).lease is not None
    assert b.admit("audio_features", 0.5, r).wait_s == 0.5  # global gap
    assert b.admit("audio_features", 1.0, r).lease is not None  # other endpoint: no own gap
    assert b.admit("tracks", 2.0, r).wait_s == 1.0  # the endpoint's own gap from 0.0


def test_endpoint_budget() -> None:
    b = InMemoryBackend()
    r = rule(budget=100, endpoint_budget=1)
    assert b.admit("tracks", 0.0, r).lease is not None
    assert b.admit("tracks", 1.0, r).wait_s == 9.0
    assert b.admit("audio_features", 1.0, r).lease is not None


def test_pacing_applies_only_between_starts_after_paced_from() -> None:
    b = InMemoryBackend()
    paced = rule(budget=100, paced_interval_s=5.0, paced_from=3.0)
    assert b.admit("tracks", 0.0, paced).lease is not None
    assert b.admit("tracks", 3.0, paced).lease is not None  # previous start before paced_from
    assert b.admit("tracks", 4.0, paced).wait_s == 4.0  # now paced 5 s from 3.0


def test_slots_are_leases() -> None:
    b = InMemoryBackend()
    r = rule(budget=100, max_in_flight=1)
    lease = b.admit("tracks", 0.0, r).lease
    assert lease is not None and b.in_use() == 1
    blocked = b.admit("tracks", 0.0, r)
    assert blocked.lease is None and blocked.wait_s is None  # wait for a release
    b.release(lease)
    b.release(lease)  # idempotent
    assert b.in_use() == 0
    assert b.admit("tracks", 0.0, r).lease is not None


def test_cooldown_only_grows_and_reports_added_seconds() -> None:
    b = InMemoryBackend()
    assert b.cooldown() == Cooldown()
    assert b.extend_cooldown(30.0, "tracks", now=0.0) == 30.0
    assert b.extend_cooldown(20.0, "audio_features", now=5.0) == 0.0  # shorter: ignored
    assert b.cooldown() == Cooldown(30.0, "tracks")
    assert b.extend_cooldown(40.0, "recommendation", now=10.0) == 10.0  # the union grows 10 s


def test_learned_values_merge() -> None:
    b = InMemoryBackend()
    assert b.learned() == Learned()
    b.store_learned(Learned(rate=30.0))
    b.store_learned(Learned(concurrency=4))
    assert b.learned() == Learned(rate=30.0, concurrency=4)
