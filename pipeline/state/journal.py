"""``TableJournal``: the files of one ``TtlTable`` (a checkpoint plus a journal of changes).

Why two kinds of file (design.md section 4, docs/reliability.md): a stage must save after
every answered chunk, so a ``kill -9`` loses only requests in flight, but rewriting a
million-row table after every chunk would cost more than the requests. So:

* ``append(batch)`` writes only the rows put since the last save, as one small file in
  ``<file>.journal/`` (atomic; O(new rows)). Entry names sort in write order.
* ``rewrite(table, included)`` writes the whole table to ``<file>`` atomically, recording in
  its metadata the last journal entry it includes, then deletes those entries.
* ``load()`` reads the file and the entries newer than its marker, oldest first. A crash
  between the rewrite and the deletion is harmless: the marker tells which entries are
  already in the file. An entry that does not read back is quarantined, the rest replayed.

The files live in a ``Storage`` root: a local state dir (temp + fsync + rename) or an
object-store prefix (one PUT per file; PUTs are atomic there). The operation counts stay
proportional to the chunks answered: a save is one PUT, a load one GET of the checkpoint +
one LIST of the journal + one GET per entry not yet folded in, a checkpoint one LIST + one
PUT + one batched DELETE; no file ever written before the last checkpoint is touched again.

This module knows files, not TTLs: the in-memory index (``ttl_table.py``) decides what a
row means; here a batch is an Arrow table with the table's columns plus ``SEQ``.
"""

from __future__ import annotations

import io
import itertools
import os
import time

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import StateError
from pipeline.io.storage import Storage
from pipeline.state.quarantine import quarantine, read_parquet_with_metadata

JOURNAL_SUFFIX = ".journal"
#: Column of journal entries: the put order, so a replay keeps "last write wins".
SEQ = "__seq"
_JOURNAL_UPTO = b"reccobeats_journal_upto"  # checkpoint metadata: last journal entry included
_names = itertools.count()


def _name_ns(name: str) -> int:
    """The nanoseconds an entry's name starts with (0 for the empty marker or a stray name)."""
    head = name.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


class TableJournal:
    """Checkpoint file ``name`` in ``store`` and its journal, for tables of ``schema``."""

    def __init__(self, store: Storage, name: str, schema: pa.Schema) -> None:
        self.store = store
        self.name = name
        self.schema = schema
        self.entry_schema = schema.append(pa.field(SEQ, pa.int64()))
        self.journal_name = name + JOURNAL_SUFFIX
        self._last_ns = 0  # the newest entry (or checkpoint marker) seen: names only go up

    def load(self) -> tuple[pa.Table, list[pa.Table]]:
        """The checkpointed table and the journal entries it does not include, oldest first.

        Missing files are empty; unreadable ones are quarantined (the run rebuilds them).
        """
        base, meta = read_parquet_with_metadata(self.store, self.name, self.schema)
        upto = meta.get(_JOURNAL_UPTO, b"").decode("utf-8", "replace")
        entries = []
        names = self.entries()
        self._last_ns = max([self._last_ns, *map(_name_ns, [upto, *names])])
        for name in names:
            if name <= upto:
                continue  # already in the file (a crash came between rewrite and deletion)
            entry = f"{self.journal_name}/{name}"
            try:
                table = pq.read_table(io.BytesIO(self.store.read_bytes(entry)))
                table = table.select(self.entry_schema.names)
                entries.append(table.cast(self.entry_schema).replace_schema_metadata(None))
            except FileNotFoundError:
                continue  # folded in and deleted by a checkpoint since the listing
            except (OSError, ValueError, TypeError, KeyError, pa.ArrowException) as exc:
                if self.store.remote and isinstance(exc, OSError):
                    raise StateError(f"cannot read {self.store.uri(entry)}: {exc}") from exc
                quarantine(self.store, entry, reason=str(exc))
        return base, entries

    def entries(self) -> list[str]:
        """Names of the journal entries stored, in write order."""
        try:
            names = self.store.list_files(self.journal_name)
        except OSError as exc:
            raise StateError(f"cannot list {self.store.uri(self.journal_name)}: {exc}") from exc
        return [n for n in names if n.endswith(".parquet") and not n.startswith(".")]

    def append(self, batch: pa.Table) -> None:
        """Write ``batch`` (columns of ``entry_schema``) as the newest journal entry."""
        # Wall-clock names order entries across runs and processes; never below the newest
        # seen, or an entry written after the clock stepped back (NTP, a resumed VM) would
        # sort below the checkpoint's marker and be skipped on replay: lost.
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        name = f"{self._last_ns:020d}-{os.getpid()}-{next(_names):06d}.parquet"
        self._write(f"{self.journal_name}/{name}", batch, compression="snappy")

    def rewrite(self, table: pa.Table, included: list[str]) -> None:
        """Atomically replace the checkpoint with ``table`` (which includes the journal
        entries ``included``), then delete those entries."""
        upto = included[-1] if included else ""
        table = table.replace_schema_metadata({_JOURNAL_UPTO: upto.encode()})
        self._write(self.name, table, compression="zstd")
        try:
            self.store.delete([f"{self.journal_name}/{n}" for n in included])
        except OSError as exc:
            raise StateError(f"cannot delete journal entries of {self.uri}: {exc}") from exc

    @property
    def uri(self) -> str:
        """Where the checkpoint lives (a path or an object-store URI), for messages."""
        return self.store.uri(self.name)

    def _write(self, name: str, table: pa.Table, compression: str) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression=compression)
        try:
            self.store.write_bytes(name, buf.getvalue())
        except OSError as exc:
            raise StateError(f"cannot write {self.store.uri(name)}: {exc}") from exc
