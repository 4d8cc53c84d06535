"""Read the input track lists, find the ID column, normalise IDs, split off rejects.

Contract (docs/architecture.md): every input row ends up in exactly one of
``InputBatch.rows`` (a usable Spotify track ID) or ``InputBatch.rejects`` (with a reason);
nothing is dropped silently. Duplicate rows are kept: every input row gets an output row,
and deduplication of IDs happens later, on distinct IDs.

Whole-input problems raise ``InputError`` with a one-line message: missing path, a file
that is not Parquet, no rows, no or several candidate ID columns, an ID column that is not
text, a directory whose files disagree on a column's type.

Decisions worth knowing:

* A directory is read recursively: every ``*.parquet`` file whose path (relative to the
  directory) has no component starting with ``.`` or ``_`` (Spark's ``_SUCCESS``,
  temp files), in sorted path order. ``row_number`` follows that order, then file order.
  Hive directory names (``key=value``) are not turned into columns.
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
* pandas' unnamed index columns (``__index_level_N__``) are dropped; integer columns become
  pandas nullable integers (``Int64``...), so a null never turns an ID-like int into float.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import InputError
from pipeline.io.schemas import RESERVED_COLUMNS, nullable_types_mapper
from pipeline.io.spotify_ids import normalise_ids

#: Tried in this order when no ``id_column`` is configured; exactly one may be present.
ID_COLUMN_CANDIDATES = ("spotify_track_id", "track_id", "spotify_id", "uri", "url")
ROW_NUMBER = "row_number"
SPOTIFY_ID = "spotify_id"
REASON = "reason"

_PANDAS_INDEX = re.compile(r"__index_level_\d+__")


@dataclass(frozen=True)
class InputBatch:
    """The input, split into usable rows and rejects.

    rows: every input column (``renamed`` applied) + ``spotify_id`` (bare ID, pandas'
        default string dtype) + ``row_number`` (int64, 0-based, stable across files);
        RangeIndex.
    rejects: every input column converted to text + ``row_number`` + ``reason``.
    id_column: the ID column's name in ``rows``/``rejects`` (after renaming).
    files: the Parquet files read, in ``row_number`` order.
    schema: Arrow schema of the input columns as in ``rows`` (for ``tracks_schema``).
    renamed: input column -> new name, for input names the pipeline reserves.
    """

    rows: pd.DataFrame
    rejects: pd.DataFrame
    id_column: str
    files: list[Path]
    schema: pa.Schema
    renamed: dict[str, str] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return len(self.rows) + len(self.rejects)


def read_input(path: Path, id_column: str | None = None) -> InputBatch:
    """Read ``path`` (a Parquet file or a directory of them) into an ``InputBatch``."""
    path = Path(path)
    files = _list_files(path)
    table = _unify([_read_file(f) for f in files], files)
    if table.num_rows == 0:
        raise InputError(f"no rows in {path}")
    source_id = _pick_id_column(table.schema.names, id_column, path)
    table, renamed = _rename_reserved(table)
    id_name = renamed.get(source_id, source_id)
    table = table.append_column(ROW_NUMBER, pa.array(np.arange(table.num_rows), pa.int64()))

    ids, reasons = normalise_ids(_id_series(table.column(id_name), id_name))
    rejected = reasons.notna().to_numpy(dtype=bool)
    rows = _rows_frame(table.filter(pa.array(~rejected)), ids[~rejected])
    rejects = _rejects_frame(table.filter(pa.array(rejected)), reasons[rejected])
    schema = table.schema.remove(table.schema.get_field_index(ROW_NUMBER))
    return InputBatch(rows, rejects, id_name, files, schema, renamed)


# -- files ----------------------------------------------------------------------------------


def _list_files(path: Path) -> list[Path]:
    """The files to read: ``path`` itself, or the visible ``*.parquet`` files under it."""
    if not path.exists():
        raise InputError(f"input {path} does not exist")
    if path.is_file():
        return [path]
    files = sorted(
        p for p in path.rglob("*.parquet") if p.is_file() and not _hidden(p.relative_to(path).parts)
    )
    if not files:
        raise InputError(f"no Parquet files (*.parquet) in directory {path}")
    return files


def _hidden(parts: Iterable[str]) -> bool:
    return any(part.startswith((".", "_")) for part in parts)


def _read_file(file: Path) -> pa.Table:
    """One file as an Arrow table, normalised so that files of one export unify."""
    try:
        table = pq.read_table(file)
    except (pa.ArrowException, OSError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{file} is not a readable Parquet file: {detail}") from None
    names = table.schema.names
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"{file} has duplicate column names {dupes}")
    # pandas metadata would restore indexes/dtypes of another era: plain columns only.
    table = table.replace_schema_metadata(None)
    table = table.drop_columns([n for n in names if _PANDAS_INDEX.fullmatch(n)])
    return _decode_dictionaries(table)


def _decode_dictionaries(table: pa.Table) -> pa.Table:
    for i, fld in enumerate(table.schema):
        if pa.types.is_dictionary(fld.type):
            col = table.column(i).cast(fld.type.value_type)
            table = table.set_column(i, fld.with_type(fld.type.value_type), col)
    return table


def _unify(tables: list[pa.Table], files: list[Path]) -> pa.Table:
    """Concatenate the files' tables under one schema, or say which column disagrees."""
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        message = _describe_conflict(tables, files) or f"cannot combine input files: {exc}"
        raise InputError(message) from None


def _describe_conflict(tables: list[pa.Table], files: list[Path]) -> str | None:
    names = dict.fromkeys(n for t in tables for n in t.schema.names)
    for name in names:
        typed = [
            (f, t.schema.field(name))
            for f, t in zip(files, tables, strict=True)
            if name in t.schema.names
        ]
        try:
            pa.unify_schemas([pa.schema([fld]) for _, fld in typed], promote_options="permissive")
        except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
            shown = ", ".join(f"{f.name}: {fld.type}" for f, fld in typed[:6])
            more = f" (+{len(typed) - 6} more)" if len(typed) > 6 else ""
            return f"column {name!r} has incompatible types across input files: {shown}{more}"
    return None


# -- columns --------------------------------------------------------------------------------


def _pick_id_column(names: list[str], configured: str | None, path: Path) -> str:
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
