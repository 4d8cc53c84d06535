"""Atomic date partitions on object storage, where there is no rename.

The scheme (docs/reliability.md, "Publishing to object storage"):

1. The partition's data is ONE object, ``<dataset>/date=D/part-0.parquet`` (the same
   layout as on a local disk), written with one PUT. Object stores publish a PUT
   atomically: every reader, ``load_enriched`` or plain ``pd.read_parquet(prefix)``, sees
   the previous run's complete file or this run's complete file, never a mix of two runs'
   files and never half a file. A killed upload (single or multipart) leaves the old object.
2. Then the commit marker ``<dataset>/date=D/_manifest.json`` (ignored by pyarrow/pandas
   discovery: leading ``_``) records the file's size, row count and SHA-256 and the publish
   time. ``load_enriched`` reads the marker first and checks the file against it: a
   mismatch means a publish is between its two PUTs, so it reads both again (a few times,
   briefly apart). A partition without a marker (written by another tool, or a first
   publish killed between its two PUTs) is read as its visible Parquet files.
3. Finally any other visible file in the partition (strays of older layouts or other
   tools) is deleted, so re-running a date replaces exactly that date.

Why not a staging prefix plus a copy: a PUT is already atomic, so a copy would add a request
per file and a window where the copy is visible but not committed. Why not Delta Lake:
plain ``pd.read_parquet`` on a Delta table also reads files of removed versions; this
layout keeps the plain pandas path correct.

Cost per partition: 2 PUTs + 1 LIST to publish, 2 GETs to read back.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.atomic import json_bytes
from pipeline.io.publish_local import PART_FILE
from pipeline.io.storage import Storage

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
#: Reads of a partition caught between a publish's data PUT and its marker PUT retry this
#: many times, this far apart; a publish's two PUTs are milliseconds apart.
_READ_ATTEMPTS = 6
_READ_RETRY_S = 0.05


def publish_object(
    table: pa.Table, store: Storage, partition: str, content: dict[str, Any] | None = None
) -> str:
    """Replace partition ``partition`` (``<dataset>/date=D``) of ``store`` with ``table``;
    returns the partition's URI."""
    buf = io.BytesIO()
    pq.write_table(table, buf)
    data = buf.getvalue()
    store.write_bytes(f"{partition}/{PART_FILE}", data)
    manifest = {
        "format": 1,
        "publish_id": uuid.uuid4().hex,
        "committed_at": datetime.now(UTC).isoformat(),
        "files": [
            {
                "name": PART_FILE,
                "bytes": len(data),
                "rows": table.num_rows,
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        ],
    }
    if content is not None:
        manifest["content"] = content  # run id, rows, schema fingerprint (io/manifest.py)
    store.write_bytes(f"{partition}/{MANIFEST}", json_bytes(manifest))
    strays = [n for n in store.list_files(partition) if n not in (PART_FILE, MANIFEST)]
    store.delete([f"{partition}/{n}" for n in strays if not n.startswith((".", "_"))])
    return store.uri(partition)


def committed_partitions(store: Storage, dataset: str) -> list[str]:
    """The ``date=...`` partitions of ``dataset``, sorted (one LIST per dataset)."""
    return [f"{dataset}/{d}" for d in store.list_dirs(dataset) if d.startswith("date=")]


def read_committed(store: Storage, partition: str) -> pa.Table:
    """The committed content of ``partition``; ``FileNotFoundError`` when it has none."""
    stop = threading.Event()  # only ever waited on with a timeout: a short pause
    data = b""
    for _attempt in range(_READ_ATTEMPTS):
        manifest = _manifest(store, partition)
        if manifest is None:
            return _read_unmanaged(store, partition)
        entries = manifest.get("files") or []
        tables = []
        for entry in entries:
            data = store.read_bytes(f"{partition}/{entry['name']}")
            if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
                break
            tables.append(pq.read_table(io.BytesIO(data)))
        else:
            return _concat(tables)
        stop.wait(_READ_RETRY_S)
    log.warning(
        "%s: data does not match its commit marker after %d reads (a publish was killed "
        "between its two writes?); returning the data, which is one complete file",
        store.uri(partition),
        _READ_ATTEMPTS,
    )
    return pq.read_table(io.BytesIO(data))


def _manifest(store: Storage, partition: str) -> dict[str, Any] | None:
    try:
        parsed = json.loads(store.read_bytes(f"{partition}/{MANIFEST}"))
    except FileNotFoundError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _read_unmanaged(store: Storage, partition: str) -> pa.Table:
    """A partition without a marker: every visible Parquet file (another tool wrote it)."""
    names = [
        n
        for n in store.list_files(partition)
        if n.endswith(".parquet") and not n.startswith((".", "_"))
    ]
    if not names:
        raise FileNotFoundError(f"no committed partition {store.uri(partition)}")
    return _concat([pq.read_table(io.BytesIO(store.read_bytes(f"{partition}/{n}"))) for n in names])


def _concat(tables: list[pa.Table]) -> pa.Table:
    tables = [t.replace_schema_metadata(None) for t in tables]
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="permissive")
