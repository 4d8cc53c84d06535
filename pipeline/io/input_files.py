"""Finding and reading the input's Parquet files, local or on object storage.

Split from ``reader.py`` (which turns the combined table into rows and rejects) because
listing and decoding files is its own concern: which files count as input (Parquet by
content, hidden names skipped), how one file is normalised so the files of one export
unify (pandas index columns dropped, dictionaries decoded), and how a type conflict
between files is named. Every problem is one ``InputError`` line.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import InputError
from pipeline.io.storage import Storage

_PANDAS_INDEX = re.compile(r"__index_level_\d+__")
_PARQUET_MAGIC = b"PAR1"

log = logging.getLogger(__name__)


def list_input_files(path: Path) -> list[Path]:
    """The files to read: ``path`` itself, or every visible Parquet file under it.

    A file is Parquet by its content (``PAR1`` magic), whatever its name: Spark and Hive
    write ``part-00000`` without an extension, other tools ``*.PARQUET``. Hidden names
    (``.``/``_``: ``_SUCCESS``, ``.crc`` sidecars, temp files) and ``*.crc`` are never
    read; any other file that is not Parquet is skipped and named in a warning.
    """
    if not path.exists():
        raise InputError(f"input {path} does not exist")
    if path.is_file():
        return [path]
    files: list[Path] = []
    skipped: list[Path] = []
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).parts
        if not p.is_file() or _hidden(rel) or p.name.lower().endswith(".crc"):
            continue
        (files if p.suffix.lower() == ".parquet" or _is_parquet(p) else skipped).append(p)
    if skipped:
        shown = ", ".join(str(p.relative_to(path)) for p in skipped[:10])
        more = f" (+{len(skipped) - 10} more)" if len(skipped) > 10 else ""
        log.warning("input %s: skipped %d file(s) that are not Parquet: %s%s",
                    path, len(skipped), shown, more)  # fmt: skip
    if not files:
        raise InputError(f"no Parquet files in directory {path}")
    return files


def _is_parquet(file: Path) -> bool:
    """True when ``file`` starts and ends with the Parquet magic ``PAR1``."""
    try:
        with file.open("rb") as f:
            head = f.read(4)
            if head != _PARQUET_MAGIC or f.seek(0, 2) < 12:
                return False
            f.seek(-4, 2)
            return f.read(4) == _PARQUET_MAGIC
    except OSError:
        return False


def list_input_objects(store: Storage) -> list[str]:
    """The objects to read: the URI itself if it names an object, else the visible
    ``*.parquet`` objects below the prefix."""
    try:
        if store.is_file(""):
            return [store.uri()]
        names = store.find("")
    except OSError as exc:
        raise InputError(f"cannot list input {store.uri()}: {exc}") from None
    files = [store.uri(n) for n in names if n.endswith(".parquet") and not _hidden(n.split("/"))]
    if not files:
        raise InputError(f"no Parquet files (*.parquet) under {store.uri()}")
    return files


def _hidden(parts: Iterable[str]) -> bool:
    return any(part.startswith((".", "_")) for part in parts)


def read_input_file(file: Path | str, store: Storage | None = None) -> pa.Table:
    """One file as an Arrow table, normalised so that files of one export unify."""
    try:
        if store is None:
            table = pq.read_table(file)
        else:
            rel = str(file)[len(store.uri()) :].lstrip("/")
            table = pq.read_table(io.BytesIO(store.read_bytes(rel)))
    except (pa.ArrowException, OSError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{file} is not a readable Parquet file: {detail}") from None
    names = table.schema.names
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"{file} has duplicate column names {dupes}")
    # pandas metadata would restore indexes/dtypes of another era: plain columns only. Only
    # the columns that metadata names as pandas' index go: a user column that merely looks
    # like one (``__index_level_0__``) is data.
    index_columns = _pandas_index_columns(table.schema)
    table = table.replace_schema_metadata(None)
    table = table.drop_columns([n for n in names if n in index_columns])
    return _decode_dictionaries(table)


def _pandas_index_columns(schema: pa.Schema) -> set[str]:
    try:
        meta = schema.pandas_metadata or {}
    except (ValueError, TypeError):
        return set()
    index = meta.get("index_columns", []) if isinstance(meta, dict) else []
    return {n for n in index if isinstance(n, str) and _PANDAS_INDEX.fullmatch(n)}


def _decode_dictionaries(table: pa.Table) -> pa.Table:
    for i, fld in enumerate(table.schema):
        if pa.types.is_dictionary(fld.type):
            col = table.column(i).cast(fld.type.value_type)
            table = table.set_column(i, fld.with_type(fld.type.value_type), col)
    return table


def unify_tables(tables: list[pa.Table], files: Sequence[Path | str]) -> pa.Table:
    """Concatenate the files' tables under one schema, or say which column disagrees."""
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        message = _describe_conflict(tables, files) or f"cannot combine input files: {exc}"
        raise InputError(message) from None


def _describe_conflict(tables: list[pa.Table], files: Sequence[Path | str]) -> str | None:
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
            shown = ", ".join(f"{_name(f)}: {fld.type}" for f, fld in typed[:6])
            more = f" (+{len(typed) - 6} more)" if len(typed) > 6 else ""
            return f"column {name!r} has incompatible types across input files: {shown}{more}"
    return None


def _name(file: Path | str) -> str:
    return file.name if isinstance(file, Path) else file.rsplit("/", 1)[-1]
