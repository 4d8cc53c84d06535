"""Entity caches: typed schemas, TTLs from settings, the multi-row recommendations cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.config import ttl_config
from pipeline.settings import Settings
from pipeline.state.caches import (
    FEATURES_SCHEMA,
    TRACKS_SCHEMA,
    Caches,
    features_cache,
    tracks_cache,
)
from pipeline.state.rows_from_records import missing_features_frame, recommendation_rows
from tests.state_support import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def result(key: str, tracks: pd.DataFrame) -> pd.DataFrame:
    """Cache rows of one answered recommendation request, ranked 1..n as the stage ranks."""
    rows = tracks.copy()
    rows.insert(0, "request_key", key)
    rows.insert(1, "rank", np.arange(1, len(rows) + 1, dtype=np.int32))
    rows["status"] = "found"
    return rows


def test_tracks_and_features_caches_roundtrip(tmp_path: Path, clock) -> None:
    settings = Settings()
    tracks = tracks_cache(tmp_path, ttl_config(settings), clock)
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
    features = features_cache(tmp_path, ttl_config(settings), clock)
    features.put(
        pd.DataFrame({"reccobeats_id": ["r1"], "energy": [0.5], "key": [3], "status": ["found"]})
    )
    features.put(pd.DataFrame({"reccobeats_id": ["r2"], "status": ["missing"]}))
    assert tracks.checkpoint() == 1 and features.checkpoint() == 2
    assert pq.read_schema(tmp_path / "tracks.parquet").remove_metadata() == TRACKS_SCHEMA
    assert pq.read_schema(tmp_path / "features.parquet").remove_metadata() == FEATURES_SCHEMA
    clock.advance(days=15)  # missing features (14 d) expire, found ones (30 d) do not
    reloaded = features_cache(tmp_path, ttl_config(settings), clock)
    assert reloaded.stale_or_unknown(["r1", "r2"]) == ["r2"]
    row = tracks_cache(tmp_path, ttl_config(settings), clock).fresh(["r1"]).iloc[0]
    assert row["artists"] == ["A", "B"] and pd.isna(row["popularity"])


def test_recommendations_multi_row(tmp_path: Path, clock) -> None:
    caches = Caches.load(tmp_path, ttl_config(Settings()), clock)
    rec = caches.recommendations
    k1, k2, k3 = "a|size=2", "b|size=2", "c|size=2"
    rec.put(result(k1, pd.DataFrame({"reccobeats_id": ["r1", "r2"], "title": ["t1", None]})))
    rec.put(result(k2, pd.DataFrame({"reccobeats_id": ["r3"], "artists": [["x"]]})))
    rec.put(recommendation_rows(k3, []))  # the stage's "no recommendations" row
    rec.put(result(k1, pd.DataFrame({"reccobeats_id": ["r9", "r1"]})))  # replaces k1's rows
    got = rec.table.fresh([k3, k1, "unknown"])
    assert got["request_key"].tolist() == [k3, k1, k1]
    assert got["status"].tolist() == ["empty", "found", "found"]
    assert got["reccobeats_id"].tolist()[1:] == ["r9", "r1"]
    assert got["rank"].tolist() == [0, 1, 2]
    assert (rec.hits, rec.misses) == (2, 1)
    assert caches.checkpoint_all()["recommendations"] == 4
    clock.advance(hours=19)
    again = Caches.load(tmp_path, ttl_config(Settings()), clock).recommendations
    assert len(again) == 4
    assert again.table.stale_or_unknown([k1, k2, k3]) == []
    clock.advance(hours=1)  # 20 h TTL
    assert again.table.stale_or_unknown([k1, k2, k3]) == [k1, k2, k3]


def test_recommendations_api_used_by_stages(tmp_path: Path, clock) -> None:
    caches = Caches.load(tmp_path, ttl_config(Settings()), clock)
    rec = caches.recommendations
    k = "a|size=20"
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


def test_a_fence_set_during_a_checkpoint_spares_the_tables_not_yet_rewritten(
    tmp_path: Path, clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease lost while the run checkpoints: the tables after the one being rewritten are
    only journaled (a rewrite deletes the journal entries the new owner appends)."""
    caches = Caches.load(tmp_path, ttl_config(Settings()), clock)
    caches.registry.record_found({"21qnJAMtzC6S5SESuqQLEK": "rb-1"})
    caches.features.put(missing_features_frame(["rb-1"], {"rb-1": "21qnJAMtzC6S5SESuqQLEK"}))
    checkpoint = type(caches.registry).checkpoint

    def rewrite_then_lose_the_lease(registry: object) -> int:
        written = checkpoint(registry)
        caches.fence()  # the heartbeat, meanwhile
        return written

    monkeypatch.setattr(type(caches.registry), "checkpoint", rewrite_then_lose_the_lease)
    caches.checkpoint_all()
    assert (tmp_path / "registry.parquet").exists()  # rewritten before the fence
    assert not (tmp_path / "features.parquet").exists()  # after it: journaled only
    assert list(tmp_path.glob("features.parquet.journal/*.parquet"))
