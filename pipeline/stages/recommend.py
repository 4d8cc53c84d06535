"""Stage 4: recommendations per playlist, through ``GET /v1/track/recommendation``.

Seeds are a playlist's resolved tracks in input order, cut into chunks of up to 5 (the
API's maximum), at most ``max_seed_chunks_per_playlist`` chunks per playlist. Chunks run a
few at a time with a small stagger so a playlist's calls do not arrive as one burst; the
limiter still decides when each may start. Answers are cached per (sorted seeds, params),
so an identical seed set asked by two playlists or two nights within TTL costs one call.
Titles, artists and durations come from the recommendation response itself: no extra
track look-ups.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd

from pipeline.config import StageConfig
from pipeline.errors import APIError
from pipeline.stages.context import StageContext
from pipeline.stages.runner import chunked, run_stage
from pipeline.state.caches import Caches
from pipeline.state.rows_from_records import recommendation_rows

log = logging.getLogger(__name__)

ALL_TRACKS = "__all__"  # group name when the input has no playlist_id column


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


def request_key(seeds: tuple[str, ...], size: int) -> str:
    """Cache key: the sorted seed set plus the parameters that change the answer."""
    return ",".join(sorted(seeds)) + f"|size={size}"


def plan_seed_chunks(
    rows: pd.DataFrame, found_ids: set[str], config: StageConfig
) -> list[SeedChunk]:
    """Seed chunks for every playlist (or the whole input when there is no playlist_id)."""
    if "playlist_id" in rows.columns:
        groups = rows.dropna(subset=["playlist_id"]).groupby("playlist_id", sort=True)
        items = [(str(pid), g["spotify_id"]) for pid, g in groups]
    else:
        items = [(ALL_TRACKS, rows["spotify_id"])]
    plan: list[SeedChunk] = []
    for pid, ids in items:
        seeds = [s for s in dict.fromkeys(ids.dropna()) if s in found_ids]
        parts = chunked(seeds, config.seeds_per_chunk)[: config.max_seed_chunks_per_playlist]
        for i, part in enumerate(parts):
            key_seeds = tuple(sorted(part))
            plan.append(
                SeedChunk(pid, i, key_seeds, request_key(key_seeds, config.recommendation_size))
            )
    return plan


def fetch_recommendations(plan: list[SeedChunk], ctx: StageContext) -> RecommendOutcome:
    """Fill the recommendations cache for every chunk of ``plan`` not cached within TTL."""
    caches, config = ctx.caches, ctx.config
    out = RecommendOutcome(playlists=len({c.playlist_id for c in plan}), chunks=len(plan))
    fresh = caches.recommendations.fresh_keys([c.request_key for c in plan])
    todo: dict[str, SeedChunk] = {}
    for c in plan:  # identical seed sets across playlists: ask once
        if c.request_key not in fresh:
            todo.setdefault(c.request_key, c)
    out.cached = len(plan) - sum(1 for c in plan if c.request_key in todo)
    out.asked = len(todo)
    if not todo:
        log.info("recommendations: all %d seed chunks cached within TTL", len(plan))
        return out

    def fetch(chunk: SeedChunk) -> int:
        if chunk.index and config.seed_stagger_s:
            ctx.pause(config.seed_stagger_s * chunk.index, "the recommendation stagger")
        tracks = ctx.client.get_recommendations(chunk.seeds, size=config.recommendation_size)
        caches.recommendations.put(recommendation_rows(chunk.request_key, tracks))
        return len(tracks)

    def on_failure(chunk: SeedChunk, error: APIError) -> None:
        out.failed += 1
        out.errors.append(str(error))
        log.warning("recommendations: seeds %s failed: %s", ",".join(chunk.seeds), error)

    log.info(
        "recommendations: %d playlists, %d seed chunks, %d cached, asking %d",
        out.playlists,
        out.chunks,
        out.cached,
        out.asked,
    )
    run_stage(
        list(todo.values()),
        fetch,
        on_result=lambda chunk, n: None,
        on_failure=on_failure,
        ctx=ctx,
        max_workers=config.seed_chunk_concurrency,
        desc="recommendations",
    )
    return out


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
    ranked["playlist_id"] = ranked["playlist_id"].where(ranked["playlist_id"] != ALL_TRACKS, None)
    return ranked[columns].reset_index(drop=True)
