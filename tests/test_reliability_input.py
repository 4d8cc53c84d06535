"""Bad input through the CLI: a clear one-line error (exit 2, 5 for an unusable state dir)
or rows in the rejects file; never a traceback, never a silently dropped row.

The reader's own unit tests (tests/test_reader.py) cover each rule in depth; these go
through ``pipeline.cli.main`` end to end, the way cron and Airflow call the job. (The
tests run as root here, so "not writable" is made with a path under a regular file,
which fails for every user.)
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.io.writer import load_enriched
from tests.conftest import fast_config_toml
from tests.reliability_support import RUN_DATE, catalog_ids, one_line_error

pytestmark = pytest.mark.integration

NOWHERE = "http://127.0.0.1:9"  # never called: these inputs fail before any request


def _run(tmp_path: Path, inp: Path, url: str = NOWHERE, *extra: str, out=None, state=None):
    cfg = fast_config_toml(tmp_path / "settings.toml")
    argv = [
        "run",
        "--input",
        str(inp),
        "--output",
        str(out or tmp_path / "out"),
        "--state-dir",
        str(state or tmp_path / "state"),
        "--base-url",
        url,
        "--config",
        str(cfg),
        "--date",
        RUN_DATE,
        "--no-progress",
        "-q",
        *extra,
    ]
    return main(argv)


def _pq(path: Path, table: pa.Table | pd.DataFrame) -> Path:
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


GOOD = "4uLU6hMCjMI75M1A2tKUQC"


def _input_error_cases(tmp: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    (tmp / "text.parquet").write_text("spotify_track_id\n" + GOOD + "\n")
    (tmp / "empty.parquet").write_bytes(b"")
    mixed = tmp / "mixed"
    _pq(mixed / "a.parquet", pa.table({"track_id": [GOOD], "n": pa.array([1], pa.int64())}))
    _pq(mixed / "b.parquet", pa.table({"track_id": [GOOD], "n": pa.array([[1]])}))
    all_bad = pd.DataFrame({"track_id": [None, "nope", "spotify:album:" + GOOD]})
    return {
        "missing file": (tmp / "absent.parquet", ("does not exist",)),
        "not parquet": (tmp / "text.parquet", ("not a readable Parquet",)),
        "empty file": (tmp / "empty.parquet", ("not a readable Parquet",)),
        "no rows": (
            _pq(tmp / "norows.parquet", pa.table({"track_id": pa.array([], pa.string())})),
            ("no rows",),
        ),
        "no id column": (
            _pq(tmp / "noid.parquet", pd.DataFrame({"song": [GOOD]})),
            ("no ID column",),
        ),
        "several candidates": (
            _pq(tmp / "two.parquet", pd.DataFrame({"track_id": [GOOD], "uri": [GOOD]})),
            ("several candidate ID columns",),
        ),
        "wrong id type": (
            _pq(tmp / "ints.parquet", pd.DataFrame({"track_id": [1, 2]})),
            ("has type int64",),
        ),
        "directory mixing schemas": (mixed, ("incompatible types",)),
        "no valid id at all": (_pq(tmp / "allbad.parquet", all_bad), ("no valid track IDs",)),
    }


CASES = [
    "missing file",
    "not parquet",
    "empty file",
    "no rows",
    "no id column",
    "several candidates",
    "wrong id type",
    "directory mixing schemas",
    "no valid id at all",
]


@pytest.mark.parametrize("case", CASES)
def test_unusable_input_is_one_line_exit_2(tmp_path, capsys, case):
    inp, words = _input_error_cases(tmp_path)[case]
    rc = _run(tmp_path, inp)
    one_line_error(capsys, rc, 2, *words)
    assert not list((tmp_path / "state").glob("*.parquet"))  # nothing fetched, nothing kept


def test_bad_rows_go_to_rejects_never_dropped(tmp_path, capsys, simulator):
    ids = catalog_ids(0, 0)[:30]
    bad = [
        None,
        "",
        "not-an-id",
        "spotify:album:" + ids[0],
        "https://open.spotify.com/artist/" + ids[1],
        "spotify:playlist:" + ids[2],
        "x" * 5_000_000,  # huge string
        ids[3] + "\udcff".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
    ]
    values = ids + ids[:5] + bad  # duplicate rows too
    raw = pa.array([None if v is None else v.encode() for v in values], pa.binary())
    # one non-UTF-8 byte string among them
    raw = pa.concat_arrays([raw, pa.array([b"\xff\xfe" + ids[4].encode()], pa.binary())])
    pids = pa.array([f"../../etc/{i % 3}" for i in range(len(raw))])  # a value, not a path
    inp = _pq(tmp_path / "in.parquet", pa.table({"track_id": raw, "playlist_id": pids}))

    rc = _run(tmp_path, inp, simulator.url)
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "Traceback" not in err
    out = tmp_path / "out"
    tracks = load_enriched(out, RUN_DATE)
    rejects = pd.read_parquet(next((out / "rejects").rglob("*.parquet")))
    assert len(tracks) == len(ids) + 5  # every valid row, duplicates included
    assert len(tracks) + len(rejects) == len(raw)  # nothing dropped
    assert sorted(set(tracks["row_number"]) | set(rejects["row_number"])) == list(range(len(raw)))
    assert rejects["reason"].notna().all()
    # the playlist id stayed a value: nothing was created outside the output dir
    assert set(tracks["playlist_id"]) == {"../../etc/0", "../../etc/1", "../../etc/2"}
    made = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*")}
    assert made <= {"out", "state", "in.parquet", "settings.toml"}


def test_a_million_duplicate_ids_cost_one_call(tmp_path, capsys, simulator):
    the_id = catalog_ids(0, 0)[0]
    inp = _pq(tmp_path / "dup.parquet", pa.table({"track_id": pa.array([the_id] * 1_000_000)}))
    t0 = time.monotonic()
    rc = _run(tmp_path, inp, simulator.url, "--no-recommendations")
    took = time.monotonic() - t0
    err = capsys.readouterr().err
    assert rc == 0, err
    counts = simulator.counters()["by_endpoint"]
    assert counts["tracks"]["requests"] == 1
    assert counts["audio_features"]["requests"] <= 1
    tracks = pq.read_table(next((tmp_path / "out" / "tracks").rglob("*.parquet")))
    assert tracks.num_rows == 1_000_000
    print(f"1M duplicate rows: {took:.1f}s")


def test_output_dir_not_writable_fails_before_any_request(tmp_path, capsys, simulator):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    inp = _pq(tmp_path / "in.parquet", pd.DataFrame({"track_id": catalog_ids(0, 0)[:5]}))
    rc = _run(tmp_path, inp, simulator.url, out=blocker / "out")
    one_line_error(capsys, rc, 2, "output")
    assert simulator.counters()["requests_total"] == 0


def test_state_dir_on_unusable_path_is_exit_5(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    inp = _pq(tmp_path / "in.parquet", pd.DataFrame({"track_id": [GOOD]}))
    rc = _run(tmp_path, inp, state=blocker / "state")
    one_line_error(capsys, rc, 5, "state dir")


def test_corrupt_registry_is_quarantined_and_rebuilt(tmp_path, capsys, caplog, simulator):
    state = tmp_path / "state"
    state.mkdir()
    (state / "registry.parquet").write_bytes(b"PAR1 this is not a parquet file PAR1")
    (state / "learned_rate.json").write_text("{not json")
    ids = catalog_ids(0, 0)[:50]
    inp = _pq(tmp_path / "in.parquet", pd.DataFrame({"track_id": ids}))
    rc = _run(tmp_path, inp, simulator.url)
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "Traceback" not in err
    assert "quarantined" in caplog.text  # a warning (stderr under the CLI's logging)
    assert list(state.glob("registry.parquet.corrupt-*"))
    assert pq.read_table(state / "registry.parquet").num_rows == 50
