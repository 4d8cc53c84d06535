"""Typed output datasets in atomic date partitions, and ``load_enriched`` to read them back.

Layout: ``<output>/<dataset>/date=YYYY-MM-DD/part-0.parquet`` (hive-style), so
``pd.read_parquet("<output>/tracks")`` just works and returns a ``date`` column.

Atomicity: a partition is written into a hidden sibling ``.tmp-date=...-<pid>-<uuid>/``
(pyarrow's dataset discovery ignores names starting with ``.`` or ``_``), fsynced, then
swapped in by renames: old partition -> ``.old-...``, new -> ``date=...``, old deleted.
A reader therefore sees the old partition or the new one, never half a file; re-running a
date replaces only that date. The swap is two renames, so for an instant the date is
absent; a run killed in that instant leaves ``.old-`` behind, and the next write to the
dataset renames it back (stale temp dirs of dead processes are removed at the same time).

Why pandas metadata is written: Parquet has no "nullable int" distinction, and pandas
turns an int64 column with nulls into float64 unless the file's pandas metadata says
``Int64``. The writer stores that metadata, so plain ``pd.read_parquet`` returns ``Int64``
for every integer column (``Int32`` for ``rank``), pandas' default string dtype for
strings (``str`` on pandas 3), float64 for features, object columns of numpy arrays for
``list<string>`` and ``category`` for the hive ``date`` key. ``load_enriched`` returns
the same except Python lists for list columns and ``datetime64[ns]`` for ``date``.

No path component comes from data values: only ``dataset`` (checked against a strict
pattern) and the run date (a ``date`` object) name directories.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import ConfigError
from pipeline.io.reader import ROW_NUMBER
from pipeline.io.schemas import (
    FEATURE_COLUMNS,
    PARTITION_COLUMN,
    RECOMMENDATION_SCHEMA,
    STATUSES,
    TRACK_COLUMNS,
    TRACK_FIELDS,
    nullable_types_mapper,
    tracks_schema,
)

__all__ = [
    "FEATURE_COLUMNS",
    "RECOMMENDATION_SCHEMA",
    "STATUSES",
    "TRACK_COLUMNS",
    "TRACK_FIELDS",
    "load_enriched",
    "partition_dir",
    "tracks_schema",
    "write_partition",
]

PART_FILE = "part-0.parquet"
#: A temp dir of a live process younger than this is left alone (another writer's work).
STALE_AFTER_S = 6 * 3600

log = logging.getLogger(__name__)

_DATASET = re.compile(r"[a-z][a-z0-9_]{0,63}")
_PARTITION = re.compile(r"date=(\d{4}-\d{2}-\d{2})")
_SIDE_DIR = re.compile(r"\.(tmp|old)-date=(\d{4}-\d{2}-\d{2})-(\d+)-[0-9a-f]{32}")


def partition_dir(output_dir: Path, dataset: str, run_date: date) -> Path:
    """``<output>/<dataset>/date=YYYY-MM-DD``; ``dataset`` must match ``[a-z][a-z0-9_]*``."""
    if not _DATASET.fullmatch(dataset):
        raise ValueError(f"dataset name {dataset!r} must match {_DATASET.pattern}")
    return Path(output_dir) / dataset / f"date={_as_date(run_date).isoformat()}"


def write_partition(
    data: pd.DataFrame | pa.Table,
    output_dir: Path,
    dataset: str,
    run_date: date,
    schema: pa.Schema,
) -> Path:
    """Replace the ``run_date`` partition of ``dataset`` with ``data`` conformed to ``schema``.

    Columns of ``schema`` missing from ``data`` are written as nulls; columns of ``data``
    not in ``schema`` raise ``ValueError`` (a typo must not silently drop data). Returns
    the partition directory.
    """
    final = partition_dir(output_dir, dataset, run_date)
    table = _conform(data, schema)
    if dataset == "tracks":
        _check_statuses(table)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_stale(final.parent)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        pq.write_table(table, tmp / PART_FILE)
        _fsync(tmp / PART_FILE)
        _fsync(tmp)
        _swap_in(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful swap
    return final


def check_output_dir(output_dir: Path) -> None:
    """Create ``output_dir`` and prove it is writable, or raise ``ConfigError``.

    The job calls this before any request: finding out at publish time would throw away a
    whole run's API budget (and surfaced as a traceback).
    """
    path = Path(output_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"setting 'output_dir': cannot write to output dir {path}: {exc.strerror or exc}"
        ) from None


# -- conforming data to the schema ----------------------------------------------------------


def _conform(data: pd.DataFrame | pa.Table, schema: pa.Schema) -> pa.Table:
    if PARTITION_COLUMN in schema.names:
        raise ValueError(f"column {PARTITION_COLUMN!r} is the partition key; not a data column")
    names = list(data.columns) if isinstance(data, pd.DataFrame) else data.schema.names
    extra = [n for n in names if n not in schema.names]
    if extra:
        raise ValueError(f"columns {extra} are not in the output schema {schema.names}")
    n_rows = len(data) if isinstance(data, pd.DataFrame) else data.num_rows
    arrays = [_column(data, fld, n_rows) for fld in schema]
    table = pa.Table.from_arrays(arrays, schema=schema.remove_metadata())
    return table.replace_schema_metadata(_pandas_metadata(schema))


def _column(data: pd.DataFrame | pa.Table, fld: pa.Field, n_rows: int) -> pa.ChunkedArray:
    try:
        if isinstance(data, pd.DataFrame):
            if fld.name not in data.columns:
                return pa.chunked_array([pa.nulls(n_rows, fld.type)])
            return pa.chunked_array([pa.array(data[fld.name], fld.type, from_pandas=True)])
        if fld.name not in data.schema.names:
            return pa.chunked_array([pa.nulls(n_rows, fld.type)])
        return data.column(fld.name).cast(fld.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"column {fld.name!r} does not fit type {fld.type}: {exc}") from exc


def _pandas_metadata(schema: pa.Schema) -> dict[bytes, bytes]:
    """pandas metadata saying "nullable Int64" etc., from an empty frame of those dtypes."""
    empty = schema.empty_table().to_pandas(types_mapper=nullable_types_mapper)
    meta = pa.Table.from_pandas(empty, schema=schema, preserve_index=False).schema.metadata
    return dict(meta or {})


def _check_statuses(table: pa.Table) -> None:
    if "status" not in table.schema.names:
        return
    status = table.column("status")
    bad = pc.drop_null(pc.filter(status, pc.invert(pc.is_in(status, pa.array(STATUSES)))))
    if len(bad):
        raise ValueError(f"unknown status {bad[0].as_py()!r}; expected one of {STATUSES}")


# -- swapping and recovery ------------------------------------------------------------------


def _swap_in(new: Path, final: Path) -> None:
    """Rename ``new`` to ``final``, moving an existing ``final`` aside first."""
    old: Path | None = None
    if final.exists():
        old = final.parent / f".old-{final.name}-{os.getpid()}-{uuid.uuid4().hex}"
        os.rename(final, old)
    try:
        os.rename(new, final)
    except BaseException:
        if old is not None:
            os.rename(old, final)  # the old partition stays the published one
        raise
    _fsync(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def sweep_stale_temp_files(output_dir: Path) -> list[Path]:
    """Delete hidden temp files a killed run left beside the run reports and rejects.

    Readers already ignore them (dot-names); this keeps them from piling up. Only files
    older than ``STALE_AFTER_S`` go: a younger one may be another run's write in progress.
    """
    root = Path(output_dir)
    candidates = [*root.glob("runs/.*.tmp"), *root.glob("rejects/date=*/.*.tmp-*")]
    removed = []
    for path in candidates:
        try:
            if path.is_file() and time.time() - path.stat().st_mtime > STALE_AFTER_S:
                path.unlink()
                removed.append(path)
        except OSError as exc:
            log.warning("cannot remove stale temp file %s: %s", path, exc)
    if removed:
        log.info("removed %d temp file(s) left by killed runs under %s", len(removed), root)
    return removed


def recover_stale(dataset_dir: Path) -> None:
    """Undo what killed writers left: restore a missing partition from its ``.old-`` copy,
    delete abandoned ``.tmp-``/``.old-`` dirs. Dirs of live processes younger than
    ``STALE_AFTER_S`` are another writer's work in progress and are left alone."""
    if not dataset_dir.is_dir():
        return
    side = []
    for entry in dataset_dir.iterdir():
        match = _SIDE_DIR.fullmatch(entry.name)
        if match and entry.is_dir() and _is_stale(entry, int(match[3])):
            side.append((entry.stat().st_mtime, match[1], match[2], entry))
    for _mtime, kind, day, entry in sorted(side, reverse=True):  # newest .old wins
        final = dataset_dir / f"date={day}"
        if kind == "old" and not final.exists():
            os.rename(entry, final)
        else:
            shutil.rmtree(entry, ignore_errors=True)
    if side:
        _fsync(dataset_dir)


def _is_stale(entry: Path, pid: int) -> bool:
    if time.time() - entry.stat().st_mtime > STALE_AFTER_S:
        return True
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return True
    except PermissionError:
        return False  # alive, owned by someone else
    return False


# -- reading back ---------------------------------------------------------------------------


def load_enriched(
    output_dir: Path | str,
    date: date | str | None = None,
    dataset: str = "tracks",
) -> pd.DataFrame:
    """One date (or every date, ``date=None``) of ``dataset`` with documented dtypes.

    Partitions are read one by one and combined with Arrow's permissive promotion, so days
    whose inputs had different extra columns still load (missing values are nulls); plain
    ``pd.read_parquet`` would take the first file's schema and drop the others' columns.
    Dtypes: integers ``Int64``/``Int32`` (nullable), floats float64, strings pandas' default
    string dtype, ``list<string>`` as Python lists (None when null), and a ``date`` column of
    dtype ``datetime64[ns]`` (midnight of the partition date). Raises ``FileNotFoundError``
    when the date or dataset has no partition.
    """
    root = Path(output_dir) / dataset
    if date is None:
        parts = sorted(
            p for p in root.glob("date=*") if p.is_dir() and _PARTITION.fullmatch(p.name)
        )
        if not parts:
            raise FileNotFoundError(f"no date partitions under {root}")
    else:
        parts = [partition_dir(Path(output_dir), dataset, _as_date(date))]
        if not parts[0].is_dir():
            raise FileNotFoundError(f"no partition {parts[0]}")
    tables = [_read_partition(p) for p in parts]
    table = (
        tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")
    )
    return _to_frame(table)


def _read_partition(part: Path) -> pa.Table:
    files = sorted(p for p in part.glob("*.parquet") if not p.name.startswith((".", "_")))
    table = pa.concat_tables(
        [pq.read_table(f).replace_schema_metadata(None) for f in files],
        promote_options="permissive",
    )
    day = _as_date(part.name.removeprefix("date="))
    return table.append_column(PARTITION_COLUMN, pa.array([day] * table.num_rows, pa.date32()))


def _to_frame(table: pa.Table) -> pd.DataFrame:
    frame = table.to_pandas(types_mapper=nullable_types_mapper)
    for fld in table.schema:
        if pa.types.is_list(fld.type) or pa.types.is_large_list(fld.type):
            frame[fld.name] = pd.Series(table.column(fld.name).to_pylist(), dtype=object)
    frame[PARTITION_COLUMN] = pd.to_datetime(frame[PARTITION_COLUMN]).astype("datetime64[ns]")
    return frame


# -- helpers --------------------------------------------------------------------------------


def _as_date(value: date | str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"date {value!r} is not YYYY-MM-DD") from None
    raise TypeError(f"expected a date, got {type(value).__name__}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rejects_path(output_dir: Path, run_date: date) -> Path:
    """``<output>/rejects/date=YYYY-MM-DD/rejects.parquet`` (built from the date only)."""
    return Path(output_dir) / "rejects" / f"date={run_date.isoformat()}" / "rejects.parquet"


def write_rejects(rejects: pd.DataFrame, path: Path, run_date: date | None = None) -> Path:
    """Write ``rejects`` atomically (temp file + fsync + rename), replacing the target.

    ``write_rejects(rejects, file)`` writes ``file``; ``write_rejects(rejects, output_dir,
    run_date)`` writes ``rejects_path(output_dir, run_date)``. Every column is text except
    ``row_number`` (int64); an empty frame still writes a file, so "no rejects today" is
    distinguishable from "the job did not run". Returns the file written.
    """
    path = Path(path) if run_date is None else rejects_path(Path(path), run_date)
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema(
        [pa.field(c, pa.int64() if c == ROW_NUMBER else pa.string()) for c in rejects.columns]
    )
    table = pa.Table.from_pandas(rejects, schema=schema, preserve_index=False)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")  # hidden from readers
    try:
        pq.write_table(table, tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync(path.parent)
    return path
