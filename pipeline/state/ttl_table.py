"""``TtlTable``: a Parquet-backed, keyed table whose rows expire per status.

The registry and every entity cache are one of these (design.md section 4). Design choices:

* The whole table lives in memory as a pandas frame indexed by the key, loaded once with
  pyarrow. Lookups are vectorised (``Index.get_indexer`` + one boolean mask over a
  precomputed ``expires`` column), so asking about a million keys costs a hash join, not a
  Python loop.
* Freshness is ``checked_at + ttl_for_status[status] > now``; the expiry is computed when
  rows enter memory, so changing a TTL setting applies to old rows on the next load.
  A status with no TTL is never fresh.
* ``put`` only validates and appends to a pending list under the lock; pending rows are
  merged lazily (at the next read, ``checkpoint`` or ``len``), so many small puts from worker
  threads cost O(total rows), and a put never waits for a merge of the big table.
* The frame is never mutated in place, only replaced, so ``checkpoint`` can write a snapshot
  without holding the table lock while Parquet is encoded.
* Persistence is ``journal.TableJournal``'s: ``journal()`` hands it the rows put since the
  last save (O(new rows): the stages call it after every chunk), ``checkpoint()`` a snapshot
  of the whole table; loading replays the journal entries the checkpoint does not include.
* ``multi_row=True`` lets one key own several rows (recommendations: one row per
  recommended track). A put replaces *all* rows of its keys; fresh() returns all of them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.clock import Clock, utc_now
from pipeline.io.storage import Storage, open_storage
from pipeline.state.journal import SEQ as _SEQ
from pipeline.state.journal import TableJournal
from pipeline.state.ttl_columns import (
    CHECKED_AT,
    STATUS,
    check_schema,
    distinct,
    dt_to_us,
    rows_to_arrow,
    to_us,
    ttl_column,
    types_mapper,
)

log = logging.getLogger(__name__)

_EXPIRES = "__expires_us"  # hidden column: checked_at + ttl(status), int64 microseconds
_NEVER = np.iinfo(np.int64).min


@dataclass(frozen=True)
class Lookup:
    """Answer to one question about many keys: fresh rows and the distinct keys to fetch."""

    fresh: pd.DataFrame
    stale_or_unknown: list[str]


class TtlTable:
    """A keyed table with per-status TTLs; thread-safe (one lock per table).

    Stored as the file ``path`` (a local path), or as ``path`` relative to ``store`` (a
    state dir or object-store prefix) when one is given.
    """

    def __init__(
        self,
        path: Path | str,
        key: str,
        schema: pa.Schema,
        ttl_for_status: Mapping[str, timedelta],
        clock: Clock = utc_now,
        *,
        multi_row: bool = False,
        store: Storage | None = None,
    ) -> None:
        check_schema(schema, key)
        if store is None:
            store, path = open_storage(Path(path).parent), Path(path).name
        self.files = TableJournal(store, str(path), schema)
        self.key = key
        self.schema = schema
        self.multi_row = multi_row
        self._clock = clock
        self._ttl_us = {s: to_us(ttl) for s, ttl in ttl_for_status.items()}
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()  # orders concurrent checkpoints
        self._pending: list[pa.Table] = []
        self._unjournaled: list[pa.Table] = []
        self._seq = 0
        self._dirty = False
        self.hits = 0
        self.misses = 0
        base, entries = self.files.load()
        self._df = self._frame(base)
        self._replay(entries)

    # -- reading ---------------------------------------------------------------------------

    def lookup(self, keys: Iterable[str] | pd.Series, *, count: bool = True) -> Lookup:
        """Fresh rows and stale-or-unknown keys in one pass (counts each key once).

        ``count=False`` for re-reads that are not cache questions (e.g. assembling output
        after the fetch), so hit rates stay honest.
        """
        wanted = distinct(keys)
        now = self._now_us()
        with self._lock:
            df = self._merged()
        if self.multi_row:
            fresh_keys, rows = self._fresh_multi(df, wanted, now)
        else:
            fresh_keys, rows = self._fresh_unique(df, wanted, now)
        stale = wanted[~fresh_keys].tolist()
        if count:
            with self._lock:
                self.hits += int(fresh_keys.sum())
                self.misses += len(stale)
        return Lookup(self._public(rows), stale)

    def fresh(self, keys: Iterable[str] | pd.Series, *, count: bool = True) -> pd.DataFrame:
        """Rows of ``keys`` that are still fresh, key as first column, in first-asked order."""
        return self.lookup(keys, count=count).fresh

    def stale_or_unknown(self, keys: Iterable[str] | pd.Series) -> list[str]:
        """Distinct ``keys`` that are expired or never seen, in input order."""
        return self.lookup(keys).stale_or_unknown

    def __len__(self) -> int:
        with self._lock:
            return len(self._merged())

    def status_counts(self) -> dict[str, int]:
        """Rows per ``status`` (expired ones included): the dry run's hit-rate estimate."""
        with self._lock:
            counts = self._merged()[STATUS].value_counts()
        return {str(k): int(v) for k, v in counts.items()}

    # -- writing ---------------------------------------------------------------------------

    def put(self, rows: pd.DataFrame) -> None:
        """Upsert ``rows`` by key (last write wins); ``checked_at`` defaults to now.

        Rows are validated against the schema here, so a bad row fails in the thread that
        made it, not later at checkpoint.
        """
        if rows.empty:
            return
        table = rows_to_arrow(
            rows, self.schema, self.key, self._ttl_us, self._clock(), self.files.name
        )
        with self._lock:
            self._seq += 1
            seq = pa.array(np.full(table.num_rows, self._seq, dtype=np.int64))
            tagged = table.append_column(_SEQ, seq)
            self._pending.append(tagged)
            self._unjournaled.append(tagged)
            self._dirty = True

    def journal(self) -> int:
        """Append the rows put since the last save to the journal; returns rows written.

        Costs O(new rows), not O(table): the stages call it after every chunk.
        """
        if not self._unjournaled:
            # Nothing put since the last save (a worker journals every table after its own
            # put). Checked without the locks: another thread may hold this table's lock
            # for a long lookup, and a worker saving its answer to another table must not
            # wait for it (a kill then lost answers that had reached the process). A put
            # that races this read is journaled by the putting thread's own call.
            return 0
        with self._write_lock:
            with self._lock:
                if not self._unjournaled:
                    return 0
                batch = pa.concat_tables(self._unjournaled)
                self._unjournaled = []
            try:
                self.files.append(batch)
            except BaseException:
                with self._lock:
                    self._unjournaled.insert(0, batch)
                raise
            return batch.num_rows

    def checkpoint(self) -> int:
        """Atomically rewrite the table and drop the journal it now includes; returns rows
        written (0: nothing changed, no write).

        Safe from any thread: the snapshot is taken under the lock, written outside it.
        """
        with self._write_lock:
            entries = self.files.entries()
            with self._lock:
                if not self._dirty and not entries:
                    return 0
                df = self._merged()
                unjournaled, self._unjournaled = self._unjournaled, []
                self._dirty = False
            table = pa.Table.from_pandas(self._public(df), schema=self.schema, preserve_index=False)
            try:
                self.files.rewrite(table, entries)
            except BaseException:
                with self._lock:
                    self._dirty = True
                    self._unjournaled = unjournaled + self._unjournaled
                raise
            return table.num_rows

    # -- internals -------------------------------------------------------------------------

    def _replay(self, entries: list[pa.Table]) -> None:
        """Queue journal entries (oldest first) as puts, renumbered after the current ones."""
        for table in entries:
            stored = table.column(_SEQ).to_numpy()
            retagged = self._seq + 1 + stored - stored.min() if len(stored) else stored
            self._seq = int(retagged.max()) if len(retagged) else self._seq
            table = table.set_column(
                table.schema.get_field_index(_SEQ), _SEQ, pa.array(retagged, pa.int64())
            )
            self._pending.append(table)
            self._dirty = True
        if self._dirty:
            log.info("%s: replayed the journal of an unfinished run", self.files.name)

    def _now_us(self) -> int:
        return dt_to_us(self._clock())

    def _fresh_unique(
        self, df: pd.DataFrame, wanted: pd.Index, now: int
    ) -> tuple[np.ndarray, pd.DataFrame]:
        pos = df.index.get_indexer(wanted)
        expires = df[_EXPIRES].to_numpy()
        found = pos >= 0
        is_fresh = found.copy()
        is_fresh[found] = expires[pos[found]] > now
        return is_fresh, df.iloc[pos[is_fresh]]

    def _fresh_multi(
        self, df: pd.DataFrame, wanted: pd.Index, now: int
    ) -> tuple[np.ndarray, pd.DataFrame]:
        # All rows of a key share checked_at/status (a put replaces them together).
        mask = df.index.isin(wanted) & (df[_EXPIRES].to_numpy() > now)
        rows = df[mask]
        fresh_keys = wanted.isin(rows.index)
        order = pd.Index(wanted[fresh_keys]).get_indexer(rows.index)
        rows = rows.iloc[np.argsort(order, kind="stable")]
        return fresh_keys, rows

    def _merged(self) -> pd.DataFrame:
        """Fold pending puts into the frame (caller holds the lock)."""
        if not self._pending:
            return self._df
        pending, self._pending = self._pending, []
        new = self._frame(pa.concat_tables(pending), keep_seq=True)
        if self.multi_row:
            latest = new.groupby(level=0, sort=False)[_SEQ].transform("max")
            new = new[new[_SEQ].to_numpy() == latest.to_numpy()]
        else:
            new = new[~new.index.duplicated(keep="last")]
        new = new.drop(columns=_SEQ)
        old = self._df
        if len(old):
            old = old[~old.index.isin(new.index)]
            new = pd.concat([old, new]) if len(old) else new
        self._df = new
        return new

    def _frame(self, table: pa.Table, keep_seq: bool = False) -> pd.DataFrame:
        """Arrow -> pandas frame indexed by key, plus the computed expiry column."""
        df = table.to_pandas(types_mapper=types_mapper, self_destruct=False)
        if not keep_seq and _SEQ in df:
            df = df.drop(columns=_SEQ)
        df = df[df[self.key].notna()]
        ttl = ttl_column(df[STATUS], self._ttl_us)
        checked = df[CHECKED_AT].array.as_unit("us").asi8
        expires = np.where(np.isnan(ttl), _NEVER, checked + np.nan_to_num(ttl).astype(np.int64))
        df[_EXPIRES] = np.where(checked == _NEVER, _NEVER, expires)
        df = df.set_index(self.key)
        if not keep_seq and not self.multi_row and df.index.has_duplicates:
            df = df[~df.index.duplicated(keep="last")]
        return df

    def _public(self, df: pd.DataFrame) -> pd.DataFrame:
        """Key back as the first column, hidden columns gone, fresh RangeIndex."""
        return df.drop(columns=_EXPIRES).reset_index()[self.schema.names]


class TableBacked:
    """Base of the wrappers that give one ``TtlTable`` a domain API (registry, caches)."""

    table: TtlTable

    def checkpoint(self) -> int:
        """Atomically rewrite the table (folding in its journal); rows written, 0 if unchanged."""
        return self.table.checkpoint()

    def journal(self) -> int:
        """Append the rows recorded since the last save (cheap: after every chunk)."""
        return self.table.journal()

    @property
    def hits(self) -> int:
        return self.table.hits

    @property
    def misses(self) -> int:
        return self.table.misses

    def __len__(self) -> int:
        return len(self.table)


# -- helpers -------------------------------------------------------------------------------
