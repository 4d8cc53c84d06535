"""The limiter rate the last run settled at, kept in ``<state>/learned_rate.json``.

Why: the adaptive limiter probes upwards from the configured rate; starting tonight where
last night ended saves the probing (and its 429s). Only a rate 429s held below its run's
ceiling (saved beside it) is such a memory (``load_learned_limit``): one saved at the
ceiling is only what that run was told. A missing or nonsensical value means "no memory":
the limiter starts from its configuration.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

from pipeline.errors import StateError
from pipeline.io.atomic import json_bytes
from pipeline.io.storage import Storage, open_storage
from pipeline.state.quarantine import read_json_safely

LEARNED_RATE_NAME = "learned_rate.json"


def load_learned_rate(state_dir: Storage | Path | str) -> float | None:
    """The saved rate (requests per window), or ``None`` when there is none or it is not a
    positive finite number."""
    data = _read(state_dir)
    return None if data is None else _positive(data.get("rate_per_window"))


def load_learned_limit(state_dir: Storage | Path | str) -> float | None:
    """The saved rate (requests per window) when the limiter learned it, else ``None``.

    Learned means 429s held the rate below the ceiling the run was configured with (saved
    beside it as ``ceiling_per_window``). A run that ended at its ceiling learned nothing
    about the server: its saved rate is only what it was told (or configured), and a dry run
    that took it as the learned limit planned tonight's told 600/min at last night's 120/min
    and named it "learned". Files saved before the ceiling was kept say nothing either way;
    their rate counts as learned, as it did then (the next run rewrites the file).
    """
    data = _read(state_dir)
    if data is None:
        return None
    rate = _positive(data.get("rate_per_window"))
    ceiling = _positive(data.get("ceiling_per_window"))
    if rate is None or ceiling is None:
        return rate
    return rate if rate < ceiling else None


def load_learned_concurrency(state_dir: Storage | Path | str) -> int | None:
    """The saved in-flight limit, or ``None`` when there is none or it is not a positive int
    (files written before issue 10 have none)."""
    data = _read(state_dir)
    if data is None:
        return None
    value = data.get("concurrency")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


def load_learned_latency(state_dir: Storage | Path | str) -> float | None:
    """The last run's median answer latency in seconds, or ``None`` (none saved, or not a
    positive finite number). Why kept: a dry run's ETA at production latencies (20-140 s) is
    bound by requests in flight x latency, not by the rate (issue 10)."""
    data = _read(state_dir)
    return None if data is None else _positive(data.get("latency_s"))


def _positive(value: object) -> float | None:
    """``value`` as a float when it is a positive finite number, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


def _read(state_dir: Storage | Path | str) -> dict[str, object] | None:
    """The file's object, or None when it is missing or not one (quarantined if corrupt)."""
    data = read_json_safely(open_storage(state_dir), LEARNED_RATE_NAME, default=None)
    return data if isinstance(data, dict) else None


def save_learned_rate(
    state_dir: Storage | Path | str,
    rate: float,
    when: datetime,
    concurrency: int | None = None,
    latency_s: float | None = None,
    ceiling_per_window: float | None = None,
) -> None:
    """Persist the limiter's effective rate (requests per window) at ``when``, and the learned
    in-flight limit and median latency when given (issue 10). ``ceiling_per_window``: the
    rate the run was configured with, so a reader can tell a learned rate (below it) from
    a run that ended where it was told to be (``load_learned_limit``)."""
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"learned rate must be a positive finite number, got {rate!r}")
    if when.tzinfo is None:
        raise ValueError("when must be timezone-aware")
    payload: dict[str, object] = {
        "rate_per_window": float(rate),
        "saved_at": when.astimezone(UTC).isoformat(),
    }
    if concurrency is not None:
        payload["concurrency"] = int(concurrency)
    if latency_s is not None and math.isfinite(latency_s) and latency_s > 0:
        payload["latency_s"] = round(float(latency_s), 6)
    if ceiling_per_window is not None:
        payload["ceiling_per_window"] = float(ceiling_per_window)
    store = open_storage(state_dir)
    try:
        store.write_bytes(LEARNED_RATE_NAME, json_bytes(payload))
    except OSError as exc:
        raise StateError(f"cannot write {store.uri(LEARNED_RATE_NAME)}: {exc}") from exc
