"""Column helpers of the TTL index: row validation, key sets, expiry, timestamps, dtypes.

Kept apart from ``ttl_table.py`` so the table class reads as the index's logic; these are
pure functions of pandas/Arrow values (no table state), each used on whole columns so that
a lookup of a million keys never loops in Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

CHECKED_AT = "checked_at"
STATUS = "status"
CHECKED_AT_TYPE = pa.timestamp("us", tz="UTC")


def check_schema(schema: pa.Schema, key: str) -> None:
    """Fail at construction on a schema the table cannot work with."""
    for name in (key, STATUS):
        if name not in schema.names or not pa.types.is_string(schema.field(name).type):
            raise ValueError(f"schema needs a string column {name!r}")
    if CHECKED_AT not in schema.names or schema.field(CHECKED_AT).type != CHECKED_AT_TYPE:
        raise ValueError(f"schema needs {CHECKED_AT!r} of type {CHECKED_AT_TYPE}")


def rows_to_arrow(
    rows: pd.DataFrame,
    schema: pa.Schema,
    key: str,
    ttl_us: Mapping[str, int],
    now: datetime,
    name: str,
) -> pa.Table:
    """Validate ``rows`` for table ``name`` and convert them to ``schema`` (fills defaults:
    ``checked_at`` = ``now``, missing columns null). A bad row raises ``ValueError`` in the
    thread that made it, not later at checkpoint."""
    rows = rows.reset_index(drop=True) if not isinstance(rows.index, pd.RangeIndex) else rows
    extra = sorted(set(rows.columns) - set(schema.names))
    if extra:
        raise ValueError(f"{name}: unknown column(s) {extra}")
    for required in (key, STATUS):
        if required not in rows or rows[required].isna().any():
            raise ValueError(f"{name}: every row needs a {required!r}")
    unknown = set(rows[STATUS].unique()) - set(ttl_us)
    if unknown:
        raise ValueError(f"{name}: status {sorted(unknown)} has no TTL (known: {sorted(ttl_us)})")
    rows = rows.copy()
    rows[CHECKED_AT] = checked_at_column(rows.get(CHECKED_AT), now, len(rows))
    for column in schema.names:
        if column not in rows:
            rows[column] = None
    try:
        table = pa.Table.from_pandas(rows[schema.names], schema=schema, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise ValueError(f"{name}: rows do not fit the schema: {exc}") from exc
    return table.replace_schema_metadata(None)


def types_mapper(t: pa.DataType) -> object | None:
    """Nullable ints stay ints (not float), lists stay Arrow (cheap, no per-row numpy arrays)."""
    if pa.types.is_integer(t):
        return {
            pa.int8(): pd.Int8Dtype(),
            pa.int16(): pd.Int16Dtype(),
            pa.int32(): pd.Int32Dtype(),
            pa.int64(): pd.Int64Dtype(),
        }.get(t)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pd.ArrowDtype(t)
    return None


def distinct(keys: Iterable[str] | pd.Series) -> pd.Index:
    """Distinct non-null keys in first-seen order (vectorised)."""
    if not isinstance(keys, pd.Series | pd.Index | np.ndarray | list):
        keys = list(keys)
    idx = pd.Index(keys)
    idx = idx[idx.notna()] if idx.hasnans else idx
    return idx.unique()


def ttl_column(status: pd.Series, ttl_us: Mapping[str, int]) -> np.ndarray:
    """TTL in microseconds per row as float (NaN: status without a TTL)."""
    return status.map(ttl_us).to_numpy(dtype=np.float64, na_value=np.nan)


def checked_at_column(given: pd.Series | None, now: datetime, n: int) -> pd.Series:
    """``checked_at`` as UTC microseconds; missing values become ``now``."""
    now_ts = pd.Timestamp(as_utc(now)).as_unit("us")
    if given is None:
        return pd.Series([now_ts] * n, dtype="datetime64[us, UTC]")
    col = pd.to_datetime(given, utc=True).dt.floor("us").astype("datetime64[us, UTC]")
    return col.fillna(now_ts)


def as_utc(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        raise ValueError("clock must return timezone-aware datetimes")
    return dt.astimezone(UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def dt_to_us(dt: datetime) -> int:
    return (as_utc(dt) - _EPOCH) // _US


def to_us(ttl: timedelta) -> int:
    return ttl // _US
