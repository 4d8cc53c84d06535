"""IdRegistry: TTLs from settings, the Spotify-ID guard, quarantine of a corrupt file."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config import ttl_config
from pipeline.settings import Settings
from pipeline.state.registry import REGISTRY_SCHEMA, IdRegistry

T0 = datetime(2025, 3, 1, tzinfo=UTC)
A = "4uLU6hMCjMI75M1A2tKUQC"
B = "7ouMYWpwJ422jRcDASZB7P"
C = "0VjIjW4GlUZAMYd2vXMi3b"


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def to_resolve(reg: IdRegistry, ids: list[str]) -> list[str]:
    """What the resolve stage asks the registry: IDs unknown or expired, in input order."""
    return reg.lookup(ids).stale_or_unknown


def test_found_trusted_60_days_missing_14(tmp_path: Path, clock: FakeClock) -> None:
    reg = IdRegistry(tmp_path, ttl_config(Settings()), clock)
    reg.record_found({A: "rb-1"})
    reg.record_missing([B])
    assert to_resolve(reg, [A, B, C]) == [C]
    clock.now = T0 + timedelta(days=13)
    assert to_resolve(reg, [A, B]) == []
    clock.now = T0 + timedelta(days=14)
    assert to_resolve(reg, [A, B]) == [B]
    clock.now = T0 + timedelta(days=59)
    assert to_resolve(reg, [A]) == []
    clock.now = T0 + timedelta(days=60)
    assert to_resolve(reg, [A]) == [A]


def test_ttls_come_from_settings(tmp_path: Path, clock: FakeClock) -> None:
    reg = IdRegistry(tmp_path, ttl_config(Settings(registry_missing_ttl_days=1)), clock)
    reg.record_missing([B])
    clock.now = T0 + timedelta(days=1)
    assert to_resolve(reg, [B]) == [B]


def test_known_rows_and_counters(tmp_path: Path, clock: FakeClock) -> None:
    reg = IdRegistry(tmp_path, ttl_config(Settings()), clock)
    reg.record_found({A: "rb-1"})
    reg.record_missing([B])
    known = reg.known([B, A, C])
    assert known["spotify_id"].tolist() == [B, A]
    assert known["reccobeats_id"].isna().tolist() == [True, False]
    assert known["reccobeats_id"].iloc[1] == "rb-1"
    assert known["status"].tolist() == ["missing", "found"]
    assert known["checked_at"].tolist() == [T0, T0]
    assert (reg.hits, reg.misses) == (2, 1)
    lookup = reg.lookup([A, C, C])
    assert lookup.stale_or_unknown == [C] and len(lookup.fresh) == 1
    assert (reg.hits, reg.misses) == (3, 2)


def test_record_found_overrides_missing(tmp_path: Path, clock: FakeClock) -> None:
    reg = IdRegistry(tmp_path, ttl_config(Settings()), clock)
    reg.record_missing([A])
    reg.record_found({A: "rb-1"})
    assert reg.known([A])["status"].tolist() == ["found"]
    assert len(reg) == 1


@pytest.mark.parametrize(
    "bad", [str(uuid.uuid4()), "short", A + "x", "4uLU6hMCjMI75M1A2tKUQ-", "", None, 12]
)
def test_refuses_non_spotify_ids(tmp_path: Path, clock: FakeClock, bad) -> None:
    reg = IdRegistry(tmp_path, ttl_config(Settings()), clock)
    with pytest.raises(ValueError, match="not 22-char base62 Spotify IDs"):
        reg.record_missing([A, bad])
    with pytest.raises(ValueError, match="not 22-char base62 Spotify IDs"):
        reg.record_found({bad: "rb-1"})
    assert len(reg) == 0  # nothing of the batch was recorded


def test_found_needs_a_reccobeats_id(tmp_path: Path, clock: FakeClock) -> None:
    reg = IdRegistry(tmp_path, ttl_config(Settings()), clock)
    with pytest.raises(ValueError, match="ReccoBeats ID"):
        reg.record_found({A: ""})


def test_checkpoint_roundtrip(tmp_path: Path, clock: FakeClock) -> None:
    reg = IdRegistry(tmp_path, ttl_config(Settings()), clock)
    reg.record_found({A: "rb-1", B: "rb-2"})
    reg.record_missing([C])
    assert reg.checkpoint() == 3
    assert pq.read_schema(tmp_path / "registry.parquet").remove_metadata() == REGISTRY_SCHEMA
    again = IdRegistry(tmp_path, ttl_config(Settings()), clock)
    assert len(again) == 3
    assert to_resolve(again, [A, B, C]) == []
    assert again.known([C])["reccobeats_id"].isna().all()


def test_corrupt_registry_quarantined_and_rebuilt(tmp_path: Path, clock, caplog) -> None:
    path = tmp_path / "registry.parquet"
    path.write_bytes(b"\x00garbage, not parquet")
    with caplog.at_level(logging.WARNING):
        reg = IdRegistry(tmp_path, ttl_config(Settings()), clock)
    assert len(reg) == 0
    assert to_resolve(reg, [A]) == [A]
    assert len(list(tmp_path.glob("registry.parquet.corrupt-*"))) == 1
    assert "quarantined" in caplog.text and "registry.parquet" in caplog.text
    reg.record_found({A: "rb-1"})
    assert reg.checkpoint() == 1
    assert len(IdRegistry(tmp_path, ttl_config(Settings()), clock)) == 1
