"""Stage 4: recommendations per playlist, through ``GET /v1/track/recommendation``.

Seeds are a playlist's resolved tracks in input order, cut into chunks of up to 5 (the
API's maximum), at most ``max_seed_chunks_per_playlist`` chunks per playlist. The limiter
spaces a playlist's calls as it spaces every call (the API asks clients to avoid bursts of
them); ``seed_stagger_s`` adds a wait of index x it before each, off by default: the wait
held one of the chunks started, so on a server of 2 workers one slot stayed empty (a job
holding 2 in flight took 44.4 s with 0.2 s, 39.8 s without). Answers are cached per
(sorted seeds, params), so an identical seed set asked by two playlists or two nights
within TTL costs one call.
Titles, artists and durations come from the recommendation response itself: no extra
track look-ups.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

import pandas as pd

from pipeline.config import StageConfig
from pipeline.errors import APIError
from pipeline.stages.context import StageContext
from pipeline.stages.runner import StageWork, chunked, run_stages
from pipeline.state.caches import Caches
from pipeline.state.rows_from_records import recommendation_rows

log = logging.getLogger(__name__)

ALL_TRACKS = "__all__"  # group name when the input has no playlist_id column
# (only then: with a playlist_id column every group is a user value, so it cannot collide)


@dataclass(frozen=True)
class SeedChunk:
    playlist_id: str  # ALL_TRACKS when the input has no playlist_id column
    index: int  # position within its playlist: sets the stagger
    seeds: tuple[str, ...]  # Spotify IDs, sorted
    request_key: str


@dataclass
class RecommendOutcome:
    playlists: int = 0
    chunks: int = 0
    cached: int = 0
    asked: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    #: Playlists whose recommendations a budget left for the next run.
    pending_playlists: int = 0


def request_key(seeds: tuple[str, ...], size: int) -> str:
    """Cache key: the sorted seed set plus the parameters that change the answer."""
    return ",".join(sorted(seeds)) + f"|size={size}"


def playlist_groups(rows: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """``(playlist, its distinct Spotify IDs in input order)``, playlists sorted by id.

    The whole input is one group (``ALL_TRACKS``) when it has no ``playlist_id`` column.
    """
    if "playlist_id" in rows.columns:
        groups = rows.dropna(subset=["playlist_id"]).groupby("playlist_id", sort=True)
        items = [(str(pid), g["spotify_id"]) for pid, g in groups]
    else:
        items = [(ALL_TRACKS, rows["spotify_id"])]
    return [(pid, list(dict.fromkeys(ids.dropna()))) for pid, ids in items]


def seed_chunks_for(
    playlist_id: str, spotify_ids: list[str], found_ids: set[str], config: StageConfig
) -> list[SeedChunk]:
    """One playlist's seed chunks: its resolved tracks in input order, 5 at a time."""
    seeds = [s for s in spotify_ids if s in found_ids]
    parts = chunked(seeds, config.seeds_per_chunk)[: config.max_seed_chunks_per_playlist]
    plan = []
    for i, part in enumerate(parts):
        key_seeds = tuple(sorted(part))
        key = request_key(key_seeds, config.recommendation_size)
        plan.append(SeedChunk(playlist_id, i, key_seeds, key))
    return plan


def plan_seed_chunks(
    rows: pd.DataFrame, found_ids: set[str], config: StageConfig
) -> list[SeedChunk]:
    """Seed chunks for every playlist (or the whole input when there is no playlist_id)."""
    return [
        chunk
        for pid, ids in playlist_groups(rows)
        for chunk in seed_chunks_for(pid, ids, found_ids, config)
    ]


def fetch_recommendations(
    rows: pd.DataFrame, found_ids: set[str], ctx: StageContext
) -> RecommendOutcome:
    """Fill the recommendations cache for every playlist of ``rows`` (resolve already done)."""
    work = RecommendWork(rows, found_ids, set(), ctx)
    run_stages([work], ctx)
    work.log_summary()
    return work.out


class RecommendWork(StageWork[SeedChunk, int]):
    """The recommendation stage's chunks; a playlist is planned once all its tracks are answered.

    ``unanswered`` are the Spotify IDs the resolve stage is still to answer this run (empty
    when it ran before); ``on_resolved`` is the resolve stage's listener. Identical seed sets
    across playlists (or cached within TTL) are asked at most once.
    """

    desc = "recommendations"

    def __init__(
        self, rows: pd.DataFrame, found_ids: set[str], unanswered: set[str], ctx: StageContext
    ) -> None:
        super().__init__()
        self.ctx = ctx
        self.out = RecommendOutcome()
        self.max_in_progress = ctx.config.seed_chunk_concurrency
        self._found = set(found_ids)
        self._unanswered = set(unanswered)
        self._groups = playlist_groups(rows)
        self._waiting_for: list[int] = []
        self._groups_of: dict[str, list[int]] = {}
        self._queue: deque[SeedChunk] = deque()
        self._asked_keys: set[str] = set()
        for g, (_pid, ids) in enumerate(self._groups):
            pending = [s for s in ids if s in self._unanswered]
            self._waiting_for.append(len(pending))
            for s in pending:
                self._groups_of.setdefault(s, []).append(g)
        for g, n in enumerate(self._waiting_for):
            if n == 0:
                self._plan(g)

    def on_resolved(self, found: dict[str, str], chunk: list[str]) -> None:
        self._found.update(found)
        for s in chunk:
            if s not in self._unanswered:
                continue
            self._unanswered.discard(s)
            for g in self._groups_of.get(s, ()):
                self._waiting_for[g] -= 1
                if self._waiting_for[g] == 0:
                    self._plan(g)

    def _plan(self, g: int) -> None:
        pid, ids = self._groups[g]
        chunks = seed_chunks_for(pid, ids, self._found, self.ctx.config)
        self.out.playlists += 1
        self.out.chunks += len(chunks)
        fresh = self.ctx.caches.recommendations.fresh_keys([c.request_key for c in chunks])
        for c in chunks:
            if c.request_key in fresh:
                self.out.cached += 1
            elif c.request_key not in self._asked_keys:
                self._asked_keys.add(c.request_key)
                self.out.asked += 1
                self._queue.append(c)
                self.planned += 1

    def has_queued(self) -> bool:
        return bool(self._queue)

    def take(self) -> SeedChunk | None:
        return self._queue.popleft() if self._queue else None

    def run(self, chunk: SeedChunk) -> int:
        config = self.ctx.config
        if chunk.index and config.seed_stagger_s:
            self.ctx.pause(config.seed_stagger_s * chunk.index, "the recommendation stagger")
        tracks = self.ctx.client.get_recommendations(chunk.seeds, size=config.recommendation_size)
        self.ctx.caches.recommendations.put(recommendation_rows(chunk.request_key, tracks))
        return len(tracks)

    def record(self, chunk: SeedChunk, result: int) -> None:
        pass  # the answer is in the cache already; nothing to tally per chunk

    def fail(self, chunk: SeedChunk, error: APIError) -> None:
        self.out.failed += 1
        self.out.errors.append(str(error))
        log.warning("recommendations: seeds %s failed: %s", ",".join(chunk.seeds), error)

    def settle(self) -> None:
        """After the run: count the playlists a budget stop left unasked."""
        unplanned = sum(1 for n in self._waiting_for if n > 0)
        self.out.pending_playlists = unplanned + len({c.playlist_id for c in self._queue})

    def log_summary(self) -> None:
        out = self.out
        log.info(
            "recommendations: %d playlists, %d seed chunks, %d cached, asked %d",
            out.playlists, out.chunks, out.cached, out.asked,
        )  # fmt: skip


def assemble_recommendations(
    rows: pd.DataFrame, plan: list[SeedChunk], caches: Caches
) -> pd.DataFrame:
    """Ranked, de-duplicated recommendations per playlist, minus the playlist's own tracks.

    Rank: tracks recommended by more seed chunks first, then by their best position.
    """
    columns = [
        "playlist_id",
        "seed_spotify_ids",
        "rank",
        "reccobeats_id",
        "spotify_id",
        "title",
        "artists",
        "duration_ms",
        "popularity",
    ]
    if not plan:
        return pd.DataFrame(columns=columns)
    chunks = pd.DataFrame(
        {
            "playlist_id": [c.playlist_id for c in plan],
            "chunk_index": [c.index for c in plan],
            "seed_spotify_ids": [list(c.seeds) for c in plan],
            "request_key": [c.request_key for c in plan],
        }
    )
    cached = caches.recommendations.rows(chunks["request_key"].unique().tolist())
    cached = cached[cached["status"] == "found"]
    recs = chunks.merge(cached, on="request_key", how="inner")
    if recs.empty:
        return pd.DataFrame(columns=columns)
    # Exclude every track already in the playlist (not just the seeds).
    if "playlist_id" in rows.columns:
        own = rows[["playlist_id", "spotify_id"]].dropna().astype({"playlist_id": str})
    else:
        own = rows[["spotify_id"]].dropna().assign(playlist_id=ALL_TRACKS)
    own = own.drop_duplicates().assign(_own=True)
    recs = recs.merge(own, on=["playlist_id", "spotify_id"], how="left")
    recs = recs[recs["_own"].isna()].drop(columns="_own")
    recs = recs.sort_values(["playlist_id", "chunk_index", "rank"], kind="stable")
    key = ["playlist_id", "spotify_id"]
    votes = recs.groupby(key).agg(
        votes=("rank", "size"), best=("rank", "min"), first_chunk=("chunk_index", "min")
    )
    first = recs.drop_duplicates(key, keep="first").set_index(key)
    ranked = first.join(votes).reset_index()
    ranked = ranked.sort_values(
        ["playlist_id", "votes", "best", "first_chunk"],
        ascending=[True, False, True, True],
        kind="stable",
    )
    ranked["rank"] = ranked.groupby("playlist_id").cumcount() + 1
    if "playlist_id" not in rows.columns:
        # Decided by the input's columns, never by value: a user playlist named like the
        # internal group name keeps its ID.
        ranked["playlist_id"] = None
    return ranked[columns].reset_index(drop=True)
