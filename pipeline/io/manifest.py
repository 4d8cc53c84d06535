"""The per-partition manifest: which run wrote it, how many rows, which schema.

Why: a partition is a directory of Parquet; nothing in it said which run published it or
whether the file read back is the one that was written. ``partition_manifest`` builds a
small JSON object the writer stores beside the data (``<dataset>/date=D/_manifest.json``,
ignored by pandas/pyarrow/DuckDB discovery: leading ``_``; on object storage it is the
commit marker's ``content``), and ``check_manifest`` is what ``load_enriched`` runs on
every partition it reads: the row count and the schema fingerprint must match, else a
``ValueError`` names the partition (a file replaced by hand or by another tool).

The fingerprint is the SHA-256 of the Arrow schema's text without metadata, so it changes
exactly when a column's name, type or order does.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from typing import Any

import pyarrow as pa

MANIFEST_FILE = "_manifest.json"
MANIFEST_VERSION = 1


def _type_text(typ: pa.DataType) -> str:
    # A list's item field is named "item" in memory and "element" after a Parquet round
    # trip: only the value type counts.
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return f"list<{_type_text(typ.value_type)}>"
    return str(typ)


def schema_fingerprint(schema: pa.Schema) -> str:
    text = "\n".join(f"{f.name}: {_type_text(f.type)}" for f in schema)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def partition_manifest(
    table: pa.Table, *, dataset: str, run_date: date, run_id: str | None
) -> dict[str, Any]:
    """The manifest's content for ``table`` published as ``dataset``/``run_date``."""
    content: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "dataset": dataset,
        "date": run_date.isoformat(),
        "run_id": run_id,
        "rows": table.num_rows,
        "schema_fingerprint": schema_fingerprint(table.schema),
        "columns": {f.name: _type_text(f.type) for f in table.schema},
    }
    if "status" in table.column_names:
        counts = table.column("status").value_counts().to_pylist()
        content["status_counts"] = {str(c["values"]): int(c["counts"]) for c in counts}
    return content


def manifest_bytes(content: dict[str, Any]) -> bytes:
    """The local ``_manifest.json`` (same shape as the object-store marker's ``content``)."""
    return json.dumps({"content": content}, indent=2, sort_keys=True).encode()


def check_manifest(raw: bytes | None, table: pa.Table, where: str) -> None:
    """Raise ``ValueError`` when ``table`` (read from ``where``) does not match its
    manifest; a partition without one (older versions, other tools) passes."""
    if raw is None:
        return
    try:
        content = json.loads(raw).get("content")
    except (ValueError, AttributeError):
        raise ValueError(f"{where}: {MANIFEST_FILE} is not valid JSON") from None
    if not isinstance(content, dict):
        return  # a commit marker without our content (older writers)
    if content.get("rows") != table.num_rows:
        raise ValueError(
            f"{where}: {table.num_rows} rows, but its manifest (run {content.get('run_id')}) "
            f"says {content.get('rows')}: the data was replaced outside reccobeats-etl"
        )
    expected = content.get("schema_fingerprint")
    if expected and expected != schema_fingerprint(table.schema):
        raise ValueError(
            f"{where}: schema differs from its manifest (run {content.get('run_id')}): the "
            "data was replaced outside reccobeats-etl"
        )
