"""Self-healing reads of state files: a file that does not read back is moved aside.

Why: a state file can be truncated by a full disk, edited by hand or written by an older
schema. Every state file is a cache, so losing one costs API calls, never correctness:
instead of failing the run, an unreadable file is moved to ``<name>.corrupt-<UTC stamp>``
(kept for a human to look at) and the run rebuilds it.

Files are named relative to a ``Storage`` root (a local state dir or an object-store
prefix). On object storage a missing file costs one failed GET, not a HEAD + GET.

Parquet and JSON only: pickle/joblib on disk would be code execution on load.
"""

from __future__ import annotations

import copy
import io
import json
import logging
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import StateError
from pipeline.io.storage import LocalStorage, Storage

log = logging.getLogger(__name__)


def read_parquet_safely(store: Storage, name: str, schema: pa.Schema) -> pa.Table:
    """Read ``name`` conformed to ``schema``; a missing file is an empty table.

    A file that cannot be read, or lacks a column of ``schema``, or has a column that does
    not cast to the declared type, is quarantined and an empty table returned, so the run
    rebuilds the cache instead of failing. Extra columns are dropped.
    """
    return read_parquet_with_metadata(store, name, schema)[0]


def read_parquet_with_metadata(
    store: Storage, name: str, schema: pa.Schema
) -> tuple[pa.Table, dict[bytes, bytes]]:
    """``read_parquet_safely`` plus the file's schema metadata ({} if missing/corrupt).

    On object storage a failed GET (network, permissions) raises ``StateError``: only a
    file that arrived and does not parse is quarantined.
    """
    try:
        table = _read_table(store, name)
    except FileNotFoundError:
        return schema.empty_table(), {}
    except StateError:
        raise
    except (OSError, ValueError, TypeError, pa.ArrowException) as exc:
        quarantine(store, name, reason=str(exc))
        return schema.empty_table(), {}
    meta = dict(table.schema.metadata or {})
    try:
        missing = [n for n in schema.names if n not in table.column_names]
        if missing:
            raise ValueError(f"missing column(s) {missing}")
        return table.select(schema.names).cast(schema).replace_schema_metadata(None), meta
    except (ValueError, TypeError, pa.ArrowException) as exc:
        quarantine(store, name, reason=str(exc))
        return schema.empty_table(), {}


def _read_table(store: Storage, name: str) -> pa.Table:
    if isinstance(store, LocalStorage):
        path = store.path(name)
        if not path.exists():
            raise FileNotFoundError(path)
        return pq.read_table(path)
    return pq.read_table(io.BytesIO(_fetch(store, name)))


def _fetch(store: Storage, name: str) -> bytes:
    """The bytes of a remote file; a transport failure is a ``StateError``, never corrupt."""
    try:
        return store.read_bytes(name)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StateError(f"cannot read {store.uri(name)}: {exc}") from exc


def read_json_safely(store: Storage, name: str, default: Any) -> Any:
    """Parsed JSON at ``name``; ``default`` (a copy) if missing, or if corrupt (quarantined)."""
    try:
        data = store.read_bytes(name) if isinstance(store, LocalStorage) else _fetch(store, name)
        return json.loads(data.decode("utf-8"))
    except FileNotFoundError:
        return copy.deepcopy(default)
    except StateError:
        raise
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are both
        quarantine(store, name, reason=str(exc))
        return copy.deepcopy(default)


def quarantine(store: Storage, name: str, reason: str = "") -> str:
    """Move ``name`` aside to ``<name>.corrupt-<UTC timestamp>`` and warn; returns the new
    name. Kept rather than deleted so a human can look at what went wrong."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = f"{name}.corrupt-{stamp}"
    n = 1
    while store.exists(target):
        target = f"{name}.corrupt-{stamp}-{n}"
        n += 1
    try:
        store.move(name, target)
    except OSError as exc:
        raise StateError(
            f"{store.uri(name)} is unreadable ({reason}) and cannot be moved aside: {exc}"
        ) from exc
    log.warning(
        "state file %s is unreadable (%s); quarantined to %s, it will be rebuilt",
        store.uri(name),
        reason or "corrupt",
        target.rsplit("/", 1)[-1],
    )
    return target
