"""Atomic date partitions on a local filesystem: write aside, then swap in by renames.

A partition is written into a hidden sibling ``.tmp-date=...-<pid>-<uuid>/`` (pyarrow's
dataset discovery ignores names starting with ``.`` or ``_``), fsynced, then swapped in by
ONE atomic step (``exchange.py``: ``renameat2(RENAME_EXCHANGE)``, or a file ``os.replace``
inside the partition dir), so a reader sees the old partition or the new one, never half a
file and never no partition. Stale temp dirs of dead processes are removed by the next
write; an ``.old-`` dir left by an older version's two-rename swap is renamed back if its
date is missing. Object stores have no rename: see ``publish_object.py``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.atomic import fsync_path
from pipeline.io.exchange import swap_in as _swap_in

log = logging.getLogger(__name__)

PART_FILE = "part-0.parquet"
#: A temp dir of a live process younger than this is left alone (another writer's work).
STALE_AFTER_S = 6 * 3600

_SIDE_DIR = re.compile(r"\.(tmp|old)-date=(\d{4}-\d{2}-\d{2})-(\d+)-[0-9a-f]{32}")


def publish_local(
    table: pa.Table, final: Path, extra_files: Mapping[str, bytes] | None = None
) -> None:
    """Replace the partition directory ``final`` with one file holding ``table`` (plus
    ``extra_files``, e.g. the ``_manifest.json``, swapped in with it)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_stale(final.parent)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        pq.write_table(table, tmp / PART_FILE)
        fsync_path(tmp / PART_FILE)
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
            fsync_path(tmp / name)
        fsync_path(tmp)
        _swap_in(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful swap


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
        fsync_path(dataset_dir)


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
