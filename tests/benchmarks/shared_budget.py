"""Four jobs at once, one budget: wall against C_total/R, with and without the shared budget.

    python -m tests.benchmarks.shared_budget                   # ~2 min: starts its own Redis
    python -m tests.benchmarks.shared_budget --jobs 4 --ids 200 --rate 40 --window 4

Four CLI runs (own inputs, state and output dirs) against ONE simulator enforcing R starts per
window globally (budget model, no burst cap, 20-40 ms latency). With ``--shared-budget`` on a
real redis-server they must get zero 429 and finish near the floor C_total/R; without it each
process believes it has the whole budget, and the server's 429 count says what that costs.
Time is compressed as in tests/benchmarks/run.py: a window of ``--window`` seconds stands for
the minute. Requests and 429s are the simulator's counts. Wall figures:

* ``span``: first to last arrival at the server (what the budget governs);
* ``wall``: launch of the first process to the exit of the last (adds ~2 s of start-up).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.simulator import SimulatorConfig, SimulatorServer
from tests.redis_support import start_redis
from tests.shared_budget_support import CounterSampler, FleetSpec, make_jobs


def run_fleet(
    root: Path, args: argparse.Namespace, redis_url: str | None, label: str
) -> dict[str, Any]:
    config = SimulatorConfig(
        rate_per_window=args.rate,
        window_s=args.window,
        burst=0,
        latency_s=0.02,
        latency_jitter_s=0.02,
    )
    with SimulatorServer(config) as server:
        spec = FleetSpec(
            rate_per_window=args.rate,
            window_s=args.window,
            max_concurrency=args.concurrency,
            chunk_size=args.chunk,
            jitter_margin_s=args.margin,
        )
        jobs = make_jobs(
            root / label, server, spec, count=args.jobs, ids_per_job=args.ids, redis_url=redis_url
        )
        with CounterSampler(server, every_s=0.01) as sampler:
            t0 = time.monotonic()
            for job in jobs:
                job.start()
            codes = [job.wait(timeout=1800) for job in jobs]
            wall = time.monotonic() - t0
        sim = server.counters()
    first = sampler.first(lambda s: s[1] > 0)
    last = sampler.last_arrival_after(0.0)
    span = (last - first[0]) if first is not None and last is not None else float("nan")
    total = int(sim["requests_total"])
    floor = total / (args.rate / args.window)
    return {
        "run": label,
        "jobs": args.jobs,
        "exit_codes": codes,
        "requests": total,
        "status_429": sim["rejected_429"],
        "max_in_window": sim["max_in_window"],
        "limit_per_window": args.rate,
        "floor_s": round(floor, 2),
        "span_s": round(span, 2),
        "wall_s": round(wall, 2),
        "span_over_floor": round(span / floor, 3),
        "wall_over_floor": round(wall / floor, 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--ids", type=int, default=200, help="IDs per job (disjoint)")
    ap.add_argument("--chunk", type=int, default=4, help="IDs per batch call")
    ap.add_argument("--rate", type=float, default=40, help="R: starts per window, server + budget")
    ap.add_argument("--window", type=float, default=4.0, help="seconds standing for the minute")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--margin", type=float, default=0.1, help="jitter_margin_s (2.5%% of 4 s)")
    ap.add_argument("--skip-unshared", action="store_true")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-shared-") as tmp:
        root = Path(tmp)
        redis = start_redis(root)
        try:
            rows.append(run_fleet(root, args, redis.url, "shared"))
        finally:
            redis.stop()
        if not args.skip_unshared:
            rows.append(run_fleet(root, args, None, "unshared"))
    head = f"{'run':<9} {'requests':>8} {'429s':>5} {'max/window':>10} {'floor s':>8} "
    print(head + f"{'span s':>7} {'wall s':>7} {'span/floor':>10} {'wall/floor':>10}  exit codes")
    for r in rows:
        print(
            f"{r['run']:<9} {r['requests']:>8} {r['status_429']:>5} "
            f"{r['max_in_window']:>5}/{r['limit_per_window']:<4g} {r['floor_s']:>8} "
            f"{r['span_s']:>7} {r['wall_s']:>7} {r['span_over_floor']:>10} "
            f"{r['wall_over_floor']:>10}  {r['exit_codes']}"
        )
    for r in rows:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
