"""Typed output datasets in atomic date partitions, and ``load_enriched`` to read them back.

Layout: ``<output>/<dataset>/date=YYYY-MM-DD/part-0.parquet`` (hive-style), so
``pd.read_parquet("<output>/tracks")`` just works and returns a ``date`` column. The output
may be a local directory or an object-store prefix (``s3://bucket/out``...); the layout is
the same on both.

Atomicity: a reader sees a partition's old content or its new content, never half a file
and never two runs' files; re-running a date replaces only that date. How depends on the
storage: renames on a local disk (``publish_local.py``), one PUT per partition plus a
commit marker on object storage (``publish_object.py``, which ``load_enriched`` honours).

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
import time
import uuid
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import ConfigError
from pipeline.io.atomic import TEMP_SUFFIX
from pipeline.io.contract import REJECTS_SCHEMA
from pipeline.io.manifest import MANIFEST_FILE, check_manifest, manifest_bytes, partition_manifest
from pipeline.io.publish_local import PART_FILE, STALE_AFTER_S, publish_local
from pipeline.io.publish_object import committed_partitions, publish_object, read_committed
from pipeline.io.schemas import PARTITION_COLUMN, STATUSES, nullable_types_mapper
from pipeline.io.storage import LocalStorage, Storage, open_storage

log = logging.getLogger(__name__)

#: Where outputs go: a local directory, or a ``Storage`` (local or object store).
Output = Storage | Path | str

_DATASET = re.compile(r"[a-z][a-z0-9_]{0,63}")
_PARTITION = re.compile(r"date=(\d{4}-\d{2}-\d{2})")


def partition_name(dataset: str, run_date: date) -> str:
    """``<dataset>/date=YYYY-MM-DD``; ``dataset`` must match ``[a-z][a-z0-9_]*``."""
    if not _DATASET.fullmatch(dataset):
        raise ValueError(f"dataset name {dataset!r} must match {_DATASET.pattern}")
    return f"{dataset}/date={_as_date(run_date).isoformat()}"


def partition_dir(output_dir: Path, dataset: str, run_date: date) -> Path:
    """``<output>/<dataset>/date=YYYY-MM-DD`` of a local output dir."""
    return Path(output_dir) / partition_name(dataset, run_date)


def write_partition(
    data: pd.DataFrame | pa.Table,
    output_dir: Output,
    dataset: str,
    run_date: date,
    schema: pa.Schema,
    *,
    run_id: str | None = None,
) -> Path | str:
    """Replace the ``run_date`` partition of ``dataset`` with ``data`` conformed to ``schema``.

    A manifest (``io/manifest.py``: run id, rows, schema fingerprint) is published with the
    data, and ``load_enriched`` checks every partition against it.

    Columns of ``schema`` missing from ``data`` are written as nulls; columns of ``data``
    not in ``schema`` raise ``ValueError`` (a typo must not silently drop data). Returns
    the partition directory (a ``Path``), or its URI on object storage.
    """
    name = partition_name(dataset, run_date)
    table = _conform(data, schema)
    if dataset == "tracks":
        _check_statuses(table)
    store = _storage(output_dir)
    content = partition_manifest(table, dataset=dataset, run_date=run_date, run_id=run_id)
    if isinstance(store, LocalStorage):
        final = partition_dir(store.root, dataset, run_date)
        publish_local(table, final, {MANIFEST_FILE: manifest_bytes(content)})
        return final
    return publish_object(table, store, name, content)


def check_output_dir(output_dir: Output) -> None:
    """Create ``output_dir`` and prove it is writable, or raise ``ConfigError``.

    The job calls this before any request: finding out at publish time would throw away a
    whole run's API budget (and surfaced as a traceback). On object storage the probe is
    one PUT and one DELETE, so missing credentials or a missing bucket show here too.
    """
    store = _storage(output_dir)
    probe = f".write-probe-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        if isinstance(store, LocalStorage):
            store.root.mkdir(parents=True, exist_ok=True)
        store.write_bytes(probe, b"")
        store.delete([probe])
    except (OSError, ValueError) as exc:
        detail = getattr(exc, "strerror", None) or exc
        raise ConfigError(
            f"setting 'output_dir': cannot write to output dir {store.uri()}: {detail}"
        ) from None


def sweep_stale_temp_files(output_dir: Output) -> list[Path]:
    """Delete hidden temp files a killed run left beside the run reports and rejects.

    Readers already ignore them (dot-names); this keeps them from piling up. Only files
    older than ``STALE_AFTER_S`` go: a younger one may be another run's write in progress.
    Object storage has no temp files (a PUT is atomic), so there is nothing to sweep.
    """
    store = _storage(output_dir)
    if not isinstance(store, LocalStorage):
        return []
    root = store.root
    candidates = [
        *root.glob(f"runs/.*{TEMP_SUFFIX}"),
        *root.glob(f"rejects/date=*/.*{TEMP_SUFFIX}"),
        *root.glob("rejects/date=*/.*.tmp-*"),  # the name older versions used
    ]
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


# -- rejects --------------------------------------------------------------------------------


def write_rejects(
    rejects: pd.DataFrame, output_dir: Output, run_date: date, *, run_id: str | None = None
) -> Path | str:
    """Publish the contract's rejects (``contract.REJECTS_SCHEMA``) as the ``rejects`` date
    partition, like every dataset: atomic, with the ``_manifest.json`` that ``load_enriched``
    checks. Returns the Parquet file (a ``Path``, or a URI on object storage). An empty
    frame still writes a file, so "no rejects today" is distinguishable from "the job did
    not run"."""
    where = write_partition(rejects, output_dir, "rejects", run_date, REJECTS_SCHEMA, run_id=run_id)
    return where / PART_FILE if isinstance(where, Path) else f"{where}/{PART_FILE}"


def has_partition(output_dir: Output, dataset: str, run_date: date) -> bool:
    """Whether ``dataset`` has a ``run_date`` partition (on object storage: a committed one)."""
    store = _storage(output_dir)
    name = partition_name(dataset, run_date)
    if isinstance(store, LocalStorage):
        return store.path(name).is_dir()
    return name in committed_partitions(store, dataset)


# -- reading back ---------------------------------------------------------------------------


def load_enriched(
    output_dir: Output,
    date: date | str | None = None,
    dataset: str = "tracks",
    *,
    storage_options: dict[str, object] | None = None,
) -> pd.DataFrame:
    """One date (or every date, ``date=None``) of ``dataset`` with documented dtypes.

    ``output_dir`` is a local directory or an object-store URI (``s3://bucket/out``); for
    an S3-compatible server set ``AWS_ENDPOINT_URL`` or pass
    ``storage_options={"endpoint_url": ...}``. On object storage each partition is read
    through its commit marker, so a publish in progress is never half seen.

    Partitions are read one by one and combined with Arrow's permissive promotion, so days
    whose inputs had different extra columns still load (missing values are nulls); plain
    ``pd.read_parquet`` would take the first file's schema and drop the others' columns.
    Dtypes: integers ``Int64``/``Int32`` (nullable), floats float64, strings pandas' default
    string dtype, ``list<string>`` as Python lists (None when null), and a ``date`` column of
    dtype ``datetime64[ns]`` (midnight of the partition date). Raises ``FileNotFoundError``
    when the date or dataset has no partition.
    """
    endpoint = (storage_options or {}).get("endpoint_url")
    store = open_storage(output_dir, s3_endpoint_url=str(endpoint) if endpoint else None)
    if date is None:
        parts = [p for p in _partitions(store, dataset) if _PARTITION.fullmatch(p.split("/")[-1])]
        if not parts:
            raise FileNotFoundError(f"no date partitions under {store.uri(dataset)}")
    else:
        parts = [partition_name(dataset, _as_date(date))]
    tables = [_read_partition(store, p) for p in parts]
    table = (
        tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")
    )
    return _to_frame(table)


def published_ok_ids(
    output_dir: Output, run_date: date, dataset: str = "tracks"
) -> set[str] | None:
    """Spotify IDs of the rows of status ``ok`` in the published ``run_date`` partition
    (None: nothing published).

    Publish reads this before it replaces a partition, so a run that fetched less (the API
    down, a wrong URL) never overwrites rows a better run enriched, unless forced (issue 12).
    """
    try:
        table = _read_partition(_storage(output_dir), partition_name(dataset, run_date))
    except FileNotFoundError:
        return None
    if not {"status", "spotify_id"} <= set(table.column_names):
        return None
    ok = table.filter(pc.equal(table.column("status"), "ok")).column("spotify_id")
    return {str(x) for x in ok.to_pylist() if x is not None}


def _partitions(store: Storage, dataset: str) -> list[str]:
    if isinstance(store, LocalStorage):
        root = store.path(dataset)
        return sorted(f"{dataset}/{p.name}" for p in root.glob("date=*") if p.is_dir())
    return committed_partitions(store, dataset)


def _read_partition(store: Storage, part: str) -> pa.Table:
    if isinstance(store, LocalStorage):
        path = store.path(part)
        if not path.is_dir():
            raise FileNotFoundError(f"no partition {path}")
        files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith((".", "_")))
        table = pa.concat_tables(
            [pq.read_table(f).replace_schema_metadata(None) for f in files],
            promote_options="permissive",
        )
    else:
        table = read_committed(store, part)
    if isinstance(store, LocalStorage):  # on object storage read_committed checks the marker
        manifest = store.path(part) / MANIFEST_FILE
        raw = manifest.read_bytes() if manifest.is_file() else None
        check_manifest(raw, table, store.uri(part))
    day = _as_date(part.rsplit("/", 1)[-1].removeprefix("date="))
    return table.append_column(PARTITION_COLUMN, pa.array([day] * table.num_rows, pa.date32()))


def _to_frame(table: pa.Table) -> pd.DataFrame:
    frame = table.to_pandas(types_mapper=nullable_types_mapper)
    for fld in table.schema:
        if pa.types.is_list(fld.type) or pa.types.is_large_list(fld.type):
            frame[fld.name] = pd.Series(table.column(fld.name).to_pylist(), dtype=object)
    frame[PARTITION_COLUMN] = pd.to_datetime(frame[PARTITION_COLUMN]).astype("datetime64[ns]")
    return frame


# -- helpers --------------------------------------------------------------------------------


def _storage(output: Output) -> Storage:
    return open_storage(output)


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
