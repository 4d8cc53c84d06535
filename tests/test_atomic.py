"""Atomic local writes: replace, no temp left behind, old file kept on any failure."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.io import atomic
from pipeline.io.atomic import atomic_write, atomic_write_bytes, atomic_write_json

SCHEMA = pa.schema([("k", pa.string()), ("n", pa.int64())])


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


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


def _write_table(table: pa.Table, target: Path) -> None:
    atomic_write(target, lambda f: pq.write_table(table, f))


def test_failure_at_rename_keeps_old_parquet(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "t.parquet"
    _write_table(pa.table({"k": ["a"], "n": [1]}, schema=SCHEMA), target)

    def boom(src, dst) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError, match="No space left"):
        _write_table(pa.table({"k": ["b"], "n": [2]}, schema=SCHEMA), target)
    monkeypatch.undo()
    assert pq.read_table(target).to_pydict() == {"k": ["a"], "n": [1]}
    assert _leftovers(tmp_path) == []


def test_atomic_write_json_roundtrip(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    atomic_write_json({"a": 1, "when": when}, target)
    assert json.loads(target.read_text()) == {"a": 1, "when": when.isoformat()}
    assert _leftovers(tmp_path) == []


def test_a_published_file_gets_the_mode_a_plain_open_would_give(tmp_path: Path) -> None:
    """A temp file is created 0600 and the rename keeps that: run reports and rejects were
    unreadable to the group sharing an output dir, while the partitions were not."""
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    atomic_write_json({"a": 1}, tmp_path / "report.json")
    mode = (tmp_path / "report.json").stat().st_mode & 0o777
    assert mode == plain.stat().st_mode & 0o777  # 0644 under umask 022, not 0600
