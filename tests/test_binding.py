"""The told-rate rule (issue 10 goal 1) and the binding-limit figure."""

from __future__ import annotations

import pytest

from pipeline.api.binding import binding_limit
from pipeline.config import limiter_config
from pipeline.settings import EndpointLimit, Settings, load_settings


def test_untold_rate_keeps_the_seeds_and_the_gap_and_names_the_binding_one() -> None:
    config = limiter_config(Settings())
    assert not config.told_rate
    assert config.min_interval_s == 0.25
    assert config.endpoint_limits["tracks"].rate_per_min == 80
    fig = binding_limit(config, endpoints=["tracks"])
    assert fig["binding_limit"] == "endpoint tracks"
    assert fig["binding_rate_per_min"] == pytest.approx(60 / 0.77, abs=0.01)


def test_told_rate_is_the_rate_aimed_at(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECCOBEATS_RATE_LIMIT", "300")
    config = limiter_config(load_settings({}))
    assert config.told_rate
    assert config.endpoint_limits == {}
    # one told interval (0.2 s) + 5 % of it as margin, in total
    assert config.min_interval_s + config.margin_s == pytest.approx(0.21)
    fig = binding_limit(config, endpoints=["tracks", "audio_features"])
    # the spacing binds, 5 % under the told rate: the price of the jitter margin
    assert fig["binding_limit"] == "spacing at the told rate 0.21 s"
    assert fig["binding_rate_per_min"] == pytest.approx(285.71)
    assert fig["limits_per_min"]["told rate"] == 300


def test_told_rate_survives_replace_and_explicit_limits_still_win() -> None:
    told = Settings(rate_limit=120).replace(window_s=4.0)
    assert limiter_config(told).told_rate
    explicit = Settings(
        rate_limit=300, min_interval_s=0.5, endpoint_limits={"tracks": EndpointLimit()}
    )
    config = limiter_config(explicit)
    assert config.min_interval_s == 0.5
    assert "tracks" in config.endpoint_limits
    assert binding_limit(config)["binding_limit"] == "endpoint recommendation"  # a seed
    # the gap given beside the told rate is the setting's (0.5 s), not the told 0.2 s spacing
    assert binding_limit(config, endpoints=["tracks"])["binding_limit"] == (
        "global gap (min_interval_s) 0.52 s"
    )


def test_a_learned_rate_below_the_told_one_is_named_as_learned() -> None:
    """Told 600/min, halved after a 429: the summary must not call 300/min the told rate."""
    config = limiter_config(Settings(rate_limit=600))
    fig = binding_limit(config, rate_per_window=300.0)
    assert fig["binding_limit"] == "learned rate (configured 600/min)"
    assert fig["binding_rate_per_min"] == 300
    assert binding_limit(config, rate_per_window=600.0)["binding_limit"].startswith("spacing")


def test_in_flight_bound_is_named_when_it_binds() -> None:
    config = limiter_config(Settings(rate_limit=300))
    fig = binding_limit(config, in_flight_limit=4, latency_s=2.0)
    assert fig["binding_limit"] == "4 in flight x 2 s latency"
    assert fig["binding_rate_per_min"] == 120


def test_a_given_min_interval_beside_a_told_rate_is_named_as_the_setting_not_the_rate() -> None:
    """Told 120/min (0.5 s apart) with min_interval_s = 1.0: the 1.02 s gap binds, and the
    label used to say "spacing at the told rate", sending the user to --rate-limit."""
    config = limiter_config(Settings(rate_limit=120, min_interval_s=1.0))
    fig = binding_limit(config)
    assert fig["binding_limit"] == "global gap (min_interval_s) 1.02 s"
    assert fig["binding_rate_per_min"] == pytest.approx(58.82)
    assert "told rate" not in fig["binding_limit"]
    untold = binding_limit(limiter_config(Settings()), endpoints=[])
    assert "global gap (min_interval_s) 0.27 s" in untold["limits_per_min"]
