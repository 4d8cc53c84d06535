"""The learned limiter rate: round trip, refusal of nonsense, StateError on a failed write."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.errors import StateError
from pipeline.state.learned_rate import load_learned_rate, save_learned_rate

# -- learned rate --------------------------------------------------------------------------


def test_learned_rate_roundtrip(tmp_path: Path) -> None:
    assert load_learned_rate(tmp_path) is None
    save_learned_rate(tmp_path, 42.5, datetime(2025, 1, 1, tzinfo=UTC))
    assert load_learned_rate(tmp_path) == 42.5
    data = json.loads((tmp_path / "learned_rate.json").read_text())
    assert data["saved_at"].startswith("2025-01-01T00:00:00")


def test_learned_rate_rejects_nonsense(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        save_learned_rate(tmp_path, 0.0, datetime(2025, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError):
        save_learned_rate(tmp_path, 1.0, datetime(2025, 1, 1))
    (tmp_path / "learned_rate.json").write_text('{"rate_per_window": -3}')
    assert load_learned_rate(tmp_path) is None


def test_unwritable_learned_rate_is_a_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(StateError, match="cannot write"):
        save_learned_rate(blocker, 2.0, datetime(2025, 1, 1, tzinfo=UTC))


def test_learned_latency_roundtrip_and_nonsense(tmp_path: Path) -> None:
    from pipeline.state.learned_rate import load_learned_latency

    when = datetime(2025, 1, 1, tzinfo=UTC)
    save_learned_rate(tmp_path, 42.5, when, concurrency=4)
    assert load_learned_latency(tmp_path) is None  # not given: not saved
    save_learned_rate(tmp_path, 42.5, when, concurrency=4, latency_s=31.25)
    assert load_learned_latency(tmp_path) == 31.25
    for bad in ('"30"', "-1", "0", "true", "NaN"):
        (tmp_path / "learned_rate.json").write_text(f'{{"rate_per_window": 1, "latency_s": {bad}}}')
        assert load_learned_latency(tmp_path) is None, bad
    assert load_learned_rate(tmp_path) == 1.0  # a bad latency does not spoil the rate


def test_a_rate_saved_at_its_ceiling_is_not_a_learned_limit(tmp_path: Path) -> None:
    """Only a rate 429s held below the run's ceiling was learned; one saved at the ceiling is
    what the run was told. A file from before the ceiling was saved keeps its old meaning."""
    from pipeline.state.learned_rate import load_learned_limit

    when = datetime(2025, 1, 1, tzinfo=UTC)
    save_learned_rate(tmp_path, 120.0, when, ceiling_per_window=120.0)
    assert load_learned_rate(tmp_path) == 120.0  # saved as it was
    assert load_learned_limit(tmp_path) is None
    save_learned_rate(tmp_path, 60.0, when, ceiling_per_window=120.0)
    assert load_learned_limit(tmp_path) == 60.0
    save_learned_rate(tmp_path, 60.0, when)  # no ceiling known: as before
    assert load_learned_limit(tmp_path) == 60.0


def test_a_run_told_a_higher_rate_starts_at_it_after_a_night_that_learned_nothing(
    tmp_path: Path,
) -> None:
    """Last night ran clean at its told 120/min; told 600/min tonight, the limiter used to
    warm-start at 120 and climb. A rate 429s held below its ceiling is still the start."""
    import threading

    from pipeline.api_resources import ApiResources
    from pipeline.clock import utc_now
    from pipeline.settings import load_settings

    when = datetime(2025, 1, 1, tzinfo=UTC)
    tonight = load_settings({"rate_limit": 600.0, "base_url": "http://127.0.0.1:9"})
    save_learned_rate(tmp_path, 120.0, when, ceiling_per_window=120.0)
    with ApiResources(tonight, tmp_path, threading.Event(), utc_now) as api:
        assert api.limiter.effective_rate == 600.0
    save_learned_rate(tmp_path, 60.0, when, ceiling_per_window=120.0)
    with ApiResources(tonight, tmp_path, threading.Event(), utc_now) as api:
        assert api.limiter.effective_rate == 60.0
