"""Issue 12: outputs stable across days (the schema contract, ``pipeline/io/contract.py``).

Three days whose inputs drift (a column added, one removed, ``playlist_id`` a string, then
an integer, then absent; ``genre`` a string, then an integer) are published, and every date
is read back with pandas, ``pyarrow.dataset``, DuckDB and ``load_enriched``: same columns,
same types, every row, every input value in ``input_extra``. Every row names its run and
load time; every partition has a manifest that ``load_enriched`` checks.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipeline.io.contract import RECOMMENDATIONS_SCHEMA, TRACKS_SCHEMA
from pipeline.io.manifest import MANIFEST_FILE, schema_fingerprint
from pipeline.io.writer import load_enriched
from pipeline.orchestrator import run_job
from pipeline.simulator import SimulatorServer
from tests.conftest import SAMPLE_INPUT, job_settings

pytestmark = pytest.mark.integration

DAYS = [date(2025, 3, 1), date(2025, 3, 2), date(2025, 3, 3)]


def drifting_inputs(tmp_path: Path) -> list[Path]:
    base = pd.read_parquet(SAMPLE_INPUT)[["track_id", "playlist_id"]].head(60)
    day1 = base.assign(genre="pop")  # playlist_id str, genre str
    day2 = base.assign(playlist_id=base.index // 10, plays=range(60))  # int ids, no genre
    day3 = base.drop(columns=["playlist_id"]).assign(genre=7)  # no playlist_id, genre int
    paths = []
    for i, frame in enumerate((day1, day2, day3)):
        paths.append(tmp_path / f"in{i}.parquet")
        frame.to_parquet(paths[-1], index=False)
    return paths


@pytest.fixture
def published(tmp_path: Path, simulator: SimulatorServer) -> tuple[Path, list[str]]:
    run_ids = []
    for day, inp in zip(DAYS, drifting_inputs(tmp_path), strict=True):
        report = run_job(job_settings(tmp_path, simulator.url, input=inp), day)
        assert report.status == "ok"
        run_ids.append(report.run_id)
    return tmp_path / "output", run_ids


def test_every_reader_reads_every_drifting_day(published: tuple[Path, list[str]]) -> None:
    out, run_ids = published
    names = [*TRACKS_SCHEMA.names, "date"]

    frame = pd.read_parquet(out / "tracks")
    assert list(frame.columns) == names and len(frame) == 180
    extra = frame["input_extra"].map(json.loads)
    by_day = {d: extra[frame["date"].astype(str) == d.isoformat()] for d in DAYS}
    assert all(e["genre"] == "pop" and "plays" not in e for e in by_day[DAYS[0]])
    assert all(isinstance(e["plays"], int) and "genre" not in e for e in by_day[DAYS[1]])
    assert all(e["genre"] == 7 and "playlist_id" not in e for e in by_day[DAYS[2]])
    assert frame.loc[frame["date"].astype(str) == "2025-03-02", "playlist_id"].iloc[0] == "0"
    assert frame.loc[frame["date"].astype(str) == "2025-03-03", "playlist_id"].isna().all()

    table = ds.dataset(out / "tracks", format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 180 and table.schema.names == names
    assert table.schema.field("loaded_at").type == pa.timestamp("us", tz="UTC")

    con = duckdb.connect()
    glob = str(out / "tracks" / "*" / "*.parquet")
    rows, runs, genres = con.execute(
        "SELECT count(*), count(DISTINCT run_id), "
        "count(*) FILTER (WHERE json_extract_string(input_extra, '$.genre') IS NOT NULL) "
        f"FROM read_parquet('{glob}', hive_partitioning = true)"
    ).fetchone()
    assert (rows, runs, genres) == (180, 3, 120)

    loaded = load_enriched(out)
    assert len(loaded) == 180 and set(loaded["run_id"]) == set(run_ids)
    assert loaded["loaded_at"].notna().all()

    recs = pd.read_parquet(out / "recommendations")
    assert list(recs.columns) == [*RECOMMENDATIONS_SCHEMA.names, "date"]
    assert set(recs["run_id"]) <= set(run_ids)
    assert ds.dataset(out / "recommendations", partitioning="hive").to_table().num_rows == len(recs)


def test_file_names_are_the_same_in_every_dataset(published: tuple[Path, list[str]]) -> None:
    out, _ = published
    for dataset in ("tracks", "recommendations", "rejects"):
        for day in DAYS:
            part = out / dataset / f"date={day.isoformat()}"
            assert [p.name for p in part.glob("*.parquet")] == ["part-0.parquet"], part


def test_each_partition_has_a_manifest_that_load_enriched_checks(
    published: tuple[Path, list[str]],
) -> None:
    out, run_ids = published
    part = out / "tracks" / "date=2025-03-02"
    content = json.loads((part / MANIFEST_FILE).read_text())["content"]
    table = pq.read_table(part / "part-0.parquet")
    assert content["run_id"] == run_ids[1] and content["rows"] == table.num_rows == 60
    assert content["schema_fingerprint"] == schema_fingerprint(table.schema)
    assert sum(content["status_counts"].values()) == 60

    pq.write_table(table.slice(0, 10), part / "part-0.parquet")  # replaced by hand
    with pytest.raises(ValueError, match="10 rows, but its manifest"):
        load_enriched(out)


def test_a_binary_input_column_with_invalid_utf8_is_published_as_text(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """Invalid bytes in a passed-through column used to fail the JSON encoder at publish,
    after every request was spent: exit 1, nothing published."""
    base = pd.read_parquet(SAMPLE_INPUT)[["track_id"]].head(3)
    blobs = pa.array([b"\xff\xfe", b"plain", None], pa.binary())
    inp = tmp_path / "in.parquet"
    table = pa.Table.from_pandas(base, preserve_index=False).append_column("blob", blobs)
    pq.write_table(table, inp)
    report = run_job(job_settings(tmp_path, simulator.url, input=inp), DAYS[0])
    assert report.status == "ok"
    tracks = load_enriched(tmp_path / "output", DAYS[0]).sort_values("row_number")
    extra = [json.loads(x) for x in tracks["input_extra"]]
    assert [e["blob"] for e in extra] == ["\ufffd\ufffd", "plain", None]
