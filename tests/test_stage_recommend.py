"""Stage recommendations: seed chunks per playlist, one call per distinct seed set."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pandas as pd
import responses

from pipeline.config import stage_config
from pipeline.stages.recommend import (
    assemble_recommendations,
    fetch_recommendations,
    plan_seed_chunks,
)
from tests.conftest import job_settings
from tests.stage_support import API, content, sid, stage_context, track_json


def _rows(playlists: dict[str, list[str]]) -> pd.DataFrame:
    pairs = [(p, s) for p, ids in playlists.items() for s in ids]
    return pd.DataFrame({"playlist_id": [p for p, _ in pairs], "spotify_id": [s for _, s in pairs]})


def test_plan_cuts_each_playlist_into_sorted_seed_chunks(tmp_path: Path) -> None:
    ids = [sid(i) for i in range(1, 13)]
    config = stage_config(job_settings(tmp_path, API, max_seed_chunks_per_playlist=2))
    plan = plan_seed_chunks(_rows({"p1": ids, "p2": ids[:3]}), set(ids[:11]), config)
    by_playlist = {p: [c.seeds for c in plan if c.playlist_id == p] for p in ("p1", "p2")}
    assert by_playlist["p1"] == [tuple(sorted(ids[:5])), tuple(sorted(ids[5:10]))]
    assert by_playlist["p2"] == [tuple(sorted(ids[:3]))]  # only resolved IDs are seeds


@responses.activate
def test_identical_seed_sets_cost_one_call_and_own_tracks_are_excluded(tmp_path: Path) -> None:
    seeds = [sid(i) for i in range(1, 4)]
    recs = [sid(i) for i in range(50, 53)]

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        asked = parse_qs(urlparse(request.url).query)["seeds"][0].split(",")
        assert sorted(asked) == sorted(seeds)
        return content([track_json(r) for r in [*recs, seeds[0]]])

    responses.add_callback(responses.GET, f"{API}/v1/track/recommendation", callback=answer)
    settings = job_settings(tmp_path, API, max_retries=0)
    rows = _rows({"p1": seeds, "p2": list(reversed(seeds))})
    with stage_context(settings, tmp_path / "state") as ctx:
        plan = plan_seed_chunks(rows, set(seeds), ctx.config)
        out = fetch_recommendations(rows, set(seeds), ctx)
        table = assemble_recommendations(rows, plan, ctx.caches)
    assert (out.chunks, out.asked, out.cached) == (2, 1, 0)
    assert len(responses.calls) == 1
    for playlist in ("p1", "p2"):
        mine = table[table["playlist_id"] == playlist]
        assert mine["spotify_id"].tolist() == recs  # the seed itself is not recommended back
        assert mine["rank"].tolist() == [1, 2, 3]
