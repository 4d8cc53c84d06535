"""Shared helpers of the state-layer tests: an injected clock and a small TtlTable schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from pipeline.state.ttl_columns import CHECKED_AT_TYPE
from pipeline.state.ttl_table import TtlTable

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


def make(tmp_path: Path, clock: FakeClock, **kw: Any) -> TtlTable:
    return TtlTable(tmp_path / "t.parquet", "id", SCHEMA, TTL, clock, **kw)


def rows(ids: Any, status: str = "found", **cols: Any) -> pd.DataFrame:
    return pd.DataFrame({"id": list(ids), "status": status, **cols})


def all_rows(t: TtlTable, keys: list[str]) -> pd.DataFrame:
    """The fresh rows of ``keys`` without counting (what a re-read after a load sees)."""
    return t.lookup(keys, count=False).fresh
