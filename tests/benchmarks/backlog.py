"""Backfill benchmark (issue 15): a cold backlog drained by budgeted runs, against one run.

    python -m tests.benchmarks.backlog                 # 20,000 tracks, budget = C/4
    python -m tests.benchmarks.backlog --tracks 4000   # quicker

What a user tells the job: the base URL, the rate limit (``--rate``, per minute, the limit
the simulator enforces) and the budget. Everything else stays at its default. Time is
compressed (a fast simulator and a high told rate); the figures are ratios, which the
compression does not change. Prints a table and one JSON line per figure:

* the unbudgeted cold run's requests C (and the catalog's minimum);
* budgeted runs with ``max_requests = ceil(C / 4)``: how many runs, total requests / C, and
  after each run the rows ``ok``/``pending``/``failed`` as ``load_enriched`` reads them;
* rows complete per request after one budgeted run, ``rows_first`` vs ``stage_by_stage``;
* the dry run's predicted runs and requests (after the first run) vs the measured ones;
* a time-budgeted run: how far past its deadline it stopped, against the server latency.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import load_enriched, load_settings, run_job
from pipeline.simulator import Catalog, SimulatorConfig, SimulatorServer

RUN_DATE = date(2025, 6, 1)
COMPLETE = ("ok", "not_found", "no_features")
PLAYLIST = 250


def _input(path: Path, ids: list[str]) -> Path:
    rows = pd.DataFrame(
        {
            "playlist_id": [f"pl{i // PLAYLIST:04d}" for i in range(len(ids))],
            "spotify_track_id": ids,
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(path, index=False)
    return path


def _settings(root: Path, url: str, inp: Path, rate: float, **extra: Any):  # type: ignore[no-untyped-def]
    values: dict[str, Any] = {
        "base_url": url,
        "input": inp,
        "output_dir": root / "output",
        "state_dir": root / "state",
        "rate_limit": rate,
        "progress": False,
    }
    values.update(extra)
    return load_settings(values)


def _served(sim: SimulatorServer) -> int:
    return int(sim.counters()["requests_total"])


def _statuses(root: Path) -> dict[str, int]:
    rows = load_enriched(root / "output", date=RUN_DATE)
    return {k: int(v) for k, v in rows["status"].value_counts().items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tracks", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=30_000.0, help="told rate, requests/min")
    ap.add_argument("--latency", type=float, default=0.02, help="server latency, seconds")
    args = ap.parse_args(argv)

    catalog = Catalog.load(extra_synthetic=args.tracks + 500, seed=11)
    ids = list(catalog.all_spotify_ids[-args.tracks :])
    config = SimulatorConfig(
        rate_per_window=args.rate, window_s=60.0, burst=0, latency_s=args.latency, seed=11
    )
    lines: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="reccobeats-backlog-") as tmp,
        SimulatorServer(config, catalog=catalog) as sim,
    ):
        base = Path(tmp)
        inp = _input(base / "input.parquet", ids)

        # 1. One unbudgeted cold run: C.
        t0 = time.monotonic()
        one = run_job(_settings(base / "one", sim.url, inp, args.rate), RUN_DATE)
        c_one = _served(sim)
        lines.append(
            {
                "figure": "unbudgeted",
                "requests": c_one,
                "status": one.status,
                "wall_s": round(time.monotonic() - t0, 2),
                "rows": _statuses(base / "one"),
            }
        )
        budget = math.ceil(c_one / 4)

        # 2. The same backlog in runs of max_requests = ceil(C / 4).
        root = base / "budgeted"
        s = _settings(root, sim.url, inp, args.rate, max_requests=budget)
        plan0 = run_job(s, RUN_DATE, dry_run=True).figures["plan"]
        runs, before, predicted = 0, _served(sim), None
        while True:
            runs += 1
            report = run_job(s, RUN_DATE)
            spent = _served(sim) - before
            before = _served(sim)
            lines.append(
                {
                    "figure": "budgeted_run",
                    "run": runs,
                    "requests": spent,
                    "status": report.status,
                    "exit_code": report.exit_code,
                    "rows": _statuses(root),
                }
            )
            if runs == 1:
                p = run_job(s, RUN_DATE, dry_run=True).figures["plan"]
                predicted = {
                    "runs_left": p["runs_needed"],
                    "requests_left": sum(p["calls_expected"].values()),
                    "measured_from": _served(sim),
                }
            if report.status == "ok" or runs >= 12:
                break
        total = _served(sim) - c_one
        assert predicted is not None
        measured_left = total - lines[-runs]["requests"]
        lines.append(
            {
                "figure": "budgeted_total",
                "budget": budget,
                "runs": runs,
                "requests": total,
                "requests_over_unbudgeted": round(total / c_one, 4),
                "planned_runs_before_first": plan0["runs_needed"],
                "predicted_after_first": predicted,
                "measured_runs_left": runs - 1,
                "measured_requests_left": measured_left,
            }
        )

        # 3. Rows complete per request after one budgeted run: rows_first vs stage_by_stage.
        per: dict[str, float] = {}
        for order in ("rows_first", "stage_by_stage"):
            r = base / order
            start = _served(sim)
            run_job(
                _settings(r, sim.url, inp, args.rate, max_requests=budget, work_order=order),
                RUN_DATE,
            )
            spent = _served(sim) - start
            done = sum(v for k, v in _statuses(r).items() if k in COMPLETE)
            per[order] = done / spent
            lines.append(
                {
                    "figure": "rows_per_request",
                    "order": order,
                    "requests": spent,
                    "rows_complete": done,
                    "rows_per_request": round(done / spent, 3),
                }
            )
        lines.append(
            {
                "figure": "rows_per_request_ratio",
                "rows_first_over_stage_by_stage": round(
                    per["rows_first"] / per["stage_by_stage"], 2
                ),
            }
        )

        # 4. A time budget: how late after its deadline did the run stop?
        r = base / "timed"
        tb = max(1.0, one.figures["timing"]["api_wall_s"] / 3)
        t0 = time.monotonic()
        timed = run_job(_settings(r, sim.url, inp, args.rate, time_budget=tb), RUN_DATE)
        api_wall = timed.figures["timing"]["api_wall_s"]
        lines.append(
            {
                "figure": "time_budget",
                "budget_s": round(tb, 2),
                "api_stages_s": round(api_wall, 3),
                "api_stages_past_budget_s": round(api_wall - tb, 3),
                "last_call_past_deadline_s": timed.figures["budget"]["past_deadline_s"],
                "server_latency_s": args.latency,
                "status": timed.status,
                "rows": _statuses(r),
            }
        )

    for line in lines:
        print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
