"""Stage resolve: Spotify IDs -> ReccoBeats IDs, every answer recorded in the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import responses

from pipeline.stages.resolve import resolve_ids
from tests.conftest import job_settings
from tests.stage_support import API, asked_ids, content, sid, stage_context, track_json

POISON = sid(999)


def _settings(tmp_path: Path, **kw: Any):  # type: ignore[no-untyped-def]
    return job_settings(tmp_path, API, max_retries=0, **kw)


def _tracks_api(known: set[str], poison: str | None = None):  # type: ignore[no-untyped-def]
    """GET /v1/track: 400 (the API's own validation body) when ``poison`` is asked."""

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        ids = asked_ids(request)
        if poison in ids:
            body = {"status": 4004, "errors": [{"path": "ids", "message": "invalid id"}]}
            return 400, {"Content-Type": "application/json"}, json.dumps(body)
        return content([track_json(i) for i in ids if i in known])

    return answer


@responses.activate
def test_found_and_absent_ids_are_recorded(tmp_path: Path) -> None:
    ids = [sid(i) for i in range(1, 6)]
    found = set(ids[:3])
    responses.add_callback(responses.GET, f"{API}/v1/track", callback=_tracks_api(found))
    with stage_context(_settings(tmp_path), tmp_path / "state") as ctx:
        out = resolve_ids(ids, ctx)
        known = ctx.caches.registry.known(ids, count=False).set_index("spotify_id")
    assert (out.found, out.missing, out.asked) == (3, 2, 5)
    assert known.loc[ids[0], "reccobeats_id"] == f"rb-{ids[0]}"
    assert set(known.index[known["status"] == "missing"]) == set(ids[3:])


@responses.activate
def test_ids_known_within_ttl_are_not_asked_again(tmp_path: Path) -> None:
    ids = [sid(i) for i in range(1, 4)]
    responses.add_callback(responses.GET, f"{API}/v1/track", callback=_tracks_api(set(ids)))
    settings = _settings(tmp_path)
    with stage_context(settings, tmp_path / "state") as ctx:
        resolve_ids(ids, ctx)
    with stage_context(settings, tmp_path / "state") as ctx:
        again = resolve_ids(ids, ctx)
    assert (again.known, again.asked) == (3, 0)
    assert len(responses.calls) == 1


@responses.activate
def test_bisection_on_400_isolates_the_rejected_id_and_keeps_its_neighbours(
    tmp_path: Path,
) -> None:
    """One ID the API rejects must not sink the 7 good IDs of its chunk."""
    good = [sid(i) for i in range(1, 8)]
    chunk = [*good[:3], POISON, *good[3:]]
    responses.add_callback(
        responses.GET, f"{API}/v1/track", callback=_tracks_api(set(good), POISON)
    )
    with stage_context(_settings(tmp_path, chunk_size=8), tmp_path / "state") as ctx:
        out = resolve_ids(chunk, ctx)
        known = ctx.caches.registry.known(chunk, count=False).set_index("spotify_id")
    assert out.found == 7
    assert out.rejected_by_api == [POISON]
    assert known.loc[POISON, "status"] == "missing"
    assert set(known.index[known["status"] == "found"]) == set(good)
    assert not out.failed
    # 1 + 2 + 2 + 2: halving a chunk of 8 down to the single offender.
    assert len(responses.calls) == 7


@responses.activate
def test_a_batch_with_a_malformed_record_leaves_absent_ids_unrecorded(tmp_path: Path) -> None:
    ids = [sid(i) for i in range(1, 4)]

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        return content([track_json(ids[0]), {"id": 5, "href": None}])

    responses.add_callback(responses.GET, f"{API}/v1/track", callback=answer)
    with stage_context(_settings(tmp_path), tmp_path / "state") as ctx:
        out = resolve_ids(ids, ctx)
        known = ctx.caches.registry.known(ids, count=False)
    assert out.found == 1
    assert sorted(out.failed) == sorted(ids[1:])
    assert list(known["spotify_id"]) == [ids[0]]  # the absent two: asked again next run


@pytest.mark.parametrize("status", [500, 503])
@responses.activate
def test_a_chunk_that_keeps_failing_is_tallied_and_its_ids_stay_unknown(
    tmp_path: Path, status: int
) -> None:
    ids = [sid(i) for i in range(1, 4)]
    responses.add(responses.GET, f"{API}/v1/track", status=status, json={"status": 5001})
    with stage_context(_settings(tmp_path), tmp_path / "state") as ctx:
        out = resolve_ids(ids, ctx)
        known = ctx.caches.registry.known(ids, count=False)
    assert sorted(out.failed) == sorted(ids)
    assert out.errors
    assert known.empty


@responses.activate
def test_a_failed_chunk_still_tells_listeners_the_mappings_the_registry_keeps(
    tmp_path: Path,
) -> None:
    """An ID the registry maps, re-asked because its track metadata is stale, whose chunk
    then fails: the registry keeps its mapping and publish plans recommendations with it,
    so the recommendations stage must hear it too (told nothing, it planned seed sets
    without it, and the playlist's recommendations were missing from the output)."""
    from pipeline.errors import ServerError
    from pipeline.stages.resolve import ResolveWork

    ids = [sid(1), sid(2)]
    with stage_context(_settings(tmp_path), tmp_path / "state") as ctx:
        ctx.caches.registry.record_found({ids[0]: "rb-1"})  # no track metadata: stale
        work = ResolveWork(ids, ctx)
        assert sorted(work.ask) == ids  # the mapped one is re-asked for its metadata
        heard: list[tuple[dict[str, str], list[str]]] = []
        work.listeners.append(lambda found, chunk: heard.append((found, chunk)))
        work.fail(ids, ServerError("503 after retries", endpoint="tracks"))
    assert heard == [({ids[0]: "rb-1"}, ids)]
