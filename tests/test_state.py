"""State dir: lock, atomic writes, quarantine of corrupt files, learned rate."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import StateError, StateLockedError
from pipeline.state import statedir as state
from pipeline.state.statedir import (
    StateDir,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    load_learned_rate,
    read_json_safely,
    read_parquet_safely,
    save_learned_rate,
)

SCHEMA = pa.schema([("k", pa.string()), ("n", pa.int64())])


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# -- lock ----------------------------------------------------------------------------------


def test_state_dir_creates_dir_and_lock(tmp_path: Path) -> None:
    target = tmp_path / "a" / "state"
    with StateDir(target) as sd:
        assert target.is_dir()
        assert sd.locked
        assert (target / ".lock").exists()
    assert not sd.locked


def test_second_state_dir_raises_locked(tmp_path: Path) -> None:
    with StateDir(tmp_path), pytest.raises(StateLockedError, match=r"another run holds .*\.lock"):
        StateDir(tmp_path).__enter__()


def test_second_state_dir_waits_up_to_lock_wait(tmp_path: Path) -> None:
    with StateDir(tmp_path):
        started = time.monotonic()
        with pytest.raises(StateLockedError, match=r"waited 0\.3s"):
            StateDir(tmp_path, lock_wait_s=0.3).__enter__()
        assert time.monotonic() - started >= 0.29


def test_lock_released_on_exit_allows_next_run(tmp_path: Path) -> None:
    with StateDir(tmp_path):
        pass
    with StateDir(tmp_path) as sd:
        assert sd.locked


def test_unusable_state_dir_raises_state_error(tmp_path: Path) -> None:
    # Root ignores chmod, so make the path impossible: a directory under a regular file.
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(StateError, match="cannot create state dir") as info:
        StateDir(blocker / "sub").__enter__()
    assert not isinstance(info.value, StateLockedError)


# -- atomic writes -------------------------------------------------------------------------


def test_atomic_write_bytes_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    atomic_write_bytes(b"one", target)
    atomic_write_bytes(b"two", target)
    assert target.read_bytes() == b"two"
    assert _leftovers(tmp_path) == []


def test_failure_mid_write_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    atomic_write_bytes(b"old", target)

    def half_then_fail(f) -> None:
        f.write(b"half-written new content")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_failure_at_rename_keeps_old_parquet(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "t.parquet"
    atomic_write_parquet(pa.table({"k": ["a"], "n": [1]}, schema=SCHEMA), target)

    def boom(src, dst) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state.os, "replace", boom)
    with pytest.raises(StateError, match="cannot write"):
        atomic_write_parquet(pa.table({"k": ["b"], "n": [2]}, schema=SCHEMA), target)
    monkeypatch.undo()
    assert pq.read_table(target).to_pydict() == {"k": ["a"], "n": [1]}
    assert _leftovers(tmp_path) == []


def test_atomic_write_parquet_from_frame_uses_schema(tmp_path: Path) -> None:
    import pandas as pd

    target = tmp_path / "t.parquet"
    rows = atomic_write_parquet(pd.DataFrame({"k": ["a", "b"], "n": [1, None]}), target, SCHEMA)
    assert rows == 2
    table = pq.read_table(target)
    assert table.schema.remove_metadata() == SCHEMA
    assert table.column("n").to_pylist() == [1, None]


def test_atomic_write_json_roundtrip(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    atomic_write_json({"a": 1, "when": when}, target)
    assert json.loads(target.read_text()) == {"a": 1, "when": when.isoformat()}
    assert _leftovers(tmp_path) == []


# -- safe reads ----------------------------------------------------------------------------


def test_missing_parquet_is_empty_table(tmp_path: Path) -> None:
    table = read_parquet_safely(tmp_path / "nope.parquet", SCHEMA)
    assert table.num_rows == 0
    assert table.schema == SCHEMA


def _corrupt_files(directory: Path, name: str) -> list[Path]:
    return sorted(directory.glob(f"{name}.corrupt-*"))


def test_corrupt_parquet_is_quarantined(tmp_path: Path, caplog) -> None:
    target = tmp_path / "t.parquet"
    target.write_bytes(b"PAR1 this is not parquet")
    with caplog.at_level(logging.WARNING, logger="pipeline.state.statedir"):
        table = read_parquet_safely(target, SCHEMA)
    assert table.num_rows == 0 and table.schema == SCHEMA
    assert not target.exists()
    [moved] = _corrupt_files(tmp_path, "t.parquet")
    assert moved.read_bytes() == b"PAR1 this is not parquet"
    assert "quarantined" in caplog.text and "rebuilt" in caplog.text


def test_schema_incompatible_parquet_is_quarantined(tmp_path: Path, caplog) -> None:
    target = tmp_path / "t.parquet"
    pq.write_table(pa.table({"other": [1]}), target)
    with caplog.at_level(logging.WARNING):
        assert read_parquet_safely(target, SCHEMA).num_rows == 0
    assert len(_corrupt_files(tmp_path, "t.parquet")) == 1
    assert "missing column" in caplog.text


def test_compatible_parquet_is_cast_to_schema(tmp_path: Path) -> None:
    target = tmp_path / "t.parquet"
    pq.write_table(pa.table({"n": pa.array([1], pa.int32()), "k": ["a"], "extra": [0]}), target)
    table = read_parquet_safely(target, SCHEMA)
    assert table.schema == SCHEMA
    assert table.to_pydict() == {"k": ["a"], "n": [1]}


def test_corrupt_json_is_quarantined(tmp_path: Path, caplog) -> None:
    target = tmp_path / "x.json"
    target.write_text("{not json")
    default = {"d": []}
    with caplog.at_level(logging.WARNING):
        got = read_json_safely(target, default)
    assert got == default and got is not default
    assert len(_corrupt_files(tmp_path, "x.json")) == 1
    assert "quarantined" in caplog.text
    assert read_json_safely(tmp_path / "missing.json", 7) == 7


# -- learned rate --------------------------------------------------------------------------


def test_learned_rate_roundtrip(tmp_path: Path) -> None:
    assert load_learned_rate(tmp_path) is None
    save_learned_rate(tmp_path, 42.5, datetime(2025, 1, 1, tzinfo=UTC))
    assert load_learned_rate(tmp_path) == 42.5
    data = json.loads((tmp_path / "learned_rate.json").read_text())
    assert data["saved_at"].startswith("2025-01-01T00:00:00")


def test_learned_rate_rejects_nonsense(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        save_learned_rate(tmp_path, 0.0, datetime(2025, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError):
        save_learned_rate(tmp_path, 1.0, datetime(2025, 1, 1))
    (tmp_path / "learned_rate.json").write_text('{"rate_per_window": -3}')
    assert load_learned_rate(tmp_path) is None
