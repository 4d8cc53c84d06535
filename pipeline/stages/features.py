"""Stage 3: audio features for resolved tracks, through ``GET /v1/audio-features?ids=``.

Only tracks whose features are not cached within TTL are asked, in batches of the largest
size the API accepts (one call per track was what made the old system take minutes). Tracks
the API has no features for are cached as ``missing`` with the short TTL, so they are not
asked again every night.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from pipeline.errors import APIError
from pipeline.stages.context import StageContext
from pipeline.stages.runner import StageTally, StageWork, run_stages
from pipeline.state.rows_from_records import features_frame, missing_features_frame

log = logging.getLogger(__name__)


@dataclass
class FeaturesOutcome(StageTally):
    """What the stage did (``failed``: ReccoBeats IDs)."""

    resolved: int = 0
    cached: int = 0
    asked: int = 0
    found: int = 0
    missing: int = 0


def fetch_features(resolved: pd.DataFrame, ctx: StageContext) -> FeaturesOutcome:
    """Fill the features cache for ``resolved`` (columns ``spotify_id``, ``reccobeats_id``)."""
    work = FeaturesWork(ctx)
    work.add(dict(zip(resolved["spotify_id"], resolved["reccobeats_id"], strict=True)))
    work.upstream_done = lambda: True
    work.log_plan()
    run_stages([work], ctx)
    return work.out


#: One chunk: (Spotify ID, ReccoBeats ID) pairs. The stage asks by Spotify ID (confirmed live
#: for this endpoint) and keys the answers by href.
Pairs = list[tuple[str, str]]


class FeaturesWork(StageWork[Pairs, tuple[int, int, list[str]]]):
    """The features stage's chunks, fed with resolved tracks as the resolve stage answers.

    A chunk is handed out when a full batch is waiting, or when nothing more can come
    (``upstream_done``), so the stage makes ``ceil(tracks / chunk_size)`` calls, the same as
    when it ran after resolve had finished.
    """

    desc = "audio features"

    def __init__(self, ctx: StageContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.out = FeaturesOutcome()
        self.max_in_progress = ctx.config.chunk_concurrency
        self.upstream_done: Callable[[], bool] = lambda: True
        self._seen: set[str] = set()
        self._waiting: Pairs = []

    def add(self, found: dict[str, str]) -> None:
        """Tracks resolved (now or before): ask those whose features are not cached."""
        new = {s: r for s, r in found.items() if r not in self._seen}
        if not new:
            return
        self._seen.update(new.values())
        stale = set(self.ctx.caches.features.stale_or_unknown(list(new.values())))
        self.out.resolved += len(new)
        self.out.cached += len(new) - len(stale)
        self.out.asked += len(stale)
        self._waiting.extend((s, r) for s, r in new.items() if r in stale)
        waiting_chunks = -(-len(self._waiting) // self.ctx.config.chunk_size)
        self.planned = self.out.chunks + self.outstanding + waiting_chunks

    def log_plan(self) -> None:
        out = self.out
        if out.asked:
            log.info(
                "features: %d resolved, %d cached, asking %d in %d chunks",
                out.resolved, out.cached, out.asked, self.planned,
            )  # fmt: skip
        else:
            log.info("features: all %d resolved tracks cached within TTL", out.resolved)

    def has_queued(self) -> bool:
        return bool(self._waiting)

    def take(self) -> Pairs | None:
        size = self.ctx.config.chunk_size
        if len(self._waiting) >= size or (self._waiting and self.upstream_done()):
            chunk, self._waiting = self._waiting[:size], self._waiting[size:]
            return chunk
        return None

    def run(self, chunk: Pairs) -> tuple[int, int, list[str]]:
        """(found, recorded as without features, left unsure) for one chunk."""
        caches = self.ctx.caches
        rid_of = dict(chunk)
        feats = self.ctx.client.get_audio_features(list(rid_of))
        got = features_frame([f for f in feats if f.spotify_id in rid_of], rid_of)
        have = set(got["reccobeats_id"])
        absent = [r for r in rid_of.values() if r not in have]
        if len(got):
            caches.features.put(got)
        if feats.bad_items:  # an absent ID may be the broken record: ask again next run
            return len(got), 0, absent
        if absent:
            caches.features.put(missing_features_frame(absent, {r: s for s, r in chunk}))
        return len(got), len(absent), []

    def record(self, chunk: Pairs, result: tuple[int, int, list[str]]) -> None:
        found, missing, unsure = result
        out = self.out
        out.chunks += 1
        out.found += found
        out.missing += missing
        if unsure:
            out.failed.extend(unsure)
            out.errors.append(
                f"{len(unsure)} tracks' features left unknown: the batch held malformed "
                "records (asked again next run)"
            )

    def fail(self, chunk: Pairs, error: APIError) -> None:
        self.out.failure([r for _, r in chunk], error, "features")
