"""TtlTable: TTL per status on an injected clock, upserts, persistence, threads, scale."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.errors import StateError
from pipeline.io import atomic
from pipeline.state.ttl_table import TtlTable
from tests.state_support import SCHEMA, T0, FakeClock, all_rows, make, rows


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_ttl_per_status_on_injected_clock(tmp_path: Path, clock: FakeClock) -> None:
    t = make(tmp_path, clock)
    t.put(rows(["f"], "found"))
    t.put(rows(["m"], "missing"))
    clock.advance(days=13, hours=23)
    assert t.stale_or_unknown(["f", "m"]) == []
    clock.advance(hours=1)  # exactly 14 d: missing expires
    assert t.stale_or_unknown(["f", "m"]) == ["m"]
    clock.now = T0 + timedelta(days=59, hours=23)
    assert t.stale_or_unknown(["f"]) == []
    clock.now = T0 + timedelta(days=60)
    assert t.stale_or_unknown(["f"]) == ["f"]


def test_fresh_returns_rows_in_asked_order_and_counts(tmp_path: Path, clock) -> None:
    t = make(tmp_path, clock)
    t.put(rows(["a", "b", "c"], value=[1, 2, 3]))
    got = t.fresh(["c", "x", "a", "c", None])
    assert got["id"].tolist() == ["c", "a"]
    assert got["value"].tolist() == [3, 1]
    assert list(got.columns) == SCHEMA.names
    assert (t.hits, t.misses) == (2, 1)  # distinct keys: c, x, a
    assert t.stale_or_unknown(iter(["x", "b", "y", "x"])) == ["x", "y"]
    assert (t.hits, t.misses) == (3, 3)


def test_upsert_last_write_wins(tmp_path: Path, clock) -> None:
    t = make(tmp_path, clock)
    t.put(rows(["a", "b"], value=[1, 2]))
    t.put(rows(["a", "a"], value=[10, 11]))
    assert len(t) == 2
    assert t.fresh(["a"])["value"].tolist() == [11]
    clock.advance(days=20)
    t.put(rows(["b"], "missing", value=[None]))
    got = t.fresh(["b"]).iloc[0]
    assert got["status"] == "missing" and pd.isna(got["value"])
    assert got["checked_at"] == pd.Timestamp(T0 + timedelta(days=20))


def test_put_keeps_explicit_checked_at(tmp_path: Path, clock) -> None:
    t = make(tmp_path, clock)
    old = T0 - timedelta(days=61)
    t.put(rows(["a", "b"], checked_at=[old, None]))
    assert t.stale_or_unknown(["a", "b"]) == ["a"]


def test_put_validates(tmp_path: Path, clock) -> None:
    t = make(tmp_path, clock)
    with pytest.raises(ValueError, match="no TTL"):
        t.put(rows(["a"], "Found"))
    with pytest.raises(ValueError, match="unknown column"):
        t.put(rows(["a"], valeu=[1]))
    with pytest.raises(ValueError, match="'id'"):
        t.put(pd.DataFrame({"id": [None], "status": ["found"]}))
    with pytest.raises(ValueError, match="schema"):
        t.put(rows(["a"], value=["not a number"]))
    assert len(t) == 0


def test_checkpoint_reload_roundtrip_exact_dtypes(tmp_path: Path, clock) -> None:
    t = make(tmp_path, clock)
    t.put(rows(["a", "b"], value=[1, None], tags=[["x", "y"], None], score=[0.5, None]))
    before = all_rows(t, ["a", "b"])
    assert t.checkpoint() == 2
    assert t.checkpoint() == 0  # unchanged: no write
    assert pq.read_schema(tmp_path / "t.parquet").remove_metadata() == SCHEMA
    again = make(tmp_path, clock)
    after = all_rows(again, ["a", "b"])
    pd.testing.assert_frame_equal(before, after)
    assert str(after["value"].dtype) == "Int64"
    assert str(after["checked_at"].dtype) == "datetime64[us, UTC]"
    assert after["tags"].iloc[0] == ["x", "y"]
    assert again.stale_or_unknown(["a", "b"]) == []
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_ttl_change_applies_on_load(tmp_path: Path, clock) -> None:
    t = make(tmp_path, clock)
    t.put(rows(["a"]))
    t.checkpoint()
    clock.advance(days=10)
    shorter = TtlTable((tmp_path / "t.parquet"), "id", SCHEMA, {"found": timedelta(days=7)}, clock)
    assert shorter.stale_or_unknown(["a"]) == ["a"]


def test_concurrent_puts_lose_no_rows(tmp_path: Path, clock) -> None:
    t = make(tmp_path, clock)
    per_thread, n_threads = 500, 8
    barrier = threading.Barrier(n_threads)

    def worker(w: int) -> None:
        barrier.wait()
        for i in range(0, per_thread, 10):
            t.put(rows([f"w{w}-{j}" for j in range(i, i + 10)], value=[w] * 10))
            if i % 100 == 0:
                t.fresh([f"w{w}-0"])  # interleaved merges
            if i % 200 == 0:
                t.checkpoint()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(t) == per_thread * n_threads
    t.checkpoint()
    assert len(make(tmp_path, clock)) == per_thread * n_threads


def test_fresh_one_million_keys(tmp_path: Path, clock) -> None:
    n = 1_000_000
    keys = pd.Series(np.char.add("k", np.arange(n).astype(str)).astype(object))
    t = make(tmp_path, clock)
    t.put(pd.DataFrame({"id": keys[: n // 2], "status": "found", "value": 1}))
    t.put(pd.DataFrame({"id": keys[n // 2 : 3 * n // 4], "status": "missing"}))
    clock.advance(days=20)  # missing rows expired, found rows fresh
    len(t)  # merge outside the timing
    started = time.perf_counter()
    got = t.fresh(keys)
    elapsed = time.perf_counter() - started
    print(f"\nfresh() on {n:,} keys against {len(t):,} rows: {elapsed:.3f}s")
    assert len(got) == n // 2
    assert got["id"].iloc[0] == "k0" and got["id"].iloc[-1] == f"k{n // 2 - 1}"
    started = time.perf_counter()
    stale = t.stale_or_unknown(keys)
    print(f"stale_or_unknown() on {n:,} keys: {time.perf_counter() - started:.3f}s")
    assert len(stale) == n // 2 and stale[0] == f"k{n // 2}"


def test_failed_checkpoint_is_a_state_error_and_keeps_rows_for_a_retry(
    tmp_path: Path, clock, monkeypatch
) -> None:
    t = make(tmp_path, clock)
    t.put(rows(["a"], value=[1]))
    t.checkpoint()
    t.put(rows(["b"], value=[2]))

    def boom(src, dst) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(StateError, match="cannot write"):
        t.checkpoint()
    with pytest.raises(StateError, match="cannot write"):
        t.journal()
    monkeypatch.undo()
    assert sorted(make(tmp_path, clock).lookup(["a", "b"]).fresh["id"]) == ["a"]  # old file
    assert t.checkpoint() == 2  # nothing was lost in memory
    assert sorted(all_rows(make(tmp_path, clock), ["a", "b"])["id"]) == ["a", "b"]
