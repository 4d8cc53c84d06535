"""State and outputs on S3 (a real moto server on loopback, reached through s3fs).

What must hold on object storage as on a local disk: the journal's semantics (every save
is one small PUT, a reload replays what the checkpoint lacks, corrupt files quarantined),
op counts proportional to what was saved (not to what was ever written), atomic
partitions that plain pandas, pyarrow.dataset and ``load_enriched`` read back, an input
read from a prefix, and the lease lock (second run locked out, stale lease taken over).
"""

# ruff: noqa: F811  (pytest fixtures imported from tests.s3_support are parameters here)
from __future__ import annotations

import io
import logging
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from pipeline.config import ttl_config
from pipeline.errors import StateLockedError, StateLockLostError
from pipeline.io.contract import rejects_for_contract
from pipeline.io.object_store import ObjectStorage
from pipeline.io.publish_object import MANIFEST
from pipeline.io.reader import read_input
from pipeline.io.schemas import tracks_schema
from pipeline.io.storage import RunStorage, open_storage
from pipeline.io.writer import load_enriched, write_partition, write_rejects
from pipeline.settings import Settings
from pipeline.state.caches import Caches
from pipeline.state.learned_rate import load_learned_rate, save_learned_rate
from pipeline.state.lease import LOCK_NAME, LeaseLock
from pipeline.state.lock import lock_state_dir
from pipeline.state.ttl_table import TtlTable
from tests.s3_support import S3Server, s3_root, s3_server  # noqa: F401 (fixtures)
from tests.state_support import SCHEMA, TTL, FakeClock, all_rows, rows

pytestmark = pytest.mark.integration

A = "4uLU6hMCjMI75M1A2tKUQC"
B = "7ouMYWpwJ422jRcDASZB7P"
D1 = date(2024, 5, 1)
INPUT_SCHEMA = pa.schema([("track_id", pa.string())])


def table_on(store: ObjectStorage, clock: FakeClock, **kw) -> TtlTable:
    return TtlTable("t.parquet", "id", SCHEMA, TTL, clock, store=store, **kw)


def delta(store: ObjectStorage, before: dict) -> dict:
    now = store.counts.snapshot()
    return {k: now[k] - before[k] for k in ("list", "get", "put", "delete", "head")}


# -- storage and the journal ------------------------------------------------------------------


def test_storage_roundtrip_and_counts(s3_root: str) -> None:
    store = open_storage(f"{s3_root}/state")
    assert isinstance(store, ObjectStorage)
    with pytest.raises(FileNotFoundError):
        store.read_bytes("nope")
    store.write_bytes("a/x.bin", b"1")
    store.write_bytes("a/y.bin", b"2")
    store.write_bytes("b/z.bin", b"3")
    assert store.read_bytes("a/x.bin") == b"1"
    assert store.list_files("a") == ["x.bin", "y.bin"]
    assert store.list_dirs("") == ["a", "b"]
    assert store.find("") == ["a/x.bin", "a/y.bin", "b/z.bin"]
    store.move("a/x.bin", "a/x.bin.corrupt")
    store.delete(["a/y.bin", "a/never-existed"])
    assert store.list_files("a") == ["x.bin.corrupt"]
    ops = store.counts.snapshot()
    assert ops["put"] >= 4 and ops["get"] >= 2 and ops["list"] >= 4 and ops["delete"] >= 2
    assert "PutObject" in ops["by_operation"] and "ListObjectsV2" in ops["by_operation"]


def test_journal_on_s3_saves_one_put_per_save_and_replays(s3_root: str) -> None:
    clock = FakeClock()
    store = open_storage(f"{s3_root}/state")
    t = table_on(store, clock)
    t.put(rows(["a", "b"], value=[1, 2]))
    before = store.counts.snapshot()
    assert t.journal() == 2
    assert delta(store, before) == {"list": 0, "get": 0, "put": 1, "delete": 0, "head": 0}
    t.put(rows(["a"], value=[10]))
    t.journal()
    # What a run killed now finds: no checkpoint, two journal entries, replayed in order.
    before = store.counts.snapshot()
    again = table_on(store, clock)
    load = delta(store, before)
    assert load == {"list": 1, "get": 3, "put": 0, "delete": 0, "head": 0}  # base 404 + 2
    back = all_rows(again, ["a", "b"])
    assert dict(zip(back["id"], back["value"], strict=True)) == {"a": 10, "b": 2}
    # A checkpoint folds the journal in: one LIST, one PUT, one batched DELETE.
    before = store.counts.snapshot()
    assert again.checkpoint() == 2
    assert delta(store, before) == {"list": 1, "get": 0, "put": 1, "delete": 1, "head": 0}
    assert store.list_files("t.parquet.journal") == []
    before = store.counts.snapshot()
    third = table_on(store, clock)
    assert delta(store, before) == {"list": 1, "get": 1, "put": 0, "delete": 0, "head": 0}
    assert sorted(all_rows(third, ["a", "b"])["id"]) == ["a", "b"]


def test_load_cost_does_not_grow_with_history(s3_root: str) -> None:
    """After 20 nights of save + checkpoint, a load still costs one LIST and one GET."""
    clock = FakeClock()
    store = open_storage(f"{s3_root}/state")
    for night in range(20):
        t = table_on(store, clock)
        t.put(rows([f"k{night}-{i}" for i in range(5)]))
        t.journal()
        t.checkpoint()
    before = store.counts.snapshot()
    t = table_on(store, clock)
    assert len(t) == 100
    assert delta(store, before) == {"list": 1, "get": 1, "put": 0, "delete": 0, "head": 0}


def test_corrupt_checkpoint_on_s3_is_quarantined(s3_root: str, caplog) -> None:
    clock = FakeClock()
    store = open_storage(f"{s3_root}/state")
    store.write_bytes("t.parquet", b"PAR1 torn")
    with caplog.at_level(logging.WARNING):
        t = table_on(store, clock)
    assert len(t) == 0
    assert [n for n in store.list_files("") if n.startswith("t.parquet.corrupt-")]
    assert "quarantined" in caplog.text


def test_caches_and_learned_rate_on_s3(s3_root: str) -> None:
    clock = FakeClock()
    state = open_storage(f"{s3_root}/state")
    caches = Caches.load(state, ttl_config(Settings()), clock)
    caches.registry.record_found({A: "rb-1"})
    caches.registry.record_missing([B])
    caches.journal_all()
    again = Caches.load(state, ttl_config(Settings()), clock)
    assert again.registry.lookup([A, B]).stale_or_unknown == []
    assert load_learned_rate(state) is None
    save_learned_rate(state, 12.5, datetime(2025, 1, 1, tzinfo=UTC))
    assert load_learned_rate(state) == 12.5


def test_endpoint_from_setting_or_environment(s3_server: S3Server, monkeypatch) -> None:
    bucket = s3_server.new_bucket()
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    store = RunStorage.open(
        None, f"s3://{bucket}/out", f"s3://{bucket}/st", s3_endpoint_url=s3_server.endpoint_url
    ).state
    store.write_bytes("x", b"1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    assert open_storage(f"s3://{bucket}/st").read_bytes("x") == b"1"
    assert Settings(s3_endpoint_url="http://h:1", state_dir=f"s3://{bucket}/st").state_dir == (
        f"s3://{bucket}/st"
    )


# -- outputs ----------------------------------------------------------------------------------


def tracks_frame(n: int, tag: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "track_id": [f"{tag}{i}" for i in range(n)],
            "row_number": range(n),
            "spotify_id": [A] * n,
            "status": "ok",
            "artists": [["x", "y"]] * n,
            "duration_ms": pd.array([1000] * (n - 1) + [None], dtype="Int64"),
        }
    )


def test_partition_on_s3_reads_back_with_pandas_pyarrow_and_load_enriched(
    s3_root: str, s3_server: S3Server
) -> None:
    out = open_storage(f"{s3_root}/out")
    schema = tracks_schema(INPUT_SCHEMA)
    uri = write_partition(tracks_frame(3, "a"), out, "tracks", D1, schema)
    assert uri == f"{s3_root}/out/tracks/date=2024-05-01"
    write_partition(tracks_frame(2, "b"), out, "tracks", date(2024, 5, 2), schema)
    opts = s3_server.storage_options
    plain = pd.read_parquet(f"{s3_root}/out/tracks", storage_options=opts)
    assert len(plain) == 5 and str(plain["duration_ms"].dtype) == "Int64"
    assert plain.groupby("date", observed=True).size().to_dict() == {
        "2024-05-01": 3,
        "2024-05-02": 2,
    }
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_server.endpoint_url, skip_instance_cache=True)
    dataset = pads.dataset(
        f"{s3_root[5:]}/out/tracks", filesystem=fs, format="parquet", partitioning="hive"
    )
    assert dataset.count_rows() == 5
    back = load_enriched(f"{s3_root}/out", storage_options=opts)
    assert len(back) == 5 and str(back["date"].dtype) == "datetime64[ns]"
    assert back["artists"].iloc[0] == ["x", "y"]
    assert str(back["duration_ms"].dtype) == "Int64"
    one = load_enriched(f"{s3_root}/out", date=D1)
    assert one["track_id"].tolist() == ["a0", "a1", "a2"]


def test_republish_replaces_only_that_date_and_strays(s3_root: str) -> None:
    out = open_storage(f"{s3_root}/out")
    schema = tracks_schema(INPUT_SCHEMA)
    write_partition(tracks_frame(3, "a"), out, "tracks", D1, schema)
    write_partition(tracks_frame(2, "x"), out, "tracks", date(2024, 5, 2), schema)
    buf = io.BytesIO()
    pq.write_table(pa.table({"track_id": ["stray"]}), buf)
    out.write_bytes("tracks/date=2024-05-01/part-old.parquet", buf.getvalue())
    before = out.counts.snapshot()
    write_partition(tracks_frame(4, "b"), out, "tracks", D1, schema)
    cost = delta(out, before)
    assert cost["put"] == 2 and cost["list"] == 1 and cost["delete"] == 1
    assert out.list_files("tracks/date=2024-05-01") == [MANIFEST, "part-0.parquet"]
    back = load_enriched(out)
    assert back.groupby("date").size().tolist() == [4, 2]
    assert set(back["track_id"]) == {"b0", "b1", "b2", "b3", "x0", "x1"}


def test_load_enriched_checks_data_against_the_commit_marker(s3_root: str, caplog) -> None:
    """A read between a publish's data PUT and its marker PUT is detected, not trusted."""
    out = open_storage(f"{s3_root}/out")
    schema = tracks_schema(INPUT_SCHEMA)
    write_partition(tracks_frame(3, "a"), out, "tracks", D1, schema)
    old_marker = out.read_bytes(f"tracks/date=2024-05-01/{MANIFEST}")
    write_partition(tracks_frame(4, "b"), out, "tracks", D1, schema)
    out.write_bytes(f"tracks/date=2024-05-01/{MANIFEST}", old_marker)  # killed before the marker
    with caplog.at_level(logging.WARNING):
        back = load_enriched(out, date=D1)
    assert back["track_id"].tolist() == ["b0", "b1", "b2", "b3"]  # one whole file, never mixed
    assert "does not match its commit marker" in caplog.text


def test_rejects_and_input_on_s3(s3_root: str, tmp_path: Path) -> None:
    out = open_storage(f"{s3_root}/out")
    rejects = pd.DataFrame({"track_id": ["bad"], "row_number": [3], "reason": ["malformed id"]})
    loaded_at = datetime(2024, 5, 1, tzinfo=UTC)
    uri = write_rejects(rejects_for_contract(rejects, "r1", loaded_at), out, D1, run_id="r1")
    assert uri == f"{s3_root}/out/rejects/date=2024-05-01/part-0.parquet"
    back = load_enriched(out, D1, "rejects")  # through its commit marker, like every dataset
    assert back["reason"].tolist() == ["malformed id"] and back["run_id"].tolist() == ["r1"]
    inp = open_storage(f"{s3_root}/in")
    for i, ids in enumerate([[A, "junk"], [B]]):
        buf = io.BytesIO()
        pq.write_table(pa.table({"track_id": ids}), buf)
        inp.write_bytes(f"part-{i}.parquet", buf.getvalue())
    inp.write_bytes("_SUCCESS", b"")
    batch = read_input(f"{s3_root}/in")
    assert batch.rows["spotify_id"].tolist() == [A, B]
    assert batch.rejects["reason"].tolist() == ["malformed id"]
    assert batch.files == [f"{s3_root}/in/part-0.parquet", f"{s3_root}/in/part-1.parquet"]
    one = read_input(f"{s3_root}/in/part-1.parquet")
    assert one.rows["spotify_id"].tolist() == [B]


# -- the lease lock ---------------------------------------------------------------------------


def test_second_run_is_locked_out_then_gets_the_lock_after_release(s3_root: str) -> None:
    store = open_storage(f"{s3_root}/state")
    assert isinstance(store, ObjectStorage)
    with lock_state_dir(store, lock_wait_s=0, lease_s=60) as held:
        assert held.locked
        with pytest.raises(StateLockedError, match=r"another run holds s3://.*\.lock"):
            LeaseLock(store, lock_wait_s=0, lease_s=60).__enter__()
    assert not store.exists(LOCK_NAME)
    with LeaseLock(store, lock_wait_s=0, lease_s=60) as again:
        assert again.took_over is None


def test_stale_lease_of_a_killed_run_is_taken_over(s3_root: str) -> None:
    store = open_storage(f"{s3_root}/state")
    assert isinstance(store, ObjectStorage)
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    dead = LeaseLock(store, lock_wait_s=0, lease_s=60, clock=clock, heartbeat=False)
    dead.__enter__()  # and never leaves: the pod was killed
    clock.advance(seconds=59)
    with pytest.raises(StateLockedError, match="lease until"):
        LeaseLock(store, lock_wait_s=0, lease_s=60, clock=clock).__enter__()
    clock.advance(seconds=2)
    with LeaseLock(store, lock_wait_s=0, lease_s=60, clock=clock, heartbeat=False) as successor:
        assert successor.took_over is not None
        assert successor.took_over["owner"] == dead.owner
    assert not store.exists(LOCK_NAME)


def test_heartbeat_notices_a_lost_lease(s3_root: str) -> None:
    store = open_storage(f"{s3_root}/state")
    assert isinstance(store, ObjectStorage)
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    slow = LeaseLock(store, lock_wait_s=0, lease_s=60, clock=clock, heartbeat=False)
    slow.__enter__()
    clock.advance(seconds=120)  # paused past its lease
    thief = LeaseLock(store, lock_wait_s=0, lease_s=60, clock=clock, heartbeat=False)
    thief.__enter__()
    slow._renew()
    assert slow.lost is not None and "lost the state lock" in str(slow.lost)
    with pytest.raises(StateLockLostError, match="lost the state lock"):
        slow.__exit__(None, None, None)
    assert store.exists(LOCK_NAME)  # the thief's lock is left alone
    thief.__exit__(None, None, None)
    assert not store.exists(LOCK_NAME)
    assert clock.now - datetime(2026, 1, 1, tzinfo=UTC) == timedelta(seconds=120)
