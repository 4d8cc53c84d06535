"""Self-healing reads: missing is empty, corrupt or incompatible files are quarantined."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.storage import open_storage
from pipeline.state.quarantine import read_json_safely, read_parquet_safely

SCHEMA = pa.schema([("k", pa.string()), ("n", pa.int64())])


# -- safe reads ----------------------------------------------------------------------------


def test_missing_parquet_is_empty_table(tmp_path: Path) -> None:
    table = read_parquet_safely(open_storage(tmp_path), "nope.parquet", SCHEMA)
    assert table.num_rows == 0
    assert table.schema == SCHEMA


def _corrupt_files(directory: Path, name: str) -> list[Path]:
    return sorted(directory.glob(f"{name}.corrupt-*"))


def test_corrupt_parquet_is_quarantined(tmp_path: Path, caplog) -> None:
    target = tmp_path / "t.parquet"
    target.write_bytes(b"PAR1 this is not parquet")
    with caplog.at_level(logging.WARNING, logger="pipeline.state.quarantine"):
        table = read_parquet_safely(open_storage(tmp_path), target.name, SCHEMA)
    assert table.num_rows == 0 and table.schema == SCHEMA
    assert not target.exists()
    [moved] = _corrupt_files(tmp_path, "t.parquet")
    assert moved.read_bytes() == b"PAR1 this is not parquet"
    assert "quarantined" in caplog.text and "rebuilt" in caplog.text


def test_schema_incompatible_parquet_is_quarantined(tmp_path: Path, caplog) -> None:
    target = tmp_path / "t.parquet"
    pq.write_table(pa.table({"other": [1]}), target)
    with caplog.at_level(logging.WARNING):
        assert read_parquet_safely(open_storage(tmp_path), target.name, SCHEMA).num_rows == 0
    assert len(_corrupt_files(tmp_path, "t.parquet")) == 1
    assert "missing column" in caplog.text


def test_compatible_parquet_is_cast_to_schema(tmp_path: Path) -> None:
    target = tmp_path / "t.parquet"
    pq.write_table(pa.table({"n": pa.array([1], pa.int32()), "k": ["a"], "extra": [0]}), target)
    table = read_parquet_safely(open_storage(tmp_path), target.name, SCHEMA)
    assert table.schema == SCHEMA
    assert table.to_pydict() == {"k": ["a"], "n": [1]}


def test_corrupt_json_is_quarantined(tmp_path: Path, caplog) -> None:
    target = tmp_path / "x.json"
    target.write_text("{not json")
    default = {"d": []}
    with caplog.at_level(logging.WARNING):
        got = read_json_safely(open_storage(tmp_path), target.name, default)
    assert got == default and got is not default
    assert len(_corrupt_files(tmp_path, "x.json")) == 1
    assert "quarantined" in caplog.text
    assert read_json_safely(open_storage(tmp_path), "missing.json", 7) == 7
