"""The output schema contract: the same columns and types every day, whatever the input.

Why: the tracks dataset used to carry the input's own columns with the input's types, so
one day's input decided the schema of that day's file. After a day whose input had an extra
column and an integer ``playlist_id``, ``pd.read_parquet(".../tracks")`` silently dropped
the extra column (it takes the first file's schema) and ``load_enriched`` failed with
``Unable to merge: Field playlist_id has incompatible types``.

The rule (README "Output schema"):

* the product's columns are fixed and typed (``TRACKS_SCHEMA``, ``RECOMMENDATIONS_SCHEMA``);
* ``playlist_id``, which the product itself uses (recommendations are per playlist), is
  always a string column (null when the input has none; an integer 7 is ``"7"``);
* every input column, whatever its name or type, is passed through in ``input_extra``: one
  JSON object per row, ``{"<input column>": value, ...}`` (numbers stay numbers, dates
  become ISO strings). A column added, removed or retyped between days changes only that
  JSON, never the file schema, so nothing is dropped and every reader (pandas, pyarrow
  dataset, DuckDB) reads every date. ``json.loads`` / ``pd.json_normalize`` /
  DuckDB's ``input_extra::JSON ->> 'col'`` get the values back;
* every row carries ``run_id`` (the run that published it) and ``loaded_at`` (UTC
  timestamp of the publish);
* ``rejects`` follow the same rule: ``row_number``, ``reason``, ``input_extra`` (the raw
  input values, as text), ``run_id``, ``loaded_at``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd
import pyarrow as pa

from pipeline.io.schemas import RECOMMENDATION_SCHEMA, TRACK_FIELDS

CONTRACT_VERSION = 1
LOADED_AT_TYPE = pa.timestamp("us", tz="UTC")

#: Columns every dataset ends with: which run published the row, and when (UTC).
LINEAGE_FIELDS: tuple[pa.Field, ...] = (
    pa.field("run_id", pa.string()),
    pa.field("loaded_at", LOADED_AT_TYPE),
)

TRACKS_SCHEMA = pa.schema(
    [
        *TRACK_FIELDS,
        pa.field("playlist_id", pa.string()),
        pa.field("input_extra", pa.string()),
        *LINEAGE_FIELDS,
    ]
)
RECOMMENDATIONS_SCHEMA = pa.schema([*RECOMMENDATION_SCHEMA, *LINEAGE_FIELDS])


def input_extra_json(rows: pd.DataFrame, input_columns: Sequence[str]) -> pd.Series:
    """One JSON object string per row with the input columns' values (original names)."""
    cols = [c for c in input_columns if c in rows.columns]
    if not cols or rows.empty:
        return pd.Series(["{}"] * len(rows), index=rows.index, dtype=object)
    text = _as_json_safe(rows[cols]).to_json(
        orient="records", lines=True, date_format="iso", date_unit="us"
    )
    return pd.Series(text.rstrip("\n").split("\n"), index=rows.index, dtype=object)


def _as_json_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with bytes values decoded as UTF-8 (U+FFFD for invalid bytes).

    JSON holds no raw bytes: a ``binary`` input column with invalid UTF-8 made the encoder
    fail at publish, after every request of the run was spent. Only ``object`` columns can
    hold bytes, so text and number columns are not touched.
    """
    out = frame
    for name in frame.columns:
        col = frame[name]
        if col.dtype == object and col.map(lambda v: isinstance(v, bytes)).any():
            out = out.copy() if out is frame else out
            out[name] = col.map(_as_text)
    return out


def _as_text(value: object) -> object:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def tracks_for_contract(
    tracks: pd.DataFrame, input_columns: Sequence[str], run_id: str, loaded_at: datetime
) -> pd.DataFrame:
    """``tracks`` (input columns + pipeline columns) reshaped to ``TRACKS_SCHEMA``."""
    out = tracks[[f.name for f in TRACK_FIELDS if f.name in tracks.columns]].copy()
    if "playlist_id" in tracks.columns:
        pid = tracks["playlist_id"]
        out["playlist_id"] = pid.astype("string").where(pid.notna(), None).astype(object)
    else:
        out["playlist_id"] = None
    out["input_extra"] = input_extra_json(tracks, input_columns)
    return with_lineage(out, run_id, loaded_at)


REJECTS_SCHEMA = pa.schema(
    [
        pa.field("row_number", pa.int64()),
        pa.field("reason", pa.string()),
        pa.field("input_extra", pa.string()),
        *LINEAGE_FIELDS,
    ]
)
REJECTS_COLUMNS = tuple(REJECTS_SCHEMA.names)


def rejects_for_contract(
    rejects: pd.DataFrame, run_id: str | None, loaded_at: datetime
) -> pd.DataFrame:
    """The reader's rejects (input columns as text + ``row_number`` + ``reason``) reshaped:
    the input columns go into ``input_extra``, so the file schema is the same every day."""
    inputs = [c for c in rejects.columns if c not in ("row_number", "reason")]
    out = pd.DataFrame(
        {
            "row_number": rejects.get("row_number", []),
            "reason": rejects.get("reason", []),
        },
        index=rejects.index,
    )
    out["input_extra"] = input_extra_json(rejects, inputs)
    return with_lineage(out, run_id or "", loaded_at)


def with_lineage(frame: pd.DataFrame, run_id: str, loaded_at: datetime) -> pd.DataFrame:
    """``frame`` plus ``run_id`` and ``loaded_at`` on every row."""
    out = frame.copy()
    out["run_id"] = run_id
    out["loaded_at"] = pd.Timestamp(loaded_at).tz_convert("UTC") if len(out) else None
    return out
