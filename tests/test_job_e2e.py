"""Issue 2: the nightly job end to end, over loopback against the bundled simulator.

Every expected value is computed from the input file and from the simulator's ``Catalog``
(the object the server answers from), never from the pipeline's own outputs.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import load_enriched
from pipeline.errors import InputError
from pipeline.orchestrator import run_job
from pipeline.simulator import FEATURE_NAMES, Catalog, SimulatorConfig, SimulatorServer
from tests.conftest import (
    SAMPLE_INPUT,
    ceil40,
    job_settings,
    requests_by_endpoint,
    sample_frame,
)

pytestmark = pytest.mark.integration

RUN_DATE = date(2025, 3, 1)
T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
SEEDS_PER_CHUNK = 5
MAX_CHUNKS = 4
FLOAT_FEATURES = [f for f in FEATURE_NAMES if f not in ("key", "mode")]


class Clock:
    """An injected wall clock for ``run_job(clock=...)``: TTLs are judged against it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


# -- expectations computed from the input and the catalog ----------------------------------


def valid_rows(path: Path = SAMPLE_INPUT) -> pd.DataFrame:
    raw = sample_frame(path)
    return raw[raw["spotify_id"].notna()].reset_index(drop=True)


def distinct_ids(rows: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(rows["spotify_id"]))


def expected_seed_sets(rows: pd.DataFrame, catalog: Catalog) -> dict[str, list[tuple[str, ...]]]:
    """Per playlist: its resolved tracks in input order, cut in 5s, at most 4 chunks."""
    out: dict[str, list[tuple[str, ...]]] = {}
    for pid, group in rows.groupby("playlist_id", sort=True):
        seeds = [s for s in dict.fromkeys(group["spotify_id"]) if s in catalog.known_spotify_ids]
        chunks = [seeds[i : i + SEEDS_PER_CHUNK] for i in range(0, len(seeds), SEEDS_PER_CHUNK)]
        out[str(pid)] = [tuple(sorted(c)) for c in chunks[:MAX_CHUNKS]]
    return out


def expected_cold_calls(rows: pd.DataFrame, catalog: Catalog) -> dict[str, int]:
    ids = distinct_ids(rows)
    resolved = [s for s in ids if s in catalog.known_spotify_ids]
    seed_sets = {s for sets in expected_seed_sets(rows, catalog).values() for s in sets}
    return {
        "tracks": ceil40(len(ids)),
        "audio_features": ceil40(len(resolved)),
        "recommendation": len(seed_sets),
    }


def api_calls(server: SimulatorServer) -> dict[str, int]:
    counts = requests_by_endpoint(server)
    return {ep: counts[ep] for ep in ("tracks", "audio_features", "recommendation")}


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}


def read_dataset(settings, dataset: str, day: date = RUN_DATE) -> pd.DataFrame:
    """The dataset without the columns naming the run that wrote it (they differ per run)."""
    frame = load_enriched(settings.output_dir, date=day, dataset=dataset)
    return frame.drop(columns=[c for c in ("run_id", "loaded_at") if c in frame.columns])


# -- the cold run ------------------------------------------------------------------------


def test_cold_run_enriches_every_valid_row_as_the_catalog_says(
    tmp_path: Path, simulator: SimulatorServer, catalog: Catalog
) -> None:
    settings = job_settings(tmp_path, simulator.url)
    report = run_job(settings, RUN_DATE)
    assert report.status == "ok" and report.exit_code == 0

    rows = valid_rows()
    out = read_dataset(settings, "tracks")
    # every valid row, once, in input order
    assert len(out) == len(rows) == 305
    assert out["row_number"].tolist() == rows["row_number"].tolist()
    assert out["spotify_id"].tolist() == rows["spotify_id"].tolist()
    assert out["playlist_id"].tolist() == rows["playlist_id"].tolist()
    extra = out["input_extra"].map(json.loads)  # every input column (schema contract)
    assert [e["track_name"] for e in extra] == rows["track_name"].tolist()

    seen_status = set()
    for rec in out.to_dict("records"):
        sid = rec["spotify_id"]
        track = catalog.track(sid)
        if sid not in catalog.known_spotify_ids:
            assert track is None
            assert rec["status"] == "not_found", sid
            assert pd.isna(rec["reccobeats_id"]) and pd.isna(rec["title"])
            assert all(pd.isna(rec[f]) for f in FEATURE_NAMES)
        else:
            assert rec["reccobeats_id"] == track.reccobeats_id
            assert rec["title"] == track.title
            assert list(rec["artists"]) == [track.artist.name]
            assert rec["duration_ms"] == track.duration_ms
            assert rec["popularity"] == track.popularity
            assert rec["isrc"] == track.isrc
            if catalog.has_features(sid):
                assert rec["status"] == "ok", sid
                feats = catalog.features(sid).as_dict()
                for name in FEATURE_NAMES:
                    assert rec[name] == pytest.approx(feats[name]), (sid, name)
            else:
                assert rec["status"] == "no_features", sid
                assert all(pd.isna(rec[f]) for f in FEATURE_NAMES)
        seen_status.add(rec["status"])
    # the sample exercises all three outcomes (else this test would prove less than it says)
    assert seen_status == {"ok", "not_found", "no_features"}
    assert report.figures["outputs"]["track_status"] == out["status"].value_counts().to_dict()


def test_cold_run_recommendations_per_playlist(
    tmp_path: Path, simulator: SimulatorServer, catalog: Catalog
) -> None:
    settings = job_settings(tmp_path, simulator.url)
    run_job(settings, RUN_DATE)
    rows = valid_rows()
    recs = read_dataset(settings, "recommendations")
    seed_sets = expected_seed_sets(rows, catalog)
    size = settings.recommendation_size

    assert set(recs["playlist_id"]) == set(rows["playlist_id"])  # all 6 playlists
    for pid, group in recs.groupby("playlist_id"):
        own = set(rows.loc[rows["playlist_id"] == pid, "spotify_id"])
        assert not (set(group["spotify_id"]) & own), f"{pid} recommends its own tracks"
        assert group["rank"].tolist() == list(range(1, len(group) + 1))
        assert group["spotify_id"].is_unique
        for seeds in group["seed_spotify_ids"]:
            assert set(seeds) <= own and tuple(sorted(seeds)) in seed_sets[pid]
        # exactly what the catalog recommends for the playlist's seed chunks, minus its tracks
        expected = {
            t.spotify_id for seeds in seed_sets[pid] for t in catalog.recommend(list(seeds), size)
        } - own
        assert set(group["spotify_id"]) == expected
        for rec in group.to_dict("records"):
            track = catalog.track(rec["spotify_id"])
            assert rec["reccobeats_id"] == track.reccobeats_id
            assert rec["title"] == track.title
            assert rec["duration_ms"] == track.duration_ms


def test_cold_run_makes_exactly_the_minimum_requests(
    tmp_path: Path, simulator: SimulatorServer, catalog: Catalog
) -> None:
    settings = job_settings(tmp_path, simulator.url)
    report = run_job(settings, RUN_DATE)
    expected = expected_cold_calls(valid_rows(), catalog)
    assert expected == {"tracks": 8, "audio_features": 8, "recommendation": 24}  # sanity
    seen = requests_by_endpoint(simulator)
    assert api_calls(simulator) == expected
    assert sum(seen.values()) == sum(expected.values())  # nothing on any other endpoint
    assert simulator.counters()["rejected_429"] == 0
    by_ep = report.figures["requests"]["by_endpoint"]
    assert {ep: by_ep[ep]["attempts"] for ep in expected} == expected


# -- warm runs and TTLs ------------------------------------------------------------------


def test_second_run_within_ttl_makes_no_request_and_same_output(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    settings = job_settings(tmp_path, simulator.url)
    run_job(settings, RUN_DATE)
    first_tracks = read_dataset(settings, "tracks")
    first_recs = read_dataset(settings, "recommendations")
    before = simulator.counters()["requests_total"]
    assert before > 0

    report = run_job(settings, RUN_DATE)
    assert simulator.counters()["requests_total"] == before
    assert report.figures["requests"]["total_attempts"] == 0
    pd.testing.assert_frame_equal(read_dataset(settings, "tracks"), first_tracks)
    pd.testing.assert_frame_equal(read_dataset(settings, "recommendations"), first_recs)


def _write_input(rows: pd.DataFrame, path: Path) -> Path:
    rows[["track_id", "track_name", "track_artist", "playlist_id", "playlist_name"]].to_parquet(
        path, index=False
    )
    return path


def test_found_ids_are_trusted_60_days(
    tmp_path: Path, simulator: SimulatorServer, catalog: Catalog
) -> None:
    """Found answers (and the metadata that came with them) are not re-asked for 60 days."""
    rows = valid_rows()
    found_rows = rows[rows["spotify_id"].isin(catalog.known_spotify_ids)]
    found = distinct_ids(found_rows)
    clock = Clock(T0)
    settings = job_settings(
        tmp_path, simulator.url, input=_write_input(found_rows, tmp_path / "found.parquet")
    )

    run_job(settings, RUN_DATE, clock=clock)
    assert api_calls(simulator)["tracks"] == ceil40(len(found))

    clock.now = T0 + timedelta(days=59)
    before = api_calls(simulator)
    report = run_job(settings, RUN_DATE, clock=clock)
    calls = diff(api_calls(simulator), before)
    assert calls["tracks"] == 0, "found IDs re-asked within their 60-day TTL"
    assert report.figures["ids"]["known"] == len(found)
    # features (30 d) and recommendations (20 h) have expired by then: asked again, once
    assert calls["audio_features"] == ceil40(len(found))
    assert report.exit_code == 0

    clock.now = T0 + timedelta(days=61)
    before = api_calls(simulator)
    ids_before = simulator.counters()["ids_requested_total"]
    report = run_job(settings, RUN_DATE, clock=clock)
    calls = diff(api_calls(simulator), before)
    assert calls["tracks"] == ceil40(len(found))
    assert calls["audio_features"] == 0  # refreshed at day 59, still fresh
    assert report.figures["ids"]["new"] == len(found)
    assert simulator.counters()["ids_requested_total"] - ids_before == len(found)


def test_the_injected_clock_stamps_loaded_at_in_every_dataset(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    clock = Clock(T0)  # the run's one wall clock: a replayed night is stamped as it ran
    report = run_job(job_settings(tmp_path, simulator.url), RUN_DATE, clock=clock)
    assert report.status == "ok"
    for dataset in ("tracks", "recommendations", "rejects"):
        frame = pd.read_parquet(tmp_path / "output" / dataset)
        assert len(frame) and set(frame["loaded_at"]) == {pd.Timestamp(T0)}, dataset
    # a run that stops at reading (no valid ID at all) stamps its rejects the same way
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"track_id": ["not-an-id"]}).to_parquet(bad, index=False)
    with pytest.raises(InputError):
        run_job(job_settings(tmp_path, simulator.url, input=bad), date(2025, 3, 2), clock=clock)
    rejects = pd.read_parquet(tmp_path / "output" / "rejects" / "date=2025-03-02")
    assert set(rejects["loaded_at"]) == {pd.Timestamp(T0)}


def test_missing_ids_are_asked_again_after_14_days(
    tmp_path: Path, simulator: SimulatorServer, catalog: Catalog
) -> None:
    rows = valid_rows()
    missing = [s for s in distinct_ids(rows) if s not in catalog.known_spotify_ids]
    no_features = [
        s
        for s in distinct_ids(rows)
        if s in catalog.known_spotify_ids and not catalog.has_features(s)
    ]
    assert missing and no_features
    clock = Clock(T0)
    settings = job_settings(tmp_path, simulator.url)
    run_job(settings, RUN_DATE, clock=clock)

    clock.now = T0 + timedelta(days=13)
    before = api_calls(simulator)
    report = run_job(settings, RUN_DATE, clock=clock)
    assert diff(api_calls(simulator), before)["tracks"] == 0
    assert report.figures["ids"]["new"] == 0

    clock.now = T0 + timedelta(days=14, hours=1)
    before = api_calls(simulator)
    ids_before = simulator.counters()["ids_requested_total"]
    report = run_job(settings, RUN_DATE, clock=clock)
    calls = diff(api_calls(simulator), before)
    assert calls["tracks"] == ceil40(len(missing))
    # "no features" answers share the 14-day TTL: those tracks are asked again, nothing else
    assert calls["audio_features"] == ceil40(len(no_features))
    assert report.figures["ids"]["new"] == len(missing)
    asked = simulator.counters()["ids_requested_total"] - ids_before
    assert asked == len(missing) + len(no_features)
    out = read_dataset(settings, "tracks")
    assert set(out.loc[out["status"] == "not_found", "spotify_id"]) == set(missing)


# -- outputs -----------------------------------------------------------------------------


def test_rejects_file_lists_bad_ids_with_reason_and_row_number(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    settings = job_settings(tmp_path, simulator.url)
    report = run_job(settings, RUN_DATE)
    raw = sample_frame()
    bad = raw[raw["spotify_id"].isna()]
    path = Path(report.figures["outputs"]["paths"]["rejects"])
    assert path.is_file()
    rejects = pd.read_parquet(path)
    assert rejects["row_number"].tolist() == bad["row_number"].tolist() == [304, 305, 306]
    raw = rejects["input_extra"].map(json.loads)  # the input columns (schema contract)
    assert [r["track_id"] for r in raw][:2] == bad["track_id"].tolist()[:2]
    assert raw.iloc[2]["track_id"] is None
    assert rejects["reason"].notna().all() and (rejects["reason"].str.len() > 0).all()
    assert "album" in rejects["reason"].iloc[1]
    assert report.figures["rows"] == {"valid": 305, "rejected": 3}


def test_output_datasets_are_typed(tmp_path: Path, simulator: SimulatorServer) -> None:
    settings = job_settings(tmp_path, simulator.url)
    run_job(settings, RUN_DATE)

    tracks = pd.read_parquet(settings.output_dir / "tracks")
    for col in ("duration_ms", "popularity", "key", "mode", "row_number"):
        assert tracks[col].dtype == "Int64", col
    for col in FLOAT_FEATURES:
        assert tracks[col].dtype == np.float64, col
    for col in ("spotify_id", "reccobeats_id", "status", "title", "isrc"):
        assert pd.api.types.is_string_dtype(tracks[col]), col
    assert tracks["artists"].map(lambda v: v is None or isinstance(v, np.ndarray)).all()
    assert tracks["date"].astype(str).unique().tolist() == [RUN_DATE.isoformat()]
    assert len(tracks) == 305

    recs = pd.read_parquet(settings.output_dir / "recommendations")
    assert recs["rank"].dtype == "Int32"
    for col in ("duration_ms", "popularity"):
        assert recs[col].dtype == "Int64", col
    for col in ("seed_spotify_ids", "artists"):
        assert recs[col].map(lambda v: isinstance(v, np.ndarray)).all(), col
    assert len(recs) > 0

    loaded = load_enriched(settings.output_dir, date=RUN_DATE)
    assert loaded["date"].dtype == "datetime64[ns]"
    for col in ("duration_ms", "popularity", "key", "mode"):
        assert loaded[col].dtype == "Int64", col
    for col in FLOAT_FEATURES:
        assert loaded[col].dtype == np.float64, col
    assert loaded["artists"].map(lambda v: v is None or isinstance(v, list)).all()
    assert loaded["artists"].map(lambda v: isinstance(v, list)).sum() > 0
    loaded_recs = load_enriched(settings.output_dir, date=RUN_DATE, dataset="recommendations")
    assert loaded_recs["rank"].dtype == "Int32"
    assert loaded_recs["seed_spotify_ids"].map(lambda v: isinstance(v, list)).all()
    # same data either way
    assert loaded["spotify_id"].tolist() == tracks["spotify_id"].tolist()
    assert loaded["popularity"].equals(tracks["popularity"])


# -- modes -------------------------------------------------------------------------------


def test_dry_run_makes_no_request_and_plans_the_calls(
    tmp_path: Path, simulator: SimulatorServer, catalog: Catalog
) -> None:
    rows = valid_rows()
    ids = distinct_ids(rows)
    missing = [s for s in ids if s not in catalog.known_spotify_ids]
    clock = Clock(T0)
    settings = job_settings(tmp_path, simulator.url)

    cold = run_job(settings, RUN_DATE, dry_run=True, clock=clock)
    assert simulator.counters()["requests_total"] == 0
    assert cold.status == "dry_run" and cold.exit_code == 0
    assert cold.figures["ids"] == {"distinct": len(ids), "known": 0, "new": len(ids)}
    # before any answer every ID may be found: upper bounds
    everything = {
        "tracks": ceil40(len(ids)),
        "audio_features": ceil40(len(ids)),
        "recommendation": len(
            {
                tuple(sorted(c))
                for _, g in rows.groupby("playlist_id")
                for c in [
                    list(dict.fromkeys(g["spotify_id"]))[i : i + 5]
                    for i in range(0, len(dict.fromkeys(g["spotify_id"])), 5)
                ][:MAX_CHUNKS]
            }
        ),
    }
    assert cold.figures["plan"]["calls_at_most"] == everything
    assert not (settings.output_dir / "tracks").exists()

    run_job(settings, RUN_DATE, clock=clock)
    actual = api_calls(simulator)
    assert all(actual[ep] <= everything[ep] for ep in actual)

    warm = run_job(settings, RUN_DATE, dry_run=True, clock=clock)
    assert api_calls(simulator) == actual
    assert warm.figures["ids"] == {"distinct": len(ids), "known": len(ids), "new": 0}
    assert warm.figures["plan"]["calls_at_most"] == {
        "tracks": 0,
        "audio_features": 0,
        "recommendation": 0,
    }

    clock.now = T0 + timedelta(days=15)  # missing answers expired; features still cached
    later = run_job(settings, RUN_DATE, dry_run=True, clock=clock)
    assert api_calls(simulator) == actual
    assert later.figures["ids"]["new"] == len(missing)
    assert later.figures["ids"]["known"] == len(ids) - len(missing)
    assert later.figures["plan"]["calls_at_most"]["tracks"] == ceil40(len(missing))


def test_a_dry_run_after_a_slow_night_plans_with_its_latency(tmp_path: Path) -> None:
    """A run saves its median latency with the learned rate; the next dry run's ETA is then
    bound by calls x latency / in flight when that is the larger (production: 30 s answers
    at 4 in flight take 7.5 s a call whatever the told rate), and the plan says so."""
    from pipeline.io.report import plan_text
    from pipeline.state.learned_rate import load_learned_latency, save_learned_rate

    latency = 0.05
    with SimulatorServer(SimulatorConfig(latency_s=latency, latency_jitter_s=0.0)) as sim:
        small = tmp_path / "night1.parquet"
        pd.read_parquet(SAMPLE_INPUT).head(40).to_parquet(small)
        night = job_settings(tmp_path, sim.url, input=small, adaptive=True)
        run_job(night, RUN_DATE)
    saved = load_learned_latency(night.state_dir)
    assert saved is not None and latency <= saved < latency + 0.5  # the answers' median

    # told 60/min: at that latency 8 in flight allow far more, so the rate binds
    settings = job_settings(
        tmp_path, "http://127.0.0.1:9", adaptive=True, max_concurrency=8, rate_limit=60.0
    )
    rate_only = run_job(settings, RUN_DATE, dry_run=True).figures["plan"]
    assert rate_only["latency_s"] == saved
    assert rate_only["binding_limit"] == "told rate"
    calls = sum(rate_only["calls_expected"].values())
    assert rate_only["eta_s"] == round(calls * 1.0 + saved, 1)

    save_learned_rate(settings.state_dir, 60.0, datetime.now(UTC), 4, latency_s=30.0)
    plan = run_job(settings, RUN_DATE, dry_run=True).figures["plan"]
    assert calls > 0 and plan["eta_s"] == round(calls * 30.0 / 4 + 30.0, 1)  # + the last answer
    assert plan["binding_limit"] == "4 in flight x 30 s latency"
    text = plan_text({"plan": plan, "ids": {}, "rows": {}})
    assert "last run's latency (30 s at 4 in flight)" in text


def test_rerunning_a_date_replaces_only_that_date(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    day1, day2 = date(2025, 3, 1), date(2025, 3, 2)
    settings = job_settings(tmp_path, simulator.url)
    run_job(settings, day1)
    run_job(settings, day2)
    day2_before = read_dataset(settings, "tracks", day2)
    day2_recs_before = read_dataset(settings, "recommendations", day2)

    subset = _write_input(valid_rows().head(100), tmp_path / "subset.parquet")
    run_job(job_settings(tmp_path, simulator.url, input=subset), day1)

    day1_after = read_dataset(settings, "tracks", day1)
    assert len(day1_after) == 100
    assert day1_after["spotify_id"].tolist() == valid_rows().head(100)["spotify_id"].tolist()
    pd.testing.assert_frame_equal(read_dataset(settings, "tracks", day2), day2_before)
    pd.testing.assert_frame_equal(read_dataset(settings, "recommendations", day2), day2_recs_before)
    all_days = load_enriched(settings.output_dir)
    assert all_days.groupby(all_days["date"].dt.date).size().to_dict() == {day1: 100, day2: 305}
    leftovers = [p.name for p in (settings.output_dir / "tracks").iterdir() if p.name[0] == "."]
    assert leftovers == []


def test_no_recommendations_makes_no_recommendation_call(
    tmp_path: Path, simulator: SimulatorServer, catalog: Catalog
) -> None:
    settings = job_settings(tmp_path, simulator.url, recommendations=False)
    report = run_job(settings, RUN_DATE)
    calls = api_calls(simulator)
    assert calls["recommendation"] == 0
    expected = expected_cold_calls(valid_rows(), catalog)
    assert calls["tracks"] == expected["tracks"]
    assert calls["audio_features"] == expected["audio_features"]
    assert not (settings.output_dir / "recommendations").exists()
    assert "recommendations" not in report.figures["outputs"]["paths"]
    assert len(read_dataset(settings, "tracks")) == 305


def test_stages_run_separately_equal_one_full_run(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    full = job_settings(tmp_path / "full", simulator.url)
    run_job(full, RUN_DATE)
    full_calls = api_calls(simulator)

    simulator.reset()
    staged = job_settings(tmp_path / "staged", simulator.url)
    per_stage = {}
    for stage in ("resolve", "features", "recommendations", "publish"):
        before = api_calls(simulator)
        run_job(staged, RUN_DATE, stages=[stage])
        per_stage[stage] = diff(api_calls(simulator), before)
        if stage != "publish":
            assert not (staged.output_dir / "tracks").exists(), f"{stage} published"
    assert api_calls(simulator) == full_calls
    # each stage asked its own endpoint only; publish had nothing left to fetch
    assert per_stage["resolve"] == {"tracks": full_calls["tracks"], "audio_features": 0,
                                    "recommendation": 0}  # fmt: skip
    assert per_stage["features"]["audio_features"] == full_calls["audio_features"]
    assert per_stage["recommendations"]["recommendation"] == full_calls["recommendation"]
    assert sum(per_stage["publish"].values()) == 0

    for dataset in ("tracks", "recommendations"):
        pd.testing.assert_frame_equal(
            read_dataset(staged, dataset), read_dataset(full, dataset), check_exact=True
        )
    assert math.isfinite(float(read_dataset(staged, "tracks")["tempo"].dropna().sum()))
