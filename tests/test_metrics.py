"""RequestMetrics: counters, percentiles, peak in-flight, timeline; thread safety."""

from __future__ import annotations

import threading

import pytest

from pipeline.api.metrics import RequestMetrics, percentile


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_attempt_counters_and_latency() -> None:
    clock = Clock()
    m = RequestMetrics(clock=clock)
    t1 = m.start("tracks")
    clock.now += 2.0
    m.finish(t1, 200, nbytes=1000)
    t2 = m.start("tracks")
    clock.now += 4.0
    m.finish(t2, 429, error="rate_limited")
    t3 = m.start("audio_features")
    clock.now += 1.0
    m.finish(t3, None, error="timeout")
    m.retry("tracks", "429")
    m.success("tracks")
    m.dedup_hit("tracks")
    m.failure("audio_features", "TransportError")
    m.count_error("tracks", "bad_item", 3)
    m.count_error("tracks", "unasked", 0)

    snap = m.snapshot()
    tracks = snap["endpoints"]["tracks"]
    assert tracks["attempts"] == 2
    assert tracks["successes"] == 1
    assert tracks["status_429"] == 1
    assert tracks["retries"] == 1
    assert tracks["retry_reasons"] == {"429": 1}
    assert tracks["bytes"] == 1000
    assert tracks["dedup_hits"] == 1
    assert tracks["errors"] == {"rate_limited": 1, "bad_item": 3}
    assert tracks["statuses"] == {"200": 1, "429": 1}
    assert tracks["latency_s"] == {"count": 2, "p50": 3.0, "p95": pytest.approx(3.9), "max": 4.0}
    feats = snap["endpoints"]["audio_features"]
    assert feats["timeouts"] == 1
    assert feats["failures"] == 1
    assert feats["statuses"] == {"none": 1}
    assert snap["totals"]["attempts"] == 3
    assert snap["totals"]["errors"]["timeout"] == 1
    assert snap["latency_s"]["max"] == 4.0
    assert snap["latency_s"]["p50"] == 2.0
    assert snap["peak_in_flight"] == 1
    assert snap["in_flight"] == 0


def test_timeline_relative_start_sorted() -> None:
    clock = Clock()
    m = RequestMetrics(clock=clock)
    clock.now += 1.0
    a = m.start("tracks")
    clock.now += 1.0
    b = m.start("track")
    clock.now += 0.5
    m.finish(b, None, error="connection")
    clock.now += 1.0
    m.finish(a, 200)
    assert m.timeline() == [(1.0, "tracks", 200, 2.5), (2.0, "track", None, 0.5)]


def test_peak_in_flight_and_double_finish() -> None:
    m = RequestMetrics(clock=Clock())
    tokens = [m.start("tracks") for _ in range(3)]
    assert m.in_flight == 3
    for t in tokens:
        m.finish(t, 200)
        m.finish(t, 200)  # no-op: never drives in-flight negative or double counts
    snap = m.snapshot()
    assert snap["peak_in_flight"] == 3
    assert snap["in_flight"] == 0
    assert snap["endpoints"]["tracks"]["latency_s"]["count"] == 3


def test_empty_snapshot_has_no_latency_numbers() -> None:
    snap = RequestMetrics().snapshot()
    assert snap["endpoints"] == {}
    assert snap["latency_s"] == {"count": 0, "p50": None, "p95": None, "max": None}


def test_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 95) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(map(float, range(101))), 95) == 95.0


def test_thread_safety() -> None:
    m = RequestMetrics()
    n_threads, per_thread = 8, 500

    def work() -> None:
        for _ in range(per_thread):
            t = m.start("tracks")
            m.finish(t, 200, nbytes=1)
            m.success("tracks")

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ep = m.snapshot()["endpoints"]["tracks"]
    total = n_threads * per_thread
    assert (ep["attempts"], ep["successes"], ep["bytes"]) == (total, total, total)
    assert len(m.timeline()) == total
    assert m.in_flight == 0
