"""Issue 11, class 3: one bad record never sinks the run, and nothing answered is lost.

``responses`` plays the API over https. A record whose integer does not fit its column
(``durationMs`` = 10^30, a feature ``key`` of -10^20) is a bad item of its batch, counted
and reported, never an ``OverflowError`` that loses the answered chunks; a ``playlist_id``
that is a struct or a list is refused with one line before the first request.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import responses

from pipeline.cli import main
from pipeline.io.writer import load_enriched
from pipeline.simulator import Catalog
from pipeline.simulator.shapes import features_json, track_json
from tests.conftest import fast_config_toml

BASE = "https://api.reccobeats.test"
RUN_DATE = "2024-06-01"


def _asked(request) -> list[str]:
    return parse_qs(urlsplit(request.url).query)["ids"][0].split(",")


def _run(tmp_path: Path, inp: Path, *extra: str) -> int:
    cfg = fast_config_toml(tmp_path / "settings.toml", max_retries=0)
    return main(
        ["run", "--input", str(inp), "--output", str(tmp_path / "out"), "--state-dir",
         str(tmp_path / "state"), "--base-url", BASE, "--config", str(cfg), "--date", RUN_DATE,
         "--no-progress", "-q", *extra]
    )  # fmt: skip


@pytest.mark.parametrize(
    ("endpoint", "field", "value"),
    [("tracks", "durationMs", 10**30), ("tracks", "popularity", -(2**63) - 1),
     ("audio_features", "key", -(10**20)), ("audio_features", "mode", 2**64)],
)  # fmt: skip
@responses.activate
def test_an_out_of_range_integer_is_a_bad_item_not_a_crash(
    tmp_path, capsys, endpoint, field, value
):
    catalog = Catalog.load()
    with_features = [s for s in sorted(catalog.known_spotify_ids) if catalog.track(s).features]
    ids, broken = with_features[:40], with_features[7]

    def answer(make):
        def callback(request):
            items = []
            for s in _asked(request):
                item = make(catalog.track(s))
                if s == broken and (endpoint == "tracks") == (make is track_json):
                    item[field] = value
                items.append(item)
            return 200, {"Content-Type": "application/json"}, json.dumps({"content": items})

        return callback

    responses.add_callback(responses.GET, f"{BASE}/v1/track", callback=answer(track_json))
    responses.add_callback(
        responses.GET, f"{BASE}/v1/audio-features", callback=answer(features_json)
    )
    inp = tmp_path / "in.parquet"
    pd.DataFrame({"track_id": ids}).to_parquet(inp, index=False)
    rc = _run(tmp_path, inp, "--no-recommendations")
    err = capsys.readouterr().err
    assert "Traceback" not in err and "OverflowError" not in err, err
    assert rc == 3, err  # partial: the broken record's ID is asked again next run
    tracks = load_enriched(tmp_path / "out", RUN_DATE).set_index("spotify_id")
    assert (tracks.drop(index=broken)["status"] == "ok").all()  # the 39 others are published
    assert tracks.loc[broken, "status"] == "failed"
    report = json.loads(next((tmp_path / "out" / "runs").glob("*.json")).read_text())
    assert report["requests"]["by_endpoint"][endpoint]["errors"]["bad_item"] == 1


@pytest.mark.parametrize(
    "column",
    [pa.array([{"id": "p1"}] * 3), pa.array([["p1", "p2"]] * 3), pa.array([1.5] * 3)],
    ids=["struct", "list", "float"],
)
def test_a_playlist_column_of_the_wrong_type_is_refused_before_any_request(
    tmp_path, capsys, column
):
    ids = sorted(Catalog.load().known_spotify_ids)[:3]
    inp = tmp_path / "in.parquet"
    pq.write_table(pa.table({"track_id": ids, "playlist_id": column}), inp)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:  # no request
        rc = _run(tmp_path, inp)
        assert len(api.calls) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("reccobeats-etl: error:")]
    assert rc == 2 and len(lines) == 1, err
    assert "playlist_id" in lines[0]
