"""TtlTable: TTL per status on an injected clock, upserts, persistence, threads, scale."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.settings import Settings
from pipeline.state.caches import (
    FEATURES_SCHEMA,
    TRACKS_SCHEMA,
    Caches,
    features_cache,
    request_key,
    tracks_cache,
)
from pipeline.state.ttl_table import CHECKED_AT_TYPE, TtlTable

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("value", pa.int64()),
        ("tags", pa.list_(pa.string())),
        ("score", pa.float64()),
        ("status", pa.string()),
        ("checked_at", CHECKED_AT_TYPE),
    ]
)
TTL = {"found": timedelta(days=60), "missing": timedelta(days=14)}


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(tmp_path: Path, clock: FakeClock, **kw) -> TtlTable:
    return TtlTable(tmp_path / "t.parquet", "id", SCHEMA, TTL, clock, **kw)


def rows(ids, status="found", **cols) -> pd.DataFrame:
    return pd.DataFrame({"id": list(ids), "status": status, **cols})


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
    before = t.frame()
    assert t.checkpoint() == 2
    assert t.checkpoint() == 0  # unchanged: no write
    assert pq.read_schema(t.path).remove_metadata() == SCHEMA
    again = make(tmp_path, clock)
    after = again.frame()
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
    shorter = TtlTable(t.path, "id", SCHEMA, {"found": timedelta(days=7)}, clock)
    assert shorter.stale_or_unknown(["a"]) == ["a"]


def test_prune_drops_long_expired(tmp_path: Path, clock) -> None:
    t = make(tmp_path, clock)
    t.put(rows(["f"], "found"))
    t.put(rows(["m"], "missing"))
    clock.advance(days=29)
    assert t.prune() == 1  # missing: 29 d > 2 x 14 d
    assert len(t) == 1


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


# -- entity caches -------------------------------------------------------------------------


def test_tracks_and_features_caches_roundtrip(tmp_path: Path, clock) -> None:
    settings = Settings()
    tracks = tracks_cache(tmp_path, settings, clock)
    tracks.put(
        pd.DataFrame(
            {
                "reccobeats_id": ["r1"],
                "spotify_id": ["s" * 22],
                "title": ["Song"],
                "artists": [["A", "B"]],
                "artist_ids": [["a1", "b1"]],
                "duration_ms": [200_000],
                "popularity": [None],
                "isrc": ["X"],
                "status": ["found"],
            }
        )
    )
    features = features_cache(tmp_path, settings, clock)
    features.put(
        pd.DataFrame({"reccobeats_id": ["r1"], "energy": [0.5], "key": [3], "status": ["found"]})
    )
    features.put(pd.DataFrame({"reccobeats_id": ["r2"], "status": ["missing"]}))
    assert tracks.checkpoint() == 1 and features.checkpoint() == 2
    assert pq.read_schema(tmp_path / "tracks.parquet").remove_metadata() == TRACKS_SCHEMA
    assert pq.read_schema(tmp_path / "features.parquet").remove_metadata() == FEATURES_SCHEMA
    clock.advance(days=15)  # missing features (14 d) expire, found ones (30 d) do not
    reloaded = features_cache(tmp_path, settings, clock)
    assert reloaded.stale_or_unknown(["r1", "r2"]) == ["r2"]
    row = tracks_cache(tmp_path, settings, clock).fresh(["r1"]).iloc[0]
    assert row["artists"] == ["A", "B"] and pd.isna(row["popularity"])


def test_request_key_is_canonical() -> None:
    assert request_key(["b", "a", "b"], size=20) == "a,b|size=20"
    assert request_key(["a", "b"], size=20.0, energy=None) == "a,b|size=20"
    assert request_key(["a"], size=5, energy=0.5) == "a|energy=0.5&size=5"


def test_recommendations_multi_row(tmp_path: Path, clock) -> None:
    caches = Caches.load(tmp_path, Settings(), clock)
    rec = caches.recommendations
    k1, k2, k3 = request_key(["a"], size=2), request_key(["b"], size=2), request_key(["c"])
    rec.record(k1, [{"reccobeats_id": "r1", "title": "t1"}, {"reccobeats_id": "r2"}])
    rec.record(k2, pd.DataFrame({"reccobeats_id": ["r3"], "artists": [["x"]]}))
    rec.record(k3, [])
    rec.record(k1, [{"reccobeats_id": "r9"}, {"reccobeats_id": "r1"}])  # replaces k1's rows
    got = rec.fresh([k3, k1, "unknown"])
    assert got["request_key"].tolist() == [k3, k1, k1]
    assert got["status"].tolist() == ["empty", "found", "found"]
    assert got["reccobeats_id"].tolist()[1:] == ["r9", "r1"]
    assert got["rank"].tolist()[1:] == [1, 2] and pd.isna(got["rank"].iloc[0])
    assert (rec.hits, rec.misses) == (2, 1)
    assert caches.checkpoint_all()["recommendations"] == 4
    clock.advance(hours=19)
    again = Caches.load(tmp_path, Settings(), clock).recommendations
    assert len(again) == 4
    assert again.stale_or_unknown([k1, k2, k3]) == []
    clock.advance(hours=1)  # 20 h TTL
    assert again.stale_or_unknown([k1, k2, k3]) == [k1, k2, k3]


def test_recommendations_api_used_by_stages(tmp_path: Path, clock) -> None:
    caches = Caches.load(tmp_path, Settings(), clock)
    rec = caches.recommendations
    k = request_key(["a"], size=20)
    rec.put(
        pd.DataFrame(
            {
                "request_key": [k, k],
                "rank": [1, 2],
                "reccobeats_id": ["r1", "r2"],
                "artist_ids": [["x"], []],
                "isrc": ["I1", None],
                "status": "found",
            }
        )
    )
    assert rec.fresh_keys([k, "other"]) == {k}
    assert (rec.hits, rec.misses) == (1, 1)
    assert rec.rows([k])["rank"].tolist() == [1, 2]
    assert (rec.hits, rec.misses) == (1, 1)  # rows() does not count
    assert caches.hit_counts()["recommendations"] == (1, 1)


def test_feature_columns_match_records() -> None:
    records = pytest.importorskip("pipeline.api.records")
    from pipeline.state.caches import FEATURE_COLUMNS

    assert tuple(records.FEATURE_COLUMNS) == FEATURE_COLUMNS


# -- the journal: cheap saves between full rewrites -------------------------------------------


def test_journal_saves_only_new_rows_and_a_reload_replays_them(tmp_path: Path, clock) -> None:
    t = make(tmp_path, clock)
    t.put(rows(["a", "b"], value=[1, 2]))
    assert t.journal() == 2
    assert t.journal() == 0  # nothing new since
    t.put(rows(["a"], value=[10]))  # a later answer for a key already journaled
    assert t.journal() == 1
    assert not t.path.exists()  # no full rewrite happened
    assert len(list(t.journal_dir.glob("*.parquet"))) == 2
    again = make(tmp_path, clock)  # what a run killed now would find
    values = dict(zip(again.frame()["id"], again.frame()["value"], strict=True))
    assert values == {"a": 10, "b": 2}  # replayed in order: last write wins


def test_checkpoint_folds_the_journal_into_the_file(tmp_path: Path, clock) -> None:
    t = make(tmp_path, clock)
    t.put(rows(["a"], value=[1]))
    t.journal()
    t.put(rows(["b"], value=[2]))
    assert t.checkpoint() == 2
    assert list(t.journal_dir.glob("*.parquet")) == []
    assert t.checkpoint() == 0
    again = make(tmp_path, clock)
    assert sorted(again.frame()["id"]) == ["a", "b"]
    assert again.checkpoint() == 0  # nothing to replay, nothing to rewrite


def test_crash_between_rewrite_and_journal_deletion_keeps_the_newer_value(
    tmp_path: Path, clock
) -> None:
    t = make(tmp_path, clock)
    t.put(rows(["a"], value=[1]))
    t.journal()
    stale = {p.name: p.read_bytes() for p in t.journal_dir.glob("*.parquet")}
    t.put(rows(["a"], value=[2]))  # newer, not journaled: only the rewrite has it
    t.checkpoint()
    for name, data in stale.items():  # as if the run died before deleting the journal
        (t.journal_dir / name).write_bytes(data)
    again = make(tmp_path, clock)
    assert again.frame().set_index("id").loc["a", "value"] == 2  # the old entry is not replayed


def test_corrupt_journal_entry_is_quarantined_and_the_rest_replayed(
    tmp_path: Path, clock, caplog
) -> None:
    t = make(tmp_path, clock)
    t.put(rows(["a"], value=[1]))
    t.journal()
    t.put(rows(["b"], value=[2]))
    t.journal()
    first = sorted(t.journal_dir.glob("*.parquet"))[0]
    first.write_bytes(b"torn")
    again = make(tmp_path, clock)
    assert sorted(again.frame()["id"]) == ["b"]
    assert len(list(t.journal_dir.glob("*.corrupt-*"))) == 1
    assert "quarantined" in caplog.text


def test_journal_replay_keeps_multi_row_replacement(tmp_path: Path, clock) -> None:
    t = make(tmp_path, clock, multi_row=True)
    t.put(rows(["k", "k"], value=[1, 2]))
    t.journal()
    t.put(rows(["k"], value=[3]))  # replaces both rows of k
    t.journal()
    again = make(tmp_path, clock, multi_row=True)
    assert again.fresh(["k"])["value"].tolist() == [3]
