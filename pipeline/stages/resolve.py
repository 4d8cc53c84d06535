"""Stage 2: Spotify track IDs -> ReccoBeats IDs, through ``GET /v1/track?ids=``.

Only IDs the registry does not know within TTL are asked (plus found ones whose track
metadata has expired from the tracks cache). Each chunk's answer is recorded at once:
returned IDs are *found* (their metadata goes to the tracks cache), asked-but-absent IDs are
*missing*. A chunk answered 400 is bisected until the offending IDs are isolated; a chunk that
fails after retries leaves its IDs unrecorded (``failed``) so the next run asks again.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from pipeline.api.client import ReccoBeatsClient
from pipeline.errors import APIError, ClientRequestError
from pipeline.stages.context import StageContext
from pipeline.stages.runner import StageTally, StageWork, chunked, run_stages
from pipeline.state.caches import Caches
from pipeline.state.rows_from_records import tracks_frame

log = logging.getLogger(__name__)

HTTP_BAD_REQUEST = 400


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
        return _resolve_chunk(chunk, self.ctx.client, self.ctx.caches)

    def record(self, chunk: list[str], answer: ChunkAnswer) -> None:
        out = self.out
        out.chunks += 1
        out.found += len(answer.found)
        out.missing += len(answer.missing) + len(answer.rejected)
        out.rejected_by_api.extend(answer.rejected)
        if answer.unsure:
            out.failed.extend(answer.unsure)
            out.errors.append(
                f"{len(answer.unsure)} IDs left unresolved: the batch held malformed "
                "records, so their absence proves nothing (asked again next run)"
            )
        self._tell(answer.found, chunk)

    def fail(self, chunk: list[str], error: APIError) -> None:
        self.out.failure(chunk, error, "resolve")
        self._tell({}, chunk)

    def _tell(self, found: dict[str, str], chunk: list[str]) -> None:
        for listener in self.listeners:
            listener(found, chunk)


@dataclass
class ChunkAnswer:
    """One chunk's answer, already recorded in the registry (except ``unsure``)."""

    found: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # the API answered 400 for these alone
    unsure: list[str] = field(default_factory=list)  # absent from a batch with broken records

    def __iadd__(self, other: ChunkAnswer) -> ChunkAnswer:
        self.found.update(other.found)
        self.missing += other.missing
        self.rejected += other.rejected
        self.unsure += other.unsure
        return self


def _resolve_chunk(chunk: list[str], client: ReccoBeatsClient, caches: Caches) -> ChunkAnswer:
    """Ask one chunk; bisect on 400 so one bad ID cannot sink its neighbours."""
    try:
        tracks = client.get_tracks(chunk)
    except ClientRequestError as exc:
        if exc.http_status != HTTP_BAD_REQUEST:
            raise  # e.g. 4042 wrong path: nothing to isolate, the whole stage is misconfigured
        if len(chunk) == 1:
            log.warning("resolve: the API rejects ID %s (400); recorded as missing", chunk[0])
            caches.registry.record_missing(chunk)
            return ChunkAnswer(rejected=list(chunk))
        mid = len(chunk) // 2
        answer = _resolve_chunk(chunk[:mid], client, caches)
        answer += _resolve_chunk(chunk[mid:], client, caches)
        return answer
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
        return ChunkAnswer(found=found, unsure=absent)
    caches.registry.record_missing(absent)
    return ChunkAnswer(found=found, missing=absent)
