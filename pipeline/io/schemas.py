"""Arrow schemas of the output datasets (what pandas users load).

They live apart from ``writer.py`` so the reader can learn which column names the pipeline
adds (and rename colliding input columns) without importing the writer.

Types are Arrow's, chosen so that ``pd.read_parquet`` gives typed columns: nullable
integers stay integers (int64 with nulls; the writer stores pandas metadata saying
``Int64``), lists are ``list<string>``, never object columns of mixed types.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from pipeline.api.fields import FEATURE_COLUMNS
from pipeline.api.fields import INT_FEATURES as _INT_FEATURES

#: Per-track outcome in the tracks dataset.
#: ``pending``: not fetched yet (a run stopped by its budget, or a stage not run); the next
#: run asks for it. ``failed``: asked this run and failed after every retry.
STATUSES = ("ok", "not_found", "no_features", "pending", "failed")

ARTISTS_TYPE = pa.list_(pa.string())

#: Columns the pipeline appends after the input's own columns in the tracks dataset.
#: ``row_number`` is the reader's stable input order (joins with the rejects file).
TRACK_FIELDS: tuple[pa.Field, ...] = (
    pa.field("row_number", pa.int64()),
    pa.field("spotify_id", pa.string()),
    pa.field("reccobeats_id", pa.string()),
    pa.field("status", pa.string()),
    pa.field("title", pa.string()),
    pa.field("artists", ARTISTS_TYPE),
    pa.field("duration_ms", pa.int64()),
    pa.field("popularity", pa.int64()),
    pa.field("isrc", pa.string()),
    *(pa.field(n, pa.int64() if n in _INT_FEATURES else pa.float64()) for n in FEATURE_COLUMNS),
)
TRACK_COLUMNS: tuple[str, ...] = tuple(f.name for f in TRACK_FIELDS)

RECOMMENDATION_SCHEMA = pa.schema(
    [
        pa.field("playlist_id", pa.string()),
        pa.field("seed_spotify_ids", pa.list_(pa.string())),
        pa.field("rank", pa.int32()),
        pa.field("reccobeats_id", pa.string()),
        pa.field("spotify_id", pa.string()),
        pa.field("title", pa.string()),
        pa.field("artists", ARTISTS_TYPE),
        pa.field("duration_ms", pa.int64()),
        pa.field("popularity", pa.int64()),
    ]
)

#: The hive partition key of every dataset: a data column of that name would clash with it.
PARTITION_COLUMN = "date"

#: Input column names the reader renames (to ``input_<name>``) because the pipeline's own
#: columns use them: everything in ``TRACK_COLUMNS``, the rejects' ``reason``, ``date``.
RESERVED_COLUMNS = frozenset({*TRACK_COLUMNS, "reason", PARTITION_COLUMN})


def tracks_schema(input_schema: pa.Schema | pd.DataFrame) -> pa.Schema:
    """The tracks dataset schema: the input's columns (original types) + ``TRACK_FIELDS``.

    Pass ``InputBatch.schema`` (the input's exact Arrow types). ``InputBatch.rows`` is
    accepted too: its pipeline columns are set aside and the input columns' types are
    inferred from pandas (close, but e.g. an all-null column becomes Arrow ``null``).
    A clash with a reserved name is a programming error: ``ValueError``, never shadowing.
    """
    if isinstance(input_schema, pd.DataFrame):
        own = [c for c in input_schema.columns if c not in TRACK_COLUMNS]
        input_schema = pa.Schema.from_pandas(input_schema[own], preserve_index=False)
    clash = sorted(set(input_schema.names) & RESERVED_COLUMNS)
    if clash:
        raise ValueError(f"input columns {clash} clash with pipeline columns; rename them")
    return pa.schema(list(input_schema.remove_metadata()) + list(TRACK_FIELDS))


_NULLABLE: dict[pa.DataType, object] = {
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.uint8(): pd.UInt8Dtype(),
    pa.uint16(): pd.UInt16Dtype(),
    pa.uint32(): pd.UInt32Dtype(),
    pa.uint64(): pd.UInt64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}


def nullable_types_mapper(typ: pa.DataType) -> object | None:
    """``types_mapper`` for ``Table.to_pandas``: integers/booleans as pandas nullable dtypes
    (a null never turns an int column into float), everything else pandas' default."""
    return _NULLABLE.get(typ)
