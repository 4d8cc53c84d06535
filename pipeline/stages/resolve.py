"""Stage 2: Spotify track IDs -> ReccoBeats IDs, through ``GET /v1/track?ids=``.

Only IDs the registry does not know within TTL are asked (plus found ones whose track
metadata has expired from the tracks cache). Each chunk's answer is recorded at once:
returned IDs are *found* (their metadata goes to the tracks cache), asked-but-absent IDs are
*missing*, and only from such a well-formed answer. A chunk the API rejects with its own
validation 400 is bisected until the offending IDs are isolated, within a request budget and
only while some part of the chunk gets answered (``bisect.py``); a chunk that fails after
retries, or whose rejection is not the API's own, leaves its IDs unrecorded (``failed``) so
the next run asks again.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from pipeline.api.client import ReccoBeatsClient
from pipeline.errors import APIError, ClientRequestError
from pipeline.stages.bisect import (
    Bisector,
    ChunkBudget,
    is_validation_rejection,
    rejects_everything,
)
from pipeline.stages.context import StageContext
from pipeline.stages.runner import StageTally, StageWork, chunked, run_stages
from pipeline.state.caches import Caches
from pipeline.state.rows_from_records import tracks_frame

if TYPE_CHECKING:
    from pipeline.api.client import Batch
    from pipeline.api.records import Track

log = logging.getLogger(__name__)

MALFORMED_REASON = "the batch held malformed records, so their absence proves nothing"
BUDGET_REASON = "the 400-bisection's request budget ran out before they were isolated"


@dataclass
class ResolveOutcome(StageTally):
    """What the stage did; the report reads these figures (``failed``: Spotify IDs)."""

    distinct: int = 0
    known: int = 0
    asked: int = 0
    found: int = 0
    missing: int = 0
    rejected_by_api: list[str] = field(default_factory=list)


def ids_to_resolve(spotify_ids: Sequence[str], caches: Caches, *, count: bool = True) -> list[str]:
    """IDs the registry does not know within TTL, plus found ones lacking fresh metadata.

    This is the stage's one cache question, so it is where hits and misses are counted.
    """
    look = caches.registry.lookup(spotify_ids, count=count)
    ask = look.stale_or_unknown
    found = look.fresh[look.fresh["status"] == "found"]
    if len(found):
        stale_rids = set(caches.tracks.lookup(found["reccobeats_id"], count=count).stale_or_unknown)
        if stale_rids:
            refresh = found.loc[found["reccobeats_id"].isin(stale_rids), "spotify_id"]
            ask = list(dict.fromkeys([*ask, *refresh.tolist()]))
    return ask


def resolved_ids(caches: Caches, spotify_ids: Sequence[str]) -> pd.DataFrame:
    """``spotify_id, reccobeats_id`` of the IDs the registry knows as found (within TTL)."""
    known = caches.registry.known(spotify_ids, count=False)
    found = known[known["status"] == "found"]
    return found[["spotify_id", "reccobeats_id"]].reset_index(drop=True)


def resolve_ids(spotify_ids: Sequence[str], ctx: StageContext) -> ResolveOutcome:
    """Resolve the distinct ``spotify_ids`` on their own (one Airflow task, or a test)."""
    work = ResolveWork(spotify_ids, ctx)
    run_stages([work], ctx)
    return work.out


class ResolveWork(StageWork[list[str], "ChunkAnswer"]):
    """The resolve stage's chunks; ``listeners`` hear every chunk's answer as it lands."""

    desc = "resolve IDs"

    def __init__(self, spotify_ids: Sequence[str], ctx: StageContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.out = ResolveOutcome(distinct=len(spotify_ids))
        self.ask = ids_to_resolve(spotify_ids, ctx.caches)
        self.out.known = self.out.distinct - len(self.ask)
        self.out.asked = len(self.ask)
        self._queue = deque(chunked(self.ask, ctx.config.chunk_size))
        self.planned = len(self._queue)
        self.max_in_progress = ctx.config.chunk_concurrency
        self._bisector = Bisector()  # run-wide: once the API rejects everything, stop halving
        #: called with (found spotify_id -> reccobeats_id, every Spotify ID of the chunk)
        self.listeners: list[Callable[[dict[str, str], list[str]], None]] = []
        if self.ask:
            log.info(
                "resolve: %d distinct IDs, %d known, asking %d in %d chunks",
                self.out.distinct, self.out.known, self.out.asked, self.planned,
            )  # fmt: skip
        else:
            log.info("resolve: all %d IDs known to the registry within TTL", self.out.distinct)

    def has_queued(self) -> bool:
        return bool(self._queue)

    def take(self) -> list[str] | None:
        return self._queue.popleft() if self._queue else None

    def run(self, chunk: list[str]) -> ChunkAnswer:
        return resolve_chunk(chunk, self.ctx.client, self.ctx.caches, self._bisector)

    def record(self, chunk: list[str], answer: ChunkAnswer) -> None:
        out = self.out
        out.chunks += 1
        out.found += len(answer.found)
        out.missing += len(answer.missing) + len(answer.rejected)
        out.rejected_by_api.extend(answer.rejected)
        if answer.unsure:
            out.failed.extend(answer.unsure)
            out.errors.append(
                f"{len(answer.unsure)} IDs left unresolved: {answer.unsure_reason} "
                "(asked again next run)"
            )
        self._tell(answer.found, chunk)

    def fail(self, chunk: list[str], error: APIError) -> None:
        self.out.failure(chunk, error, "resolve")
        self._tell({}, chunk)

    def _tell(self, found: dict[str, str], chunk: list[str]) -> None:
        """Tell the listeners what the registry now holds as found for ``chunk``, not only
        what this answer found.

        Why: a chunk also re-asks IDs the registry still maps (their track metadata went
        stale). When it fails, or leaves them unsure, the registry keeps their mapping, and
        publish plans recommendation seeds from the registry; told only ``{}``, the
        recommendations stage had planned them without those IDs, so it asked for seed sets
        publish never looks up, and the playlist's recommendations were missing from the
        output."""
        held = resolved_ids(self.ctx.caches, chunk)
        found = {**dict(zip(held["spotify_id"], held["reccobeats_id"], strict=True)), **found}
        for listener in self.listeners:
            listener(found, chunk)


@dataclass
class ChunkAnswer:
    """One chunk's answer, already recorded in the registry (except ``unsure``)."""

    found: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # the API answered 400 for these alone
    unsure: list[str] = field(default_factory=list)  # not recorded: absence proves nothing
    unsure_reason: str = MALFORMED_REASON
    answered: int = 0  # sub-requests the API answered (200): a bisection's sanity check

    def __iadd__(self, other: ChunkAnswer) -> ChunkAnswer:
        self.found.update(other.found)
        self.missing += other.missing
        self.rejected += other.rejected
        if other.unsure:
            self.unsure += other.unsure
            self.unsure_reason = other.unsure_reason
        self.answered += other.answered
        return self


def resolve_chunk(
    chunk: list[str], client: ReccoBeatsClient, caches: Caches, bisector: Bisector | None = None
) -> ChunkAnswer:
    """Ask one chunk; on the API's own 400 bisect (``bisect.py``) so one bad ID cannot sink
    its neighbours, and record "missing" only from well-formed answers."""
    try:
        return _record(chunk, client.get_tracks(chunk), caches)
    except ClientRequestError as exc:
        if not is_validation_rejection(exc):
            raise  # not the API's verdict on these IDs (or 4042 wrong path): fail the chunk
        first = exc
    bisector = bisector or Bisector()
    if bisector.gave_up is not None or len(chunk) == 1:
        raise rejects_everything(len(chunk), first)
    answer, rejected = _bisect(chunk, client, caches, ChunkBudget(len(chunk)), bisector)
    if answer.answered == 0:
        error = rejects_everything(len(chunk), first)
        bisector.give_up(error)
        raise error
    if rejected:
        log.warning("resolve: the API rejects IDs %s (400); recorded as missing", rejected)
        caches.registry.record_missing(rejected)
        answer.rejected += rejected
    return answer


def _bisect(
    chunk: list[str], client: ReccoBeatsClient, caches: Caches, budget: ChunkBudget,
    bisector: Bisector,
) -> tuple[ChunkAnswer, list[str]]:  # fmt: skip
    """Halve ``chunk`` (already rejected as a whole); the answers and the lone rejected IDs
    (not recorded yet: only a chunk with some answered part may record them)."""
    answer, rejected = ChunkAnswer(), []
    mid = len(chunk) // 2
    for half in (chunk[:mid], chunk[mid:]):
        if bisector.gave_up is not None or not budget.spend():
            answer += ChunkAnswer(unsure=list(half), unsure_reason=BUDGET_REASON)
            continue
        try:
            answer += _record(half, client.get_tracks(half), caches)
        except ClientRequestError as exc:
            if not is_validation_rejection(exc):
                raise
            if len(half) == 1:
                rejected += half
                continue
            sub, sub_rejected = _bisect(half, client, caches, budget, bisector)
            answer += sub
            rejected += sub_rejected
    return answer, rejected


def _record(chunk: list[str], tracks: Batch[Track], caches: Caches) -> ChunkAnswer:
    """Record one well-formed batch answer: returned IDs found, absent ones missing."""
    asked = set(chunk)
    mine = [t for t in tracks if t.spotify_id in asked]
    found = {t.spotify_id: t.reccobeats_id for t in mine}
    absent = [s for s in chunk if s not in found]
    if mine:
        caches.tracks.put(tracks_frame(mine))
    caches.registry.record_found(found)
    if tracks.bad_items:
        # One of the absent IDs may be the broken record: "not found" would be a guess that
        # sticks for 14 days. Leave them unrecorded; the next run asks again.
        return ChunkAnswer(found=found, unsure=absent, answered=1)
    caches.registry.record_missing(absent)
    return ChunkAnswer(found=found, missing=absent, answered=1)
