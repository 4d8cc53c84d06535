"""Reader: every input row lands in rows or rejects; whole-input problems are InputErrors."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import InputError
from pipeline.io.contract import REJECTS_COLUMNS, rejects_for_contract
from pipeline.io.manifest import MANIFEST_FILE
from pipeline.io.reader import InputBatch, check_playlist_column, read_input
from pipeline.io.writer import load_enriched, write_rejects

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "tracks.parquet"
A = "21qnJAMtzC6S5SESuqQLEK"
B = "0eVZhPIexAYqdwKNqSp3Qm"
C = "0EQknhinIfbJ12hwMGjOY5"


def write(path: Path, table: pa.Table | dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table if isinstance(table, pa.Table) else pa.table(table), path)
    return path


def assert_complete(batch: InputBatch, n_input: int) -> None:
    """No row silently dropped: row numbers of rows + rejects are exactly 0..n-1."""
    assert len(batch.rows) + len(batch.rejects) == n_input
    numbers = sorted([*batch.rows["row_number"], *batch.rejects["row_number"]])
    assert numbers == list(range(n_input))


# -- the bundled sample -----------------------------------------------------------------------


def test_sample_valid_rows_and_three_rejects() -> None:
    batch = read_input(SAMPLE)
    raw = pd.read_parquet(SAMPLE)
    assert_complete(batch, len(raw))
    assert (len(batch.rows), len(batch.rejects)) == (len(raw) - 3, 3)
    assert sorted(batch.rejects["reason"]) == [
        "malformed id",
        "not a Spotify track id (album)",
        "null id",
    ]
    assert batch.id_column == "track_id" and batch.files == [SAMPLE] and batch.renamed == {}
    # every input column kept, ours appended
    assert list(batch.rows.columns) == [*raw.columns, "row_number", "spotify_id"]
    assert list(batch.rejects.columns) == [*raw.columns, "row_number", "reason"]
    assert batch.rows["row_number"].dtype == "int64"
    assert batch.rows["spotify_id"].str.fullmatch(r"[0-9A-Za-z]{22}").all()
    # URIs and ?si= URLs normalised, duplicates kept
    uri_rows = batch.rows[batch.rows["track_id"].str.startswith(("spotify:", "https:"))]
    assert len(uri_rows) > 0
    assert (uri_rows["spotify_id"] != uri_rows["track_id"]).all()
    dup = batch.rows[batch.rows["spotify_id"] == "21qnJAMtzC6S5SESuqQLEK"]
    assert len(dup) == 2
    assert batch.schema.names == list(raw.columns)


def test_valid_rows_keep_input_order_and_values() -> None:
    batch = read_input(SAMPLE)
    assert batch.rows["row_number"].is_monotonic_increasing
    raw = pd.read_parquet(SAMPLE)
    merged = raw.iloc[batch.rows["row_number"]].reset_index(drop=True)
    pd.testing.assert_series_equal(merged["track_name"], batch.rows["track_name"])


# -- whole-input errors -----------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_input(tmp_path / "nope.parquet")


def test_csv_renamed_to_parquet(tmp_path: Path) -> None:
    bad = tmp_path / "tracks.parquet"
    bad.write_text("track_id\n21qnJAMtzC6S5SESuqQLEK\n")
    with pytest.raises(InputError, match=r"tracks\.parquet is not a readable Parquet file"):
        read_input(bad)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.parquet").write_bytes(b"")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        read_input(tmp_path / "e.parquet")


def test_zero_rows(tmp_path: Path) -> None:
    f = write(tmp_path / "z.parquet", pa.table({"track_id": pa.array([], pa.string())}))
    with pytest.raises(InputError, match="no rows in"):
        read_input(f)


def test_directory_without_parquet_files(tmp_path: Path) -> None:
    (tmp_path / "tracks.csv").write_text("track_id\n")
    write(tmp_path / ".hidden.parquet", {"track_id": [A]})
    with pytest.raises(InputError, match="no Parquet files"):
        read_input(tmp_path)


def test_directory_of_empty_files(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write(tmp_path / f"{name}.parquet", pa.table({"track_id": pa.array([], pa.string())}))
    with pytest.raises(InputError, match="no rows in"):
        read_input(tmp_path)


def test_no_id_column_lists_columns_and_accepted_names(tmp_path: Path) -> None:
    f = write(tmp_path / "t.parquet", {"song": [A], "artist": ["x"]})
    with pytest.raises(InputError) as err:
        read_input(f)
    message = str(err.value)
    assert "['song', 'artist']" in message
    for name in ("spotify_track_id", "track_id", "spotify_id", "uri", "url"):
        assert name in message
    assert "\n" not in message


def test_several_candidate_columns_need_id_column(tmp_path: Path) -> None:
    f = write(tmp_path / "t.parquet", {"track_id": [A], "uri": [f"spotify:track:{B}"]})
    with pytest.raises(InputError, match=r"several candidate ID columns.*--id-column"):
        read_input(f)
    batch = read_input(f, id_column="uri")
    assert batch.id_column == "uri" and batch.rows["spotify_id"].tolist() == [B]


def test_configured_id_column_missing(tmp_path: Path) -> None:
    f = write(tmp_path / "t.parquet", {"track_id": [A]})
    with pytest.raises(InputError, match=r"'isrc'.*not in"):
        read_input(f, id_column="isrc")


def test_non_text_id_column(tmp_path: Path) -> None:
    f = write(tmp_path / "t.parquet", {"track_id": pa.array([1, 2], pa.int64())})
    with pytest.raises(InputError, match="id column 'track_id' has type int64"):
        read_input(f)


def test_a_float_playlist_column_of_whole_numbers_is_read_as_integers(tmp_path: Path) -> None:
    """What pandas writes for integer playlist IDs with a gap (7.0, NaN) was refused, and a
    7.0 would have grouped as "7.0" beside another day's "7"."""
    frame = pd.DataFrame({"track_id": [A, B, "bad"], "playlist_id": [7.0, float("nan"), 8.0]})
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    batch = read_input(tmp_path / "t.parquet")
    check_playlist_column(batch.schema)
    assert batch.schema.field("playlist_id").type == pa.int64()
    assert batch.rows["playlist_id"].tolist() == [7, pd.NA]
    assert batch.rejects["playlist_id"].tolist() == ["8"]


@pytest.mark.parametrize("values", [[7.5, 1.0], [2.0**60, 1.0]])
def test_a_float_playlist_column_that_is_not_exact_integers_is_refused(
    tmp_path: Path, values: list[float]
) -> None:
    f = write(tmp_path / "t.parquet", {"track_id": [A, B], "playlist_id": values})
    with pytest.raises(InputError, match=r"'playlist_id' has type double.*whole numbers"):
        check_playlist_column(read_input(f).schema)


def test_candidate_order_when_only_one_present(tmp_path: Path) -> None:
    f = write(
        tmp_path / "t.parquet", {"name": ["x"], "url": [f"https://open.spotify.com/track/{A}"]}
    )
    assert read_input(f).rows["spotify_id"].tolist() == [A]


# -- row-level problems become rejects --------------------------------------------------------


def test_bad_values_are_rejected_with_reasons(tmp_path: Path) -> None:
    values = [A, None, "", "spotify:artist:4aawyAB9vmqN3uQ7FjRGTy", "nope", "x" * 500, A]
    f = write(tmp_path / "t.parquet", {"track_id": values, "n": list(range(len(values)))})
    batch = read_input(f)
    assert_complete(batch, len(values))
    assert batch.rows["row_number"].tolist() == [0, 6]
    assert batch.rejects.set_index("row_number")["reason"].to_dict() == {
        1: "null id",
        2: "empty id",
        3: "not a Spotify track id (artist)",
        4: "malformed id",
        5: "too long",
    }
    # rejects carry every input column, as text
    assert batch.rejects["n"].tolist() == ["1", "2", "3", "4", "5"]


def test_all_null_column_rejects_every_row(tmp_path: Path) -> None:
    f = write(tmp_path / "t.parquet", {"track_id": pa.nulls(3), "n": [1, 2, 3]})
    batch = read_input(f)
    assert_complete(batch, 3)
    assert batch.rows.empty and set(batch.rejects["reason"]) == {"null id"}


def test_binary_id_column_is_decoded_and_bad_bytes_rejected(tmp_path: Path) -> None:
    ids = pa.array([A.encode(), b"\xff\xfe" + A.encode()[2:], None], pa.binary())
    f = write(tmp_path / "t.parquet", {"track_id": ids})
    batch = read_input(f)
    assert_complete(batch, 3)
    assert batch.rows["spotify_id"].tolist() == [A]
    assert batch.rows["track_id"].tolist() == [A.encode()]  # original value kept
    rejected = batch.rejects.set_index("row_number")
    assert rejected.loc[1, "reason"] == "malformed id"
    assert rejected.loc[1, "track_id"].startswith("\ufffd")
    assert rejected.loc[2, "reason"] == "null id"


def test_invalid_utf8_in_string_columns(tmp_path: Path) -> None:
    def bad_strings(values: list[bytes]) -> pa.Array:
        raw = pa.array(values, pa.binary())
        return pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())

    table = pa.table(
        {
            "track_id": bad_strings([A.encode(), b"\xc3(" * 11]),
            "name": bad_strings([b"\xff", b"ok"]),
        }
    )
    f = write(tmp_path / "t.parquet", table)
    batch = read_input(f)
    assert_complete(batch, 2)
    assert batch.rows["spotify_id"].tolist() == [A]
    assert batch.rows["name"].tolist() == ["\ufffd"]
    assert batch.rejects["reason"].tolist() == ["malformed id"]


def test_reserved_input_columns_are_renamed(tmp_path: Path) -> None:
    f = write(
        tmp_path / "t.parquet",
        {"spotify_id": [f"spotify:track:{A}"], "status": ["x"], "date": ["2020-01-01"]},
    )
    batch = read_input(f)
    assert batch.renamed == {
        "spotify_id": "input_spotify_id",
        "status": "input_status",
        "date": "input_date",
    }
    assert batch.id_column == "input_spotify_id"
    row = batch.rows.iloc[0]
    assert row["spotify_id"] == A and row["input_spotify_id"] == f"spotify:track:{A}"
    assert batch.schema.names == ["input_spotify_id", "input_status", "input_date"]


def test_pandas_index_column_dropped_and_types_kept(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {"track_id": [A, B], "plays": pd.array([1, None], dtype="Int64"), "live": [True, False]},
        index=[10, 20],
    )
    df.to_parquet(tmp_path / "t.parquet")  # stores __index_level_0__
    batch = read_input(tmp_path / "t.parquet")
    assert list(batch.rows.columns) == ["track_id", "plays", "live", "row_number", "spotify_id"]
    assert str(batch.rows["plays"].dtype) == "Int64" and batch.rows["plays"].isna().sum() == 1
    assert str(batch.rows["live"].dtype) == "boolean"
    assert batch.rows.index.tolist() == [0, 1]


def test_rejects_stringify_lists_and_numbers(tmp_path: Path) -> None:
    f = write(
        tmp_path / "t.parquet",
        {"track_id": ["bad"], "tags": pa.array([["a", "b"]]), "score": [1.5], "n": [None]},
    )
    rejects = read_input(f).rejects
    assert rejects.loc[0, "tags"] == "['a', 'b']"
    assert rejects.loc[0, "score"] == "1.5"
    assert pd.isna(rejects.loc[0, "n"])


# -- directories --------------------------------------------------------------------------------


def test_directory_of_several_files(tmp_path: Path) -> None:
    write(tmp_path / "b.parquet", {"track_id": [C, "bad"]})
    write(tmp_path / "a.parquet", {"track_id": [A, B]})
    write(tmp_path / "nested" / "c.parquet", {"track_id": [A]})
    write(tmp_path / "_tmp" / "x.parquet", {"track_id": [A]})  # hidden: ignored
    write(tmp_path / ".staging.parquet", {"track_id": [A]})  # hidden: ignored
    (tmp_path / "_SUCCESS").write_text("")
    batch = read_input(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in batch.files] == [
        "a.parquet",
        "b.parquet",
        "nested/c.parquet",
    ]
    assert_complete(batch, 5)
    assert batch.rows.sort_values("row_number")["spotify_id"].tolist() == [A, B, C, A]
    assert batch.rejects["row_number"].tolist() == [3]


def test_mixed_schemas_are_unified(tmp_path: Path) -> None:
    write(
        tmp_path / "1.parquet",
        pa.table({"track_id": [A], "plays": pa.array([1], pa.int32()), "pl": ["p1"]}),
    )
    write(
        tmp_path / "2.parquet",
        pa.table(
            {
                "track_id": pa.array([B], pa.large_string()),
                "plays": pa.array([2], pa.int64()),
                "extra": [True],
            }
        ),
    )
    cat = pd.DataFrame({"track_id": pd.Categorical([C]), "pl": pd.Categorical(["p3"])})
    cat.to_parquet(tmp_path / "3.parquet")
    batch = read_input(tmp_path)
    assert_complete(batch, 3)
    rows = batch.rows
    assert list(rows.columns) == ["track_id", "plays", "pl", "extra", "row_number", "spotify_id"]
    assert str(rows["plays"].dtype) == "Int64"
    assert rows["plays"].tolist()[:2] == [1, 2] and pd.isna(rows["plays"].iloc[2])
    assert rows["pl"].tolist()[0] == "p1" and pd.isna(rows["pl"].iloc[1])
    assert rows["spotify_id"].tolist() == [A, B, C]


def test_conflicting_types_name_the_files_and_column(tmp_path: Path) -> None:
    write(tmp_path / "a.parquet", {"track_id": [A], "popularity": [10]})
    write(tmp_path / "b.parquet", {"track_id": [B], "popularity": ["high"]})
    with pytest.raises(InputError) as err:
        read_input(tmp_path)
    message = str(err.value)
    assert "'popularity'" in message
    assert "a.parquet: int64" in message and "b.parquet: string" in message


def test_id_column_type_conflict_across_files(tmp_path: Path) -> None:
    write(tmp_path / "a.parquet", {"track_id": [A]})
    write(tmp_path / "b.parquet", {"track_id": [123]})
    with pytest.raises(InputError, match="'track_id' has incompatible types"):
        read_input(tmp_path)


# -- rejects partition ----------------------------------------------------------------------------


def _contract(rejects: pd.DataFrame) -> pd.DataFrame:
    return rejects_for_contract(rejects, "run-1", datetime(2024, 5, 1, tzinfo=UTC))


def test_write_rejects_replaces_the_date_and_keeps_the_input_as_text(tmp_path: Path) -> None:
    batch = read_input(SAMPLE)
    day = date(2024, 5, 1)
    write_rejects(_contract(batch.rejects), tmp_path, day)
    path = write_rejects(_contract(batch.rejects.iloc[:1]), tmp_path, day)  # replaces
    assert path == tmp_path / "rejects" / "date=2024-05-01" / "part-0.parquet"
    back = pd.read_parquet(path)
    assert len(back) == 1 and back["row_number"].dtype == "Int64"  # like every dataset
    assert back["reason"].tolist() == batch.rejects["reason"].tolist()[:1]
    assert sorted(p.name for p in path.parent.iterdir()) == [MANIFEST_FILE, "part-0.parquet"]
    extra = json.loads(back["input_extra"].iloc[0])
    assert all(v is None or isinstance(v, str) for v in extra.values())  # input as text


def test_write_rejects_empty(tmp_path: Path) -> None:
    f = write(tmp_path / "in.parquet", {"track_id": [A]})
    batch = read_input(f)
    out = write_rejects(_contract(batch.rejects), tmp_path, date(2024, 5, 1))
    back = pd.read_parquet(out)
    assert back.empty and back.columns.tolist() == list(REJECTS_COLUMNS)


def test_write_rejects_into_output_dir_by_date(tmp_path: Path) -> None:
    """A date's rejects are a partition like every dataset's: contract columns, a manifest
    that ``load_enriched`` checks."""
    batch = read_input(SAMPLE)
    out = write_rejects(_contract(batch.rejects), tmp_path, date(2024, 5, 1), run_id="run-1")
    assert isinstance(out, Path)
    assert len(pd.read_parquet(out)) == 3
    manifest = json.loads((out.parent / MANIFEST_FILE).read_text())["content"]
    assert manifest["run_id"] == "run-1" and manifest["rows"] == 3
    back = load_enriched(tmp_path, "2024-05-01", "rejects")
    assert back.columns.tolist() == [*REJECTS_COLUMNS, "date"]
    pq.write_table(pq.read_table(out).slice(0, 1), out)  # replaced by hand
    with pytest.raises(ValueError, match="1 rows, but its manifest"):
        load_enriched(tmp_path, "2024-05-01", "rejects")
