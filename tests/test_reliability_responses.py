"""Bad responses, through the stages into the registry: wrong types in fields, IDs nobody
asked for, duplicate entries, a huge body (size cap) and a non-JSON 200 are handled and
counted, and never poison the registry or the caches.

``responses`` plays the API over https (so TLS verification stays on: nothing is
downgraded to make a mock work). The client's parsing rules have unit tests in
tests/test_client.py and tests/test_records.py; these check what reaches the state dir.
"""

from __future__ import annotations

import json
from datetime import date
from urllib.parse import parse_qs, urlsplit

import pyarrow.parquet as pq
import pytest
import responses

from pipeline.orchestrator import run_job
from pipeline.simulator import Catalog
from pipeline.simulator.shapes import features_json, track_json
from tests.conftest import job_settings
from tests.reliability_support import write_input

BASE = "https://api.reccobeats.test"
RUN_DATE = date(2024, 6, 1)


def _asked(request) -> list[str]:
    return parse_qs(urlsplit(request.url).query)["ids"][0].split(",")


@responses.activate
def test_bad_responses_are_counted_and_never_reach_the_registry(tmp_path):
    catalog = Catalog.load()
    known = sorted(catalog.known_spotify_ids)
    ids, stranger, typed_wrong = known[:40], known[100], known[0]

    def tracks(request):
        asked = _asked(request)
        items = [track_json(catalog.track(s)) for s in asked if s != typed_wrong]
        bad = track_json(catalog.track(typed_wrong))
        bad["id"], bad["durationMs"] = 12345, "very long"  # wrong types
        dup = dict(items[1], trackTitle="a second copy")
        items += [bad, dup, track_json(catalog.track(stranger))]  # + a record not asked for
        return 200, {"Content-Type": "application/json"}, json.dumps({"content": items})

    calls = {"n": 0}

    def features(request):
        calls["n"] += 1
        if calls["n"] == 1:
            return 200, {"Content-Type": "application/json"}, '{"content": [{"id": '  # cut
        if calls["n"] == 2:
            return 200, {"Content-Type": "application/json"}, "x" * 300_000  # over the cap
        items = [features_json(catalog.track(s)) for s in _asked(request)]
        items[0]["energy"] = "loud"  # a wrong-typed feature value
        return 200, {"Content-Type": "application/json"}, json.dumps({"content": items})

    responses.add_callback(responses.GET, f"{BASE}/v1/track", callback=tracks)
    responses.add_callback(responses.GET, f"{BASE}/v1/audio-features", callback=features)

    inp = write_input(tmp_path / "in.parquet", ids)
    settings = job_settings(
        tmp_path,
        BASE,
        input=inp,
        recommendations=False,
        max_response_bytes=100_000,
        backoff_base_s=0.0,
        max_retries=2,
    )
    report = run_job(settings, RUN_DATE, progress=False)
    errors = report.figures["requests"]["by_endpoint"]

    state = tmp_path / "state"
    registry = pq.read_table(state / "registry.parquet").to_pandas().set_index("spotify_id")
    assert stranger not in registry.index  # an unasked ID never lands in the registry
    assert set(registry.index) <= set(ids)
    # The wrong-typed record is dropped and counted, never stored as a track.
    assert errors["tracks"]["errors"]["bad_item"] == 1
    assert errors["tracks"]["errors"]["duplicate"] == 1
    assert errors["tracks"]["errors"]["unasked"] == 1
    titles = pq.read_table(state / "tracks.parquet").to_pandas().set_index("spotify_id")
    assert titles.loc[ids[1], "title"] != "a second copy"  # first of the duplicates kept
    # audio features: a non-JSON 200 is retried; an oversized body fails the chunk, counted.
    assert errors["audio_features"]["errors"]["malformed"] == 1
    assert errors["audio_features"]["errors"]["too_large"] == 1
    assert report.exit_code == 3  # the oversized chunk failed: partial, listed in the report
    assert any("larger than" in m for m in report.figures["failures"]["messages"])
    assert not (state / "features.parquet").exists() or (
        pq.read_table(state / "features.parquet").num_rows == 0
    )
    # The ID whose only record was malformed is not guessed "missing" (a 14-day TTL): it
    # stays unrecorded, so the next run asks again, and the run says so.
    assert typed_wrong not in registry.index
    assert any("malformed records" in m for m in report.figures["failures"]["messages"])


@pytest.mark.parametrize("url", ["ftp://api.example", "file:///etc/passwd", "api.example"])
def test_base_url_must_be_http(tmp_path, url):
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="base_url"):
        job_settings(tmp_path, url)


def test_tls_verification_is_never_turned_off():
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1] / "pipeline"
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "verify":
                assert not (isinstance(node.value, ast.Constant) and node.value.value is False), (
                    path
                )
            if isinstance(node, ast.Attribute) and node.attr == "verify":
                pytest.fail(f"{path}: session.verify is touched")


def test_nothing_read_from_disk_is_unpickled():
    import ast
    import pathlib

    banned = {"pickle", "joblib", "dill", "cloudpickle", "shelve", "marshal"}
    root = pathlib.Path(__file__).resolve().parents[1] / "pipeline"
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            elif isinstance(node, ast.Attribute):
                names = {node.attr} & {"read_pickle", "to_pickle"}
            else:
                continue
            assert not names & (banned | {"read_pickle", "to_pickle"}), f"{path}: {names}"
