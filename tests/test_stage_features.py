"""Stage features: audio features for resolved tracks, asked by Spotify ID, keyed by href."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import responses

from pipeline.stages.features import fetch_features
from tests.conftest import job_settings
from tests.stage_support import API, asked_ids, content, features_json, sid, stage_context


def _resolved(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"spotify_id": ids, "reccobeats_id": [f"rb-{i}" for i in ids]})


@responses.activate
def test_features_found_and_absent_are_cached_by_reccobeats_id(tmp_path: Path) -> None:
    ids = [sid(i) for i in range(1, 5)]
    with_features = set(ids[:2])

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        return content([features_json(i) for i in asked_ids(request) if i in with_features])

    responses.add_callback(responses.GET, f"{API}/v1/audio-features", callback=answer)
    settings = job_settings(tmp_path, API, max_retries=0)
    with stage_context(settings, tmp_path / "state") as ctx:
        out = fetch_features(_resolved(ids), ctx)
        cached = ctx.caches.features.fresh([f"rb-{i}" for i in ids], count=False)
    assert (out.asked, out.found, out.missing) == (4, 2, 2)
    status = dict(zip(cached["reccobeats_id"], cached["status"], strict=True))
    assert status == {f"rb-{i}": ("found" if i in with_features else "missing") for i in ids}
    assert cached.loc[cached["status"] == "found", "tempo"].tolist() == [120.0, 120.0]


@responses.activate
def test_cached_features_are_not_asked_again(tmp_path: Path) -> None:
    ids = [sid(i) for i in range(1, 3)]

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        return content([features_json(i) for i in asked_ids(request)])

    responses.add_callback(responses.GET, f"{API}/v1/audio-features", callback=answer)
    settings = job_settings(tmp_path, API, max_retries=0)
    with stage_context(settings, tmp_path / "state") as ctx:
        fetch_features(_resolved(ids), ctx)
    with stage_context(settings, tmp_path / "state") as ctx:
        again = fetch_features(_resolved(ids), ctx)
    assert (again.cached, again.asked) == (2, 0)
    assert len(responses.calls) == 1


@responses.activate
def test_a_malformed_record_leaves_the_absent_tracks_unknown(tmp_path: Path) -> None:
    ids = [sid(i) for i in range(1, 4)]
    responses.add(
        responses.GET,
        f"{API}/v1/audio-features",
        json={"content": [features_json(ids[0]), {"id": None}]},
    )
    with stage_context(job_settings(tmp_path, API, max_retries=0), tmp_path / "state") as ctx:
        out = fetch_features(_resolved(ids), ctx)
        cached = ctx.caches.features.fresh([f"rb-{i}" for i in ids], count=False)
    assert out.found == 1 and out.missing == 0
    assert sorted(out.failed) == sorted(f"rb-{i}" for i in ids[1:])
    assert cached["reccobeats_id"].tolist() == [f"rb-{ids[0]}"]
