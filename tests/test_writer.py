"""Writer: typed datasets pandas can load, atomic date partitions, load_enriched."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.io import publish_local
from pipeline.io.reader import read_input
from pipeline.io.schemas import (
    FEATURE_COLUMNS,
    RECOMMENDATION_SCHEMA,
    TRACK_COLUMNS,
    tracks_schema,
)
from pipeline.io.writer import load_enriched, write_partition

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "tracks.parquet"
D1, D2 = date(2024, 5, 1), date(2024, 5, 2)
INPUT_SCHEMA = pa.schema([("track_id", pa.string()), ("plays", pa.int32())])
TRACKS = tracks_schema(INPUT_SCHEMA)


def tracks_frame(n: int = 3, status: str = "ok") -> pd.DataFrame:
    """Enriched rows as a stage would build them: some values missing."""
    frame = pd.DataFrame(
        {
            "track_id": [f"id{i}" for i in range(n)],
            "plays": pd.array([i if i else None for i in range(n)], dtype="Int32"),
            "row_number": range(n),
            "spotify_id": [f"id{i}" for i in range(n)],
            "reccobeats_id": [f"rb-{i}" for i in range(n)],
            "status": [status] * n,
            "title": ["Song"] * n,
            "artists": [["A", "B"], [], None][:n] + [["C"]] * max(0, n - 3),
            "duration_ms": pd.array([200_000, None, 1][:n] + [5] * max(0, n - 3), dtype="Int64"),
            "popularity": [50] * n,
            "isrc": [None] * n,
        }
    )
    for name in FEATURE_COLUMNS:
        frame[name] = [0.5] * n
    frame["key"] = pd.array([5, None, 0][:n] + [1] * max(0, n - 3), dtype="Int64")
    frame["mode"] = [1] * n
    return frame


def recommendations_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "playlist_id": ["../../etc", "p2"],
            "seed_spotify_ids": [["s1", "s2"], ["s3"]],
            "rank": [1, 2],
            "reccobeats_id": ["rb-1", "rb-2"],
            "spotify_id": ["x1", None],
            "title": ["T", None],
            "artists": [["A"], []],
            "duration_ms": [1000, None],
            "popularity": [None, 3],
        }
    )


def names(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


# -- schemas ------------------------------------------------------------------------------------


def test_tracks_schema_appends_pipeline_columns() -> None:
    assert TRACKS.names == ["track_id", "plays", *TRACK_COLUMNS]
    assert TRACKS.field("plays").type == pa.int32()
    assert TRACKS.field("artists").type == pa.list_(pa.string())
    assert TRACKS.field("key").type == pa.int64() and TRACKS.field("tempo").type == pa.float64()
    with pytest.raises(ValueError, match="clash"):
        tracks_schema(pa.schema([("status", pa.string())]))


def test_tracks_read_back_with_plain_pandas(tmp_path: Path) -> None:
    write_partition(tracks_frame(), tmp_path, "tracks", D1, TRACKS)
    back = pd.read_parquet(tmp_path / "tracks")
    dtypes = back.dtypes.astype(str).to_dict()
    assert dtypes["plays"] == "Int32"
    for col in ("row_number", "duration_ms", "popularity", "key", "mode"):
        assert dtypes[col] == "Int64", col
    for col in ("spotify_id", "reccobeats_id", "status", "title", "isrc"):
        assert pd.api.types.is_string_dtype(back[col]), col
    for col in set(FEATURE_COLUMNS) - {"key", "mode"}:
        assert dtypes[col] == "float64", col
    assert dtypes["artists"] == "object"
    assert isinstance(back["date"].dtype, pd.CategoricalDtype)  # hive key, documented
    assert back["date"].astype(str).tolist() == ["2024-05-01"] * 3
    assert back["duration_ms"].isna().tolist() == [False, True, False]
    assert back["key"].tolist()[0] == 5 and back["key"].isna().tolist() == [False, True, False]
    assert [None if a is None else list(a) for a in back["artists"]] == [["A", "B"], [], None]
    # no column holds mixed Python types
    for col in back.columns:
        if back[col].dtype == object:
            kinds = {type(v).__name__ for v in back[col].dropna()}
            assert len(kinds) <= 1, (col, kinds)


def test_recommendations_read_back_with_plain_pandas(tmp_path: Path) -> None:
    write_partition(recommendations_frame(), tmp_path, "recommendations", D1, RECOMMENDATION_SCHEMA)
    back = pd.read_parquet(tmp_path / "recommendations")
    dtypes = back.dtypes.astype(str).to_dict()
    assert dtypes["rank"] == "Int32"
    assert dtypes["duration_ms"] == dtypes["popularity"] == "Int64"
    assert pd.api.types.is_string_dtype(back["playlist_id"])
    assert [list(s) for s in back["seed_spotify_ids"]] == [["s1", "s2"], ["s3"]]
    assert (
        pq.read_schema(tmp_path / "recommendations" / "date=2024-05-01" / "part-0.parquet")
        .remove_metadata()
        .equals(RECOMMENDATION_SCHEMA)
    )
    # a hostile playlist id is a value, never a path
    assert back["playlist_id"].tolist()[0] == "../../etc"
    assert names(tmp_path) == ["recommendations"]


def test_load_enriched_dtypes_and_lists(tmp_path: Path) -> None:
    write_partition(tracks_frame(), tmp_path, "tracks", D1, TRACKS)
    write_partition(tracks_frame(4), tmp_path, "tracks", D2, TRACKS)
    every = load_enriched(tmp_path)
    assert len(every) == 7
    assert str(every["date"].dtype) == "datetime64[ns]"
    assert every["date"].dt.date.unique().tolist() == [D1, D2]
    assert str(every["duration_ms"].dtype) == "Int64" and str(every["plays"].dtype) == "Int32"
    assert every["artists"].tolist()[:3] == [["A", "B"], [], None]
    assert all(isinstance(a, list) for a in every["artists"].dropna())
    one = load_enriched(tmp_path, "2024-05-02")
    assert len(one) == 4 and set(one["date"].dt.date) == {D2}
    assert len(load_enriched(str(tmp_path), D1)) == 3
    recs = tmp_path
    write_partition(recommendations_frame(), recs, "recommendations", D1, RECOMMENDATION_SCHEMA)
    back = load_enriched(recs, D1, dataset="recommendations")
    assert back["seed_spotify_ids"].tolist() == [["s1", "s2"], ["s3"]]
    assert str(back["rank"].dtype) == "Int32"


def test_load_enriched_unifies_days_with_different_input_columns(tmp_path: Path) -> None:
    write_partition(tracks_frame(), tmp_path, "tracks", D1, TRACKS)
    other = tracks_schema(pa.schema([("track_id", pa.string()), ("genre", pa.string())]))
    frame = tracks_frame(1).drop(columns="plays").assign(genre=["rock"])
    write_partition(frame, tmp_path, "tracks", D2, other)
    every = load_enriched(tmp_path)
    assert {"plays", "genre"} <= set(every.columns)
    assert every["genre"].tolist()[-1] == "rock" and every["plays"].isna().iloc[-1]


def test_load_enriched_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_enriched(tmp_path)
    write_partition(tracks_frame(), tmp_path, "tracks", D1, TRACKS)
    with pytest.raises(FileNotFoundError):
        load_enriched(tmp_path, D2)


def test_arrow_table_input_and_missing_columns_become_nulls(tmp_path: Path) -> None:
    table = pa.table({"track_id": ["a"], "spotify_id": ["a"], "status": ["not_found"]})
    write_partition(table, tmp_path, "tracks", D1, TRACKS)
    back = load_enriched(tmp_path, D1)
    assert back["status"].tolist() == ["not_found"]
    assert back["duration_ms"].isna().all() and str(back["duration_ms"].dtype) == "Int64"


def test_end_to_end_from_reader(tmp_path: Path) -> None:
    batch = read_input(SAMPLE)
    rows = batch.rows.assign(status="not_found")
    write_partition(rows, tmp_path, "tracks", D1, tracks_schema(batch.schema))
    back = pd.read_parquet(tmp_path / "tracks")
    assert len(back) == len(batch.rows)
    assert back["spotify_id"].tolist() == batch.rows["spotify_id"].tolist()


# -- bad calls ---------------------------------------------------------------------------------


def test_rejects_unknown_columns_statuses_and_dataset_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not in the output schema"):
        write_partition(tracks_frame().assign(oops=1), tmp_path, "tracks", D1, TRACKS)
    with pytest.raises(ValueError, match="unknown status 'done'"):
        write_partition(tracks_frame(status="done"), tmp_path, "tracks", D1, TRACKS)
    with pytest.raises(ValueError, match="does not fit type"):
        bad = tracks_frame().assign(duration_ms=["x", "y", "z"])
        write_partition(bad, tmp_path, "tracks", D1, TRACKS)
    for name in ("../x", "Tracks", "", "a/b"):
        with pytest.raises(ValueError, match="dataset name"):
            write_partition(tracks_frame(), tmp_path, name, D1, TRACKS)
    with pytest.raises(ValueError, match="partition key"):
        write_partition(pd.DataFrame(), tmp_path, "x", D1, pa.schema([("date", pa.string())]))
    assert not (tmp_path / "tracks").exists() or names(tmp_path / "tracks") == []


# -- atomic partitions --------------------------------------------------------------------------


def test_rerun_replaces_only_that_date(tmp_path: Path) -> None:
    write_partition(tracks_frame(3), tmp_path, "tracks", D1, TRACKS)
    write_partition(tracks_frame(2), tmp_path, "tracks", D2, TRACKS)
    write_partition(tracks_frame(5, status="failed"), tmp_path, "tracks", D1, TRACKS)
    back = pd.read_parquet(tmp_path / "tracks")
    counts = back.groupby("date", observed=True).size().to_dict()
    assert counts == {"2024-05-01": 5, "2024-05-02": 2}
    assert set(back.loc[back["date"] == "2024-05-01", "status"]) == {"failed"}
    assert set(back.loc[back["date"] == "2024-05-02", "status"]) == {"ok"}
    assert names(tmp_path / "tracks") == ["date=2024-05-01", "date=2024-05-02"]
    assert names(tmp_path / "tracks" / "date=2024-05-01") == ["_manifest.json", "part-0.parquet"]


def test_failure_before_swap_keeps_old_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_partition(tracks_frame(3), tmp_path, "tracks", D1, TRACKS)

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(publish_local.pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        write_partition(tracks_frame(5), tmp_path, "tracks", D1, TRACKS)
    monkeypatch.undo()
    assert len(pd.read_parquet(tmp_path / "tracks")) == 3
    assert names(tmp_path / "tracks") == ["date=2024-05-01"]  # temp dir cleaned up


def test_failure_during_swap_restores_old_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The switch is one atomic step (``io/exchange.py``): when it fails, nothing moved."""
    from pipeline.io import exchange

    write_partition(tracks_frame(3), tmp_path, "tracks", D1, TRACKS)

    def failing(*args: object, **kwargs: object) -> None:
        raise OSError("rename failed")

    monkeypatch.setattr(exchange, "exchange", failing)
    monkeypatch.setattr(exchange.os, "replace", failing)
    with pytest.raises(OSError, match="rename failed"):
        write_partition(tracks_frame(5), tmp_path, "tracks", D1, TRACKS)
    monkeypatch.undo()
    assert len(pd.read_parquet(tmp_path / "tracks")) == 3
    assert names(tmp_path / "tracks") == ["date=2024-05-01"]


def dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout)


def test_stale_dirs_of_killed_runs_are_recovered(tmp_path: Path) -> None:
    write_partition(tracks_frame(3), tmp_path, "tracks", D1, TRACKS)
    root = tmp_path / "tracks"
    pid = dead_pid()
    # killed mid-write: a half temp dir
    half = root / f".tmp-date=2024-05-03-{pid}-{'a' * 32}"
    half.mkdir()
    (half / "part-0.parquet").write_bytes(b"PAR1 truncated")
    # killed between the two renames: D1 moved aside, new one never renamed in
    os.rename(root / "date=2024-05-01", root / f".old-date=2024-05-01-{pid}-{'b' * 32}")
    assert not any(root.glob("date=*"))
    # a live writer's temp dir (this process) is left alone
    live = root / f".tmp-date=2024-05-04-{os.getpid()}-{'c' * 32}"
    live.mkdir()

    write_partition(tracks_frame(2), tmp_path, "tracks", D2, TRACKS)
    assert names(root) == [live.name, "date=2024-05-01", "date=2024-05-02"]
    counts = pd.read_parquet(root).groupby("date", observed=True).size().to_dict()
    assert counts == {"2024-05-01": 3, "2024-05-02": 2}


def test_no_temp_dirs_visible_after_write(tmp_path: Path) -> None:
    for _ in range(3):
        write_partition(tracks_frame(), tmp_path, "tracks", D1, TRACKS)
    assert [p.name for p in (tmp_path / "tracks").iterdir()] == ["date=2024-05-01"]
    assert len(pd.read_parquet(tmp_path / "tracks")) == 3


def test_hidden_dirs_are_ignored_by_pandas(tmp_path: Path) -> None:
    write_partition(tracks_frame(), tmp_path, "tracks", D1, TRACKS)
    for hidden in (".tmp-date=2024-05-09-1-x", "_old-date=2024-05-09"):
        (tmp_path / "tracks" / hidden).mkdir()
        pq.write_table(pa.table({"junk": [1]}), tmp_path / "tracks" / hidden / "part-0.parquet")
    back = pd.read_parquet(tmp_path / "tracks")
    assert len(back) == 3 and "junk" not in back.columns
    assert len(load_enriched(tmp_path)) == 3


def test_tracks_schema_from_reader_rows_matches_input_schema() -> None:
    batch = read_input(SAMPLE)
    from_rows = tracks_schema(batch.rows)
    assert from_rows.names == tracks_schema(batch.schema).names
    assert pa.types.is_string(from_rows.field("track_id").type) or pa.types.is_large_string(
        from_rows.field("track_id").type
    )


def test_stale_temp_files_of_killed_runs_are_swept(tmp_path: Path) -> None:
    from pipeline.io.writer import STALE_AFTER_S, sweep_stale_temp_files

    runs = tmp_path / "runs"
    rejects = tmp_path / "rejects" / "date=2026-11-20"
    runs.mkdir(parents=True)
    rejects.mkdir(parents=True)
    old_report = runs / ".r1.json.abc123.tmp"
    old_rejects = rejects / ".rejects.parquet.tmp-0f0f"
    young = runs / ".r2.json.def456.tmp"  # may be a live run's write: kept
    kept = runs / "r0.json"  # a real report: never touched
    for p in (old_report, old_rejects, young, kept):
        p.write_bytes(b"x")
    past = time.time() - STALE_AFTER_S - 60
    for p in (old_report, old_rejects, kept):
        os.utime(p, (past, past))
    removed = sweep_stale_temp_files(tmp_path)
    assert sorted(removed) == sorted([old_report, old_rejects])
    assert young.exists() and kept.exists()
