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
* Two ways to persist. ``journal()`` appends only the rows put since the last journal or
  checkpoint, as one small file in ``<file>.journal/`` (atomic; O(new rows)), so a stage can
  save after every chunk even when the table holds a million rows. ``checkpoint()`` rewrites
  the whole file atomically, records in its metadata the last journal entry it includes,
  then deletes the journal. Loading reads the file and replays newer journal entries in
  order, so a killed run loses at most what was in flight. (A crash between the rewrite and
  the deletion is harmless: the marker tells which entries are already in the file.)
* ``multi_row=True`` lets one key own several rows (recommendations: one row per
  recommended track). A put replaces *all* rows of its keys; fresh() returns all of them.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.state.statedir import atomic_write, quarantine, read_parquet_safely

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

CHECKED_AT = "checked_at"
STATUS = "status"
CHECKED_AT_TYPE = pa.timestamp("us", tz="UTC")
_EXPIRES = "__expires_us"  # hidden column: checked_at + ttl(status), int64 microseconds
_SEQ = "__seq"  # hidden column while merging: put order, for last-write-wins
_NEVER = np.iinfo(np.int64).min
JOURNAL_SUFFIX = ".journal"
_JOURNAL_UPTO = b"reccobeats_journal_upto"  # base-file metadata: last journal entry included
_journal_names = itertools.count()


def utc_now() -> datetime:
    """The default clock: aware UTC now."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Lookup:
    """Answer to one question about many keys: fresh rows and the distinct keys to fetch."""

    fresh: pd.DataFrame
    stale_or_unknown: list[str]


class TtlTable:
    """A keyed table at ``path`` with per-status TTLs; thread-safe (one lock per table)."""

    def __init__(
        self,
        path: Path | str,
        key: str,
        schema: pa.Schema,
        ttl_for_status: Mapping[str, timedelta],
        clock: Clock = utc_now,
        *,
        multi_row: bool = False,
    ) -> None:
        _check_schema(schema, key)
        self.path = Path(path)
        self.key = key
        self.schema = schema
        self.multi_row = multi_row
        self._clock = clock
        self._ttl_us = {s: _to_us(ttl) for s, ttl in ttl_for_status.items()}
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()  # orders concurrent checkpoints
        self._pending: list[pa.Table] = []
        self._unjournaled: list[pa.Table] = []
        self._seq = 0
        self._dirty = False
        self.hits = 0
        self.misses = 0
        self.journal_dir = self.path.with_name(self.path.name + JOURNAL_SUFFIX)
        upto = _journal_marker(self.path)
        self._df = self._frame(read_parquet_safely(self.path, schema))
        self._replay_journal(upto)

    # -- reading ---------------------------------------------------------------------------

    def lookup(self, keys: Iterable[str] | pd.Series, *, count: bool = True) -> Lookup:
        """Fresh rows and stale-or-unknown keys in one pass (counts each key once).

        ``count=False`` for re-reads that are not cache questions (e.g. assembling output
        after the fetch), so hit rates stay honest.
        """
        wanted = _distinct(keys)
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

    def frame(self) -> pd.DataFrame:
        """Every row (fresh or not), key as a column; a snapshot, safe to keep."""
        with self._lock:
            return self._public(self._merged())

    def __len__(self) -> int:
        with self._lock:
            return len(self._merged())

    # -- writing ---------------------------------------------------------------------------

    def put(self, rows: pd.DataFrame) -> None:
        """Upsert ``rows`` by key (last write wins); ``checked_at`` defaults to now.

        Rows are validated against the schema here, so a bad row fails in the thread that
        made it, not later at checkpoint.
        """
        if rows.empty:
            return
        table = self._to_arrow(rows)
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
        with self._write_lock:
            with self._lock:
                if not self._unjournaled:
                    return 0
                batch = pa.concat_tables(self._unjournaled)
                self._unjournaled = []
            name = f"{time.time_ns():020d}-{os.getpid()}-{next(_journal_names):06d}.parquet"
            try:
                atomic_write(self.journal_dir / name, lambda f: pq.write_table(batch, f))
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
            entries = self._journal_entries()
            with self._lock:
                if not self._dirty and not entries:
                    return 0
                df = self._merged()
                unjournaled, self._unjournaled = self._unjournaled, []
                self._dirty = False
            upto = entries[-1].name if entries else ""
            table = pa.Table.from_pandas(self._public(df), schema=self.schema, preserve_index=False)
            table = table.replace_schema_metadata({_JOURNAL_UPTO: upto.encode()})
            try:
                atomic_write(self.path, lambda f: pq.write_table(table, f, compression="zstd"))
            except BaseException:
                with self._lock:
                    self._dirty = True
                    self._unjournaled = unjournaled + self._unjournaled
                raise
            for entry in entries:
                entry.unlink(missing_ok=True)
            return table.num_rows

    def prune(self, now: datetime | None = None, grace_factor: float = 2.0) -> int:
        """Drop rows older than ``grace_factor`` x their TTL; returns rows dropped.

        Keeps the files from growing without bound with IDs that never come back.
        """
        now_us = self._now_us() if now is None else _dt_to_us(now)
        with self._lock:
            df = self._merged()
            ttl = _ttl_column(df[STATUS], self._ttl_us)
            checked = df[CHECKED_AT].array.as_unit("us").asi8
            keep = ~np.isnan(ttl) & (checked + np.nan_to_num(ttl) * grace_factor > now_us)
            dropped = int((~keep).sum())
            if dropped:
                self._df = df[keep]
                self._dirty = True
            return dropped

    # -- internals -------------------------------------------------------------------------

    def _journal_entries(self) -> list[Path]:
        if not self.journal_dir.is_dir():
            return []
        return sorted(self.journal_dir.glob("*.parquet"))

    def _replay_journal(self, upto: str) -> None:
        """Queue the journal entries newer than the file's marker, oldest first."""
        seq_schema = self.schema.append(pa.field(_SEQ, pa.int64()))
        for entry in self._journal_entries():
            if entry.name <= upto:
                continue  # already in the file (a crash came between rewrite and deletion)
            try:
                table = pq.read_table(entry).select(seq_schema.names).cast(seq_schema)
            except (OSError, ValueError, TypeError, KeyError, pa.ArrowException) as exc:
                quarantine(entry, reason=str(exc))
                continue
            stored = table.column(_SEQ).to_numpy()
            retagged = self._seq + 1 + stored - stored.min() if len(stored) else stored
            self._seq = int(retagged.max()) if len(retagged) else self._seq
            table = table.set_column(
                table.schema.get_field_index(_SEQ), _SEQ, pa.array(retagged, pa.int64())
            )
            self._pending.append(table.replace_schema_metadata(None))
            self._dirty = True
        if self._dirty:
            log.info("%s: replayed the journal of an unfinished run", self.path.name)

    def _now_us(self) -> int:
        return _dt_to_us(self._clock())

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
        df = table.to_pandas(types_mapper=_types_mapper, self_destruct=False)
        if not keep_seq and _SEQ in df:
            df = df.drop(columns=_SEQ)
        df = df[df[self.key].notna()]
        ttl = _ttl_column(df[STATUS], self._ttl_us)
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

    def _to_arrow(self, rows: pd.DataFrame) -> pa.Table:
        """Validate ``rows`` and convert them to the schema (fills defaults)."""
        rows = rows.reset_index(drop=True) if not isinstance(rows.index, pd.RangeIndex) else rows
        extra = sorted(set(rows.columns) - set(self.schema.names))
        if extra:
            raise ValueError(f"{self.path.name}: unknown column(s) {extra}")
        for required in (self.key, STATUS):
            if required not in rows or rows[required].isna().any():
                raise ValueError(f"{self.path.name}: every row needs a {required!r}")
        unknown = set(rows[STATUS].unique()) - set(self._ttl_us)
        if unknown:
            raise ValueError(
                f"{self.path.name}: status {sorted(unknown)} has no TTL "
                f"(known: {sorted(self._ttl_us)})"
            )
        rows = rows.copy()
        rows[CHECKED_AT] = _checked_at_column(rows.get(CHECKED_AT), self._clock(), len(rows))
        for name in self.schema.names:
            if name not in rows:
                rows[name] = None
        try:
            table = pa.Table.from_pandas(
                rows[self.schema.names], schema=self.schema, preserve_index=False
            )
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise ValueError(f"{self.path.name}: rows do not fit the schema: {exc}") from exc
        return table.replace_schema_metadata(None)


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


def _journal_marker(path: Path) -> str:
    """The last journal entry the file at ``path`` includes ("" if none or unreadable)."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return ""
    return meta.get(_JOURNAL_UPTO, b"").decode("utf-8", "replace")


def _check_schema(schema: pa.Schema, key: str) -> None:
    """Fail at construction on a schema the table cannot work with."""
    for name in (key, STATUS):
        if name not in schema.names or not pa.types.is_string(schema.field(name).type):
            raise ValueError(f"schema needs a string column {name!r}")
    if CHECKED_AT not in schema.names or schema.field(CHECKED_AT).type != CHECKED_AT_TYPE:
        raise ValueError(f"schema needs {CHECKED_AT!r} of type {CHECKED_AT_TYPE}")


def _types_mapper(t: pa.DataType) -> object | None:
    """Nullable ints stay ints (not float), lists stay Arrow (cheap, no per-row numpy arrays)."""
    if pa.types.is_integer(t):
        return {
            pa.int8(): pd.Int8Dtype(),
            pa.int16(): pd.Int16Dtype(),
            pa.int32(): pd.Int32Dtype(),
            pa.int64(): pd.Int64Dtype(),
        }.get(t)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pd.ArrowDtype(t)
    return None


def _distinct(keys: Iterable[str] | pd.Series) -> pd.Index:
    """Distinct non-null keys in first-seen order (vectorised)."""
    if not isinstance(keys, pd.Series | pd.Index | np.ndarray | list):
        keys = list(keys)
    idx = pd.Index(keys)
    idx = idx[idx.notna()] if idx.hasnans else idx
    return idx.unique()


def _ttl_column(status: pd.Series, ttl_us: Mapping[str, int]) -> np.ndarray:
    """TTL in microseconds per row as float (NaN: status without a TTL)."""
    return status.map(ttl_us).to_numpy(dtype=np.float64, na_value=np.nan)


def _checked_at_column(given: pd.Series | None, now: datetime, n: int) -> pd.Series:
    """``checked_at`` as UTC microseconds; missing values become ``now``."""
    now_ts = pd.Timestamp(_as_utc(now)).as_unit("us")
    if given is None:
        return pd.Series([now_ts] * n, dtype="datetime64[us, UTC]")
    col = pd.to_datetime(given, utc=True).dt.floor("us").astype("datetime64[us, UTC]")
    return col.fillna(now_ts)


def _as_utc(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        raise ValueError("clock must return timezone-aware datetimes")
    return dt.astimezone(UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _dt_to_us(dt: datetime) -> int:
    return (_as_utc(dt) - _EPOCH) // _US


def _to_us(ttl: timedelta) -> int:
    return ttl // _US
