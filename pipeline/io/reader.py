"""Read the input track lists, find the ID column, normalise IDs, split off rejects.

Contract (docs/architecture.md): every input row ends up in exactly one of
``InputBatch.rows`` (a usable Spotify track ID) or ``InputBatch.rejects`` (with a reason);
nothing is dropped silently. Duplicate rows are kept: every input row gets an output row,
and deduplication of IDs happens later, on distinct IDs.

Whole-input problems raise ``InputError`` with a one-line message: missing path, a file
that is not Parquet, no rows, no or several candidate ID columns, an ID column that is not
text, a directory whose files disagree on a column's type.

Decisions worth knowing:

* A directory is read recursively: every Parquet file (recognised by content, so Spark's
  ``part-00000`` and ``*.PARQUET`` count) whose path (relative to the directory) has no
  component starting with ``.`` or ``_`` (Spark's ``_SUCCESS``, temp files) and is not a
  ``*.crc`` sidecar, in sorted path order; other files are skipped with a warning naming
  them. ``row_number`` follows that order, then file order.
  Hive directory names (``key=value``) are not turned into columns.
* The input may be an object-store URI (``s3://bucket/exports/``): a prefix is read like
  a directory (one LIST, one GET per file), an object like a file.
* Schemas of several files are unified with Arrow's permissive promotion (int32+int64 ->
  int64, missing columns -> nulls); an incompatible column names the files involved.
* Dictionary (pandas ``category``) columns are read as their value type, so files written
  with and without categories unify.
* Non-UTF-8 text (a ``binary`` ID column, or a ``string`` column holding invalid bytes) is
  decoded with U+FFFD replacement; an ID that no longer parses is rejected as malformed.
* Input columns whose names the pipeline uses (``spotify_id``, ``status``, ``date``,
  ``reason``... see ``schemas.RESERVED_COLUMNS``) are renamed ``input_<name>``; the
  mapping is in ``InputBatch.renamed`` and ``InputBatch.id_column`` is the name after
  renaming (an input ID column called ``spotify_id`` becomes ``input_spotify_id``, while
  ``spotify_id`` is always the normalised bare ID).
* The ``playlist_id`` column (it groups seeds for recommendations) must be text or integer
  (``check_playlist_column``, called before the first request); integers are grouped by
  their decimal text. A float column whose values are all whole numbers (what pandas
  makes of integer IDs with a missing value: ``7.0``, ``NaN``) is read as integers, NaN as
  null; a float with a fraction, a struct, a list... is refused with one line.
* pandas' unnamed index columns (``__index_level_N__`` that the file's pandas metadata
  names as its index) are dropped; integer columns become
  pandas nullable integers (``Int64``...), so a null never turns an ID-like int into float.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import InputError
from pipeline.io.input_files import (
    list_input_files,
    list_input_objects,
    read_input_file,
    unify_tables,
)
from pipeline.io.schemas import RESERVED_COLUMNS, nullable_types_mapper
from pipeline.io.spotify_ids import normalise_ids
from pipeline.io.storage import Storage, is_object_store, open_storage

#: Tried in this order when no ``id_column`` is configured; exactly one may be present.
ID_COLUMN_CANDIDATES = ("spotify_track_id", "track_id", "spotify_id", "uri", "url")
ROW_NUMBER = "row_number"
SPOTIFY_ID = "spotify_id"
REASON = "reason"
PLAYLIST_ID = "playlist_id"


@dataclass(frozen=True)
class InputBatch:
    """The input, split into usable rows and rejects.

    rows: every input column (``renamed`` applied) + ``spotify_id`` (bare ID, pandas'
        default string dtype) + ``row_number`` (int64, 0-based, stable across files);
        RangeIndex.
    rejects: every input column converted to text + ``row_number`` + ``reason``.
    id_column: the ID column's name in ``rows``/``rejects`` (after renaming).
    files: the Parquet files read, in ``row_number`` order (URIs on object storage).
    schema: Arrow schema of the input columns as in ``rows`` (for ``tracks_schema``).
    renamed: input column -> new name, for input names the pipeline reserves.
    """

    rows: pd.DataFrame
    rejects: pd.DataFrame
    id_column: str
    files: Sequence[Path | str]
    schema: pa.Schema
    renamed: dict[str, str] = field(default_factory=dict)


def read_input(path: Path | str | Storage, id_column: str | None = None) -> InputBatch:
    """Read ``path`` (a Parquet file or a directory of them, local or on object storage)
    into an ``InputBatch``."""
    if isinstance(path, Storage) or is_object_store(path):
        store = open_storage(path)
        files: list[Path | str] = list(list_input_objects(store))
        path = store.uri()
        tables = [read_input_file(f, store) for f in files]
    else:
        path = Path(path)
        files = list(list_input_files(path))
        tables = [read_input_file(f) for f in files]
    table = unify_tables(tables, files)
    if table.num_rows == 0:
        raise InputError(f"no rows in {path}")
    source_id = _pick_id_column(table.schema.names, id_column, path)
    table = _whole_floats_as_integers(table, PLAYLIST_ID)
    table, renamed = _rename_reserved(table)
    id_name = renamed.get(source_id, source_id)
    table = table.append_column(ROW_NUMBER, pa.array(np.arange(table.num_rows), pa.int64()))

    ids, reasons = normalise_ids(_id_series(table.column(id_name), id_name))
    rejected = reasons.notna().to_numpy(dtype=bool)
    rows = _rows_frame(table.filter(pa.array(~rejected)), ids[~rejected])
    rejects = _rejects_frame(table.filter(pa.array(rejected)), reasons[rejected])
    schema = table.schema.remove(table.schema.get_field_index(ROW_NUMBER))
    return InputBatch(rows, rejects, id_name, files, schema, renamed)


def check_playlist_column(schema: pa.Schema, name: str = PLAYLIST_ID) -> None:
    """``InputError`` unless ``name`` (when present) is text or integer.

    Checked before the first request: finding out in the recommendations stage would come
    after the API budget is spent (``unhashable type`` on a struct or list value).
    """
    if name not in schema.names:
        return
    typ = schema.field(name).type
    if _is_text(typ) or pa.types.is_integer(typ) or pa.types.is_null(typ):
        return
    whole = " (whole numbers in a float column are accepted)" if pa.types.is_floating(typ) else ""
    raise InputError(
        f"column {name!r} has type {typ}; expected text or integers (one playlist ID per row)"
        f"{whole}"
    )


# -- columns --------------------------------------------------------------------------------


def _whole_floats_as_integers(table: pa.Table, name: str) -> pa.Table:
    """``name`` as int64 when it is a float column of whole numbers (NaN -> null), so
    ``7.0`` groups as ``"7"``, not ``"7.0"``; any other column is returned as it is."""
    if name not in table.schema.names or not pa.types.is_floating(table.schema.field(name).type):
        return table
    col = table.column(name)
    col = pc.if_else(pc.is_nan(col), pa.scalar(None, col.type), col)
    finite = pc.drop_null(col)
    if len(finite) and not pc.all(pc.equal(pc.round(finite), finite)).as_py():
        return table  # fractions: check_playlist_column refuses the float column
    if len(finite) and pc.max(pc.abs(finite)).as_py() >= 2**53:
        return table  # beyond a float's exact integers: the digits are not the input's
    i = table.schema.get_field_index(name)
    return table.set_column(i, pa.field(name, pa.int64()), col.cast(pa.int64()))


def _pick_id_column(names: list[str], configured: str | None, path: Path | str) -> str:
    accepted = ", ".join(ID_COLUMN_CANDIDATES)
    if configured is not None:
        if configured not in names:
            raise InputError(
                f"id column {configured!r} (id_column setting) not in {path}; columns: {names}"
            )
        return configured
    present = [c for c in ID_COLUMN_CANDIDATES if c in names]
    if not present:
        raise InputError(
            f"no ID column in {path}: columns are {names}; expected one of {accepted} "
            "or --id-column"
        )
    if len(present) > 1:
        raise InputError(
            f"several candidate ID columns in {path}: {present}; choose one with --id-column"
        )
    return present[0]


def _rename_reserved(table: pa.Table) -> tuple[pa.Table, dict[str, str]]:
    """Move input columns off the names the pipeline writes (see module docstring)."""
    taken = set(table.schema.names) | RESERVED_COLUMNS | {ROW_NUMBER}
    renamed: dict[str, str] = {}
    for name in table.schema.names:
        if name in RESERVED_COLUMNS:
            new, n = f"input_{name}", 1
            while new in taken:
                n += 1
                new = f"input_{name}_{n}"
            taken.add(new)
            renamed[name] = new
    if renamed:
        table = table.rename_columns([renamed.get(n, n) for n in table.schema.names])
    return table, renamed


def _id_series(column: pa.ChunkedArray, name: str) -> pd.Series:
    """The ID column as Arrow text for ``normalise_ids``; non-text types are an InputError."""
    typ = column.type
    if pa.types.is_null(typ):
        column = pa.chunked_array([pa.nulls(len(column), pa.large_string())])
    elif _is_text(typ):
        column = _repair_utf8(column.cast(pa.large_string()))
    elif _is_binary(typ):
        column = _decode_binary(column)
    else:
        raise InputError(
            f"id column {name!r} has type {typ}; expected text (Spotify IDs, URIs or URLs)"
        )
    return pd.Series(pd.arrays.ArrowExtensionArray(column), copy=False)


def _is_text(typ: pa.DataType) -> bool:
    return pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_string_view(typ)


def _is_binary(typ: pa.DataType) -> bool:
    return (
        pa.types.is_binary(typ)
        or pa.types.is_large_binary(typ)
        or pa.types.is_binary_view(typ)
        or pa.types.is_fixed_size_binary(typ)
    )


def _repair_utf8(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Parquet readers do not validate UTF-8; invalid bytes would break regexes later."""
    try:
        column.validate(full=True)
    except pa.ArrowInvalid:
        return _decode_binary(column.cast(pa.large_binary()))
    return column


def _decode_binary(column: pa.ChunkedArray) -> pa.ChunkedArray:
    # Python loop on purpose: only binary / broken columns get here, and Arrow has no
    # "decode with replacement" kernel.
    values = [None if b is None else b.decode("utf-8", "replace") for b in column.to_pylist()]
    return pa.chunked_array([pa.array(values, pa.large_string())])


# -- frames ---------------------------------------------------------------------------------


def _rows_frame(table: pa.Table, ids: pd.Series) -> pd.DataFrame:
    table = _repair_text_columns(table)
    table = table.append_column(SPOTIFY_ID, pa.array(ids.array, pa.string()))
    return _to_pandas(table)


def _repair_text_columns(table: pa.Table) -> pa.Table:
    for i, fld in enumerate(table.schema):
        if _is_text(fld.type):
            fixed = _repair_utf8(table.column(i))
            if fixed is not table.column(i):
                table = table.set_column(i, fld.with_type(fixed.type), fixed)
    return table


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    frame = table.to_pandas(types_mapper=nullable_types_mapper)
    frame[ROW_NUMBER] = frame[ROW_NUMBER].astype("int64")  # never null: plain int64
    return frame


def _rejects_frame(table: pa.Table, reasons: pd.Series) -> pd.DataFrame:
    """Rejected rows with every input column as text, so one schema fits any input."""
    columns: dict[str, pa.ChunkedArray] = {}
    for name in table.schema.names:
        col = table.column(name)
        columns[name] = col if name == ROW_NUMBER else _as_text_column(col)
    columns[REASON] = pa.chunked_array([pa.array(reasons.array, pa.string())])
    return _to_pandas(pa.table(columns))


def _as_text_column(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if _is_binary(col.type):
        return _decode_binary(col).cast(pa.string())
    if _is_text(col.type):
        return _repair_utf8(col).cast(pa.string())
    try:
        return pc.cast(col, pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        values = [None if v is None else str(v) for v in col.to_pylist()]
        return pa.chunked_array([pa.array(values, pa.string())])


# -- rejects file ---------------------------------------------------------------------------
