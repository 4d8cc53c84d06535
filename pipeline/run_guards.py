"""The job's guard rails a user meets first: dead API, stages run alone, interrupted runs.

Why apart from ``orchestrator.py``: each rule is a small decision with a user-facing message,
and the orchestrator should read as the data path. The orchestrator calls these at the
points they concern: after fetching (``nothing_fetched``), before fetching
(``nothing_resolved``, ``stage_notes``), and when a stop interrupts the run
(``interrupted_base``).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from datetime import date, datetime
from typing import Any

import pandas as pd

from pipeline.errors import EXIT_CANCELLED, NothingFetchedError, NothingResolvedError
from pipeline.io.reader import InputBatch

log = logging.getLogger(__name__)

FETCH_STAGES = ("resolve", "features", "recommendations")


def nothing_fetched(
    metrics: Mapping[str, Any], failures: list[str], base_url: str
) -> NothingFetchedError | None:
    """The error to stop with when requests were made, failed, and not one got an answer.

    "An answer" is any HTTP status, even a 404 or 429: those prove the URL is right. Only
    when every attempt ended without one (refused, DNS, timeouts) is the run "nothing could
    be fetched": then no partition is published (it would be all ``failed``).
    """
    endpoints = metrics.get("endpoints", {})
    attempts = sum(int(v.get("attempts", 0)) for v in endpoints.values())
    answered = sum(
        n for v in endpoints.values() for k, n in dict(v.get("statuses", {})).items() if k != "none"
    )
    if not failures or attempts == 0 or answered > 0:
        return None
    # The first failure that names a cause (the circuit breaker's "API unavailable" does not).
    cause = next((f for f in failures if not f.startswith("API unavailable")), failures[0])
    return NothingFetchedError(
        f"nothing could be fetched from {base_url}: {cause}; {attempts} attempts, "
        "none answered (check --base-url / RECCOBEATS_BASE_URL and the network); "
        "nothing was published"
    )


def nothing_resolved(
    stages: Collection[str], offline: bool, distinct: int, known: int
) -> NothingResolvedError | None:
    """The error to stop with when features/recommendations run alone on IDs the resolve
    stage never saw: the registry knows none of them, found or missing (``known`` = 0).

    Why an error (exit 2) and not a note: ``--stage features`` on a fresh state dir ended
    ``ok`` with "0 new", a success that fetched nothing. Why "known", not "found": a resolve
    task (the Airflow DAG runs each stage alone) whose IDs were all missing leaves them
    known; the features task after it has nothing to fetch and must still succeed.
    """
    asked = set(stages)
    needs = sorted(asked & {"features", "recommendations"})
    if offline or known or not distinct or not needs or asked & {"resolve", "publish"}:
        return None
    return NothingResolvedError(
        f"setting 'stages': nothing resolved to fetch {' and '.join(needs)} for: none of "
        f"the {distinct} distinct IDs is in the state dir's registry (the resolve stage has "
        "not run on this input); run --stage resolve first"
    )


def stage_notes(
    stages: Collection[str], offline: bool, distinct: int, known_before: int
) -> list[str]:
    """What a run of only some stages could not do because the state lacked it (logged).

    ``--stage features`` on a state dir that resolved only part of the input used to skip
    the rest and say nothing; now it says which upstream stage is missing and for how many
    IDs (none of them known at all: ``nothing_resolved`` stops the run instead).
    ``known_before``: IDs the registry knows, found or missing; a missing one is resolved
    (its row is ``not_found``), and counting it as unresolved told a user to run resolve
    right after a resolve that had answered every ID.
    """
    notes = []
    asked = set(stages)
    unresolved = distinct - known_before
    if offline:
        notes.append(
            "offline: no request made; publishing from the state dir only "
            f"({unresolved} of {distinct} distinct IDs not resolved there: their rows are "
            "'pending')"
        )
    elif "resolve" not in asked and unresolved:
        needs = sorted(asked & {"features", "recommendations"})
        if needs:
            notes.append(
                f"{'/'.join(needs)}: {unresolved} of {distinct} distinct IDs are not resolved "
                "in the state dir, so they were skipped; run --stage resolve first"
            )
    if "publish" in asked and not offline and not asked & set(FETCH_STAGES):
        notes.append(
            "publish: also ran resolve, features and recommendations for what the state dir "
            "lacked (use --offline to publish from the state only)"
        )
    for note in notes:
        log.warning("%s", note)
    return notes


def interrupted_ids(
    distinct: int, known_before: pd.DataFrame, known_now: pd.DataFrame
) -> dict[str, int]:
    """The ``ids`` figures of a stopped run, from the registry before and after it.

    Why the registry and not the resolve stage's tally: the stop ends the stage before its
    outcome reaches the report (which said "0 found" with found mappings saved), and the
    registry is what the next run trusts. ``known_before``/``known_now``: the registry's fresh
    rows (``spotify_id``, ``status``) for the input's distinct IDs; ``new`` IDs the stop left
    unanswered are neither found nor missing (the next run asks them).
    """
    before = set(known_before["spotify_id"])
    now = known_now[~known_now["spotify_id"].isin(before)]
    return {
        "distinct": distinct,
        "known": len(before),
        "new": distinct - len(before),
        "found": int((now["status"] == "found").sum()),
        "missing": int((now["status"] == "missing").sum()),
    }


def interrupted_base(
    run_id: str,
    run_date: date,
    started: datetime,
    stages: Collection[str],
    batch: InputBatch,
    ids: Mapping[str, int],
    metrics: Mapping[str, Any],
) -> dict[str, Any]:
    """The run report's own figures for a run stopped by a signal: what was saved.

    Every answer that came back was journaled as it landed and checkpointed on the way out,
    so "saved" is the answers received per endpoint, and ``ids`` what the registry now holds
    (``interrupted_ids``); nothing was published.
    """
    endpoints = metrics.get("endpoints", {})
    saved = {ep: int(v.get("successes", 0)) for ep, v in endpoints.items()}
    return {
        "run_id": run_id,
        "run_date": run_date.isoformat(),
        "started_at": started.isoformat(),
        "stages": [s for s in (*FETCH_STAGES, "publish") if s in stages],
        "status": "interrupted",
        "exit_code": EXIT_CANCELLED,
        "input": {"files": [str(p) for p in batch.files], "id_column": batch.id_column},
        "rows": {"valid": len(batch.rows), "rejected": len(batch.rejects)},
        "ids": dict(ids),
        "saved": {
            "answers_by_endpoint": saved,
            "answers": sum(saved.values()),
            "where": "state dir (journaled as received, checkpointed on stop)",
            "published": False,
        },
        "failures": {"count": 0, "messages": []},
        "outputs": {},
    }
