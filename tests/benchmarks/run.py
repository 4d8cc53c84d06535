"""Benchmark suite: how close the job gets to the rate-limit floor C/R, with how few calls.

    python -m tests.benchmarks.run                  # everything (~10-15 min on 2 cores)
    python -m tests.benchmarks.run --quick          # cold + warm + incremental, model (a), 2k
    python -m tests.benchmarks.run --scenario cold --models spacing --sizes 2000

Each run starts a fresh in-process simulator (strict limit, 20-40 ms latency) and runs the
job -- or the greedy baseline -- in a child process (``worker``), so peak RSS is the run's
own. Time is scaled down: a window of ``--window`` seconds (default 4) stands for the real
minute, and every time-like setting (quiet period, backoff, jitter margin, block length,
max Retry-After) is scaled by the same factor, so the ratios match production's. The server
budget L per window is sized from the workload so that C >= 5.5 L (the budget binds).

Requests and 429s are counted by the SERVER (simulator counters) and cross-checked against
the run report (``report_*`` fields). Prints a table, then one JSON line per run.

The time scaling, the lifted per-endpoint seeds and the global gap set to the server's shape
are tuned settings (``compressed.job_overrides``), so each cold run is followed by an
``ours@defaults`` row: the same server, the job told only the limit (rate and window). For the
job exactly as a user runs it (real minute, real CLI) see ``matrix``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.simulator import SimulatorServer
from tests.benchmarks.common import format_table, run_child
from tests.benchmarks.compressed import (
    MODEL_LABEL,
    MODELS,
    RUN_DATE,
    Limit,
    default_overrides,
    job_overrides,
    limit_for,
    sim_config,
)
from tests.benchmarks.workload import (
    SYNTHETIC,
    catalog,
    min_calls,
    synthetic_ids,
    workload,
)

SCENARIOS = ("cold", "cold2x", "warm", "incremental", "local", "faults")


def _child(spec: dict, work: Path) -> dict:
    return run_child(spec, work)


def run_ours(
    scenario: str,
    lim: Limit,
    inp: Path,
    work: Path,
    need: dict[str, int],
    *,
    factor: float = 1.0,
    faults: tuple[float, float] = (0.0, 0.0),
    n: int,
    defaults: bool = False,
) -> dict:
    """Our job; ``defaults``: told only the limit (the row beside the tuned one)."""
    overrides = default_overrides if defaults else job_overrides
    with SimulatorServer(sim_config(lim, error_rate=faults[0], malformed_rate=faults[1])) as sim:
        spec = {
            "kind": "job",
            "overrides": overrides(lim, sim.url, inp, work, factor),
            "run_date": RUN_DATE,
        }
        child = _child(spec, work)
        server = sim.counters()
    report = json.loads(Path(child["report_path"]).read_text())
    client = "ours@defaults" if defaults else "ours"
    return _row(scenario, client, lim, n, need, server, child, report)


def run_greedy(scenario: str, lim: Limit, inp: Path, work: Path, need: dict, n: int) -> dict:
    deadline = max(60.0, 5 * lim.floor(sum(need.values())))
    with SimulatorServer(sim_config(lim)) as sim:
        spec = {"kind": "greedy", "base_url": sim.url, "input": str(inp), "deadline_s": deadline}
        child = _child(spec, work)
        server = sim.counters()
    return _row(scenario, "greedy", lim, n, need, server, child, None)


def _row(
    scenario: str,
    client: str,
    lim: Limit,
    n: int,
    need: dict[str, int],
    server: dict,
    child: dict,
    report: dict | None,
) -> dict[str, Any]:
    c_min = sum(need.values())
    requests = int(server["requests_total"])
    if report is not None:
        t = report["timing"]
        wall, api_wall = float(t["wall_s"]), float(t["api_wall_s"])
        cooldown = float(report["limiter"].get("cooldown_seconds") or 0.0)
    else:
        wall = api_wall = float(child["wall_s"])
        cooldown = float(child["retry_after_slept_s"])  # summed over threads
    c_over_r = c_min / lim.rate_per_s
    floor = lim.floor(c_min)
    row: dict[str, Any] = {
        "scenario": scenario,
        "n": n,
        "model": lim.model,
        "client": client,
        "limit": {"L": lim.L, "window_s": lim.window_s, "burst_per_s": lim.burst},
        "c_min": c_min,
        "c_min_by_endpoint": need,
        "requests": requests,
        "requests_over_c": round(requests / c_min, 3) if c_min else None,
        "status_429": int(server["rejected_429"]),
        "blocks": int(server.get("blocks_started", 0)),
        "cooldown_s": round(cooldown, 2),
        "wall_s": round(wall, 2),
        "api_wall_s": round(api_wall, 2),
        "c_over_r_s": round(c_over_r, 2),
        "floor_s": round(floor, 2),
        "wall_over_c_r": round(wall / c_over_r, 3) if c_min else None,
        "wall_over_floor": round(wall / floor, 3) if c_min and floor else None,
        "effective_rate_per_s": round(requests / api_wall, 2) if api_wall > 0 else 0.0,
        "limit_rate_per_s": round(lim.rate_per_s, 2),
        "peak_rss_mb": round(child["peak_rss_mb"], 1),
        "finished": bool(child.get("finished", True)),
    }
    if report is not None:
        row["report_requests"] = int(report["requests"]["total_attempts"])
        row["report_429"] = int(report["requests"]["status_429"])
        row["report_path"] = child["report_path"]
        row["failed_ids"] = int(report["ids"].get("failed", 0))
        row["track_status"] = report.get("outputs", {}).get("track_status", {})
        row["exit_code"] = child["exit_code"]
        row["report_agrees"] = (row["report_requests"], row["report_429"]) == (
            requests,
            row["status_429"],
        )
    return row


# -- scenarios -----------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        self.rows: list[dict] = []
        self.ids = synthetic_ids()

    def emit(self, row: dict) -> None:
        self.rows.append(row)
        print(json.dumps(row, sort_keys=True), flush=True)

    def inputs(self, n: int, repeat: int = 1) -> tuple[Path, Any]:
        wl = workload(self.ids[:n])
        return wl.write(self.root / "inputs" / f"n{n}x{repeat}.parquet", repeat), wl

    def limit(self, model: str, n: int) -> Limit:
        _, wl = self.inputs(n)
        return limit_for(model, sum(min_calls(wl.rows).values()), self.args.window)

    def work(self, *parts: object) -> Path:
        path = self.root.joinpath(*map(str, parts))
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def cold(self, factor: float = 1.0, scenario: str = "cold") -> None:
        for n in self.args.sizes:
            inp, wl = self.inputs(n)
            need = min_calls(wl.rows)
            for model in self.args.models:
                lim = self.limit(model, n)
                work = self.work(scenario, n, model)
                self.emit(run_ours(scenario, lim, inp, work, need, factor=factor, n=n))
                if self.args.defaults_row:  # the same run with only the limit told
                    dwork = self.work(scenario + "@defaults", n, model)
                    kw = {"factor": factor, "n": n, "defaults": True}
                    self.emit(run_ours(scenario, lim, inp, dwork, need, **kw))
                if scenario == "cold" and self.args.greedy:
                    self.emit(run_greedy(scenario, lim, inp, work, need, n))

    def warm(self) -> None:
        n = max(self.args.sizes)
        inp, wl = self.inputs(n)
        for model in self.args.models:
            work = self.root / "cold" / str(n) / model
            if not (work / "state").exists():
                self.cold_one(n, model, work)
            lim = self.limit(model, n)
            self.emit(run_ours("warm", lim, inp, work, dict.fromkeys(min_calls(wl.rows), 0), n=n))

    def cold_one(self, n: int, model: str, work: Path) -> None:
        inp, wl = self.inputs(n)
        work.mkdir(parents=True, exist_ok=True)
        run_ours("cold(setup)", self.limit(model, n), inp, work, min_calls(wl.rows), n=n)

    def incremental(self) -> None:
        n = max(self.args.sizes)
        extra = math.ceil(n * 0.05)
        old = workload(self.ids[:n])
        new = workload(self.ids[n : n + extra], first_playlist=math.ceil(n / 250))
        rows = pd.concat([old.rows, new.rows], ignore_index=True)
        inp = type(old)(rows).write(self.root / "inputs" / f"n{n}+{extra}.parquet")
        need = min_calls(rows, known_before=set(old.rows["spotify_track_id"]))
        for model in self.args.models:
            base = self.root / "cold" / str(n) / model
            if not (base / "state").exists():
                self.cold_one(n, model, base)
            work = self.work("incremental", n, model)
            shutil.copytree(base / "state", work / "state")
            lim = self.limit(model, n)
            self.emit(run_ours("incremental", lim, inp, work, need, n=n + extra))

    def local(self) -> None:
        n = max(self.args.sizes)
        repeat = max(1, self.args.local_rows // n)
        inp, wl = self.inputs(n, repeat)
        model = self.args.models[0]
        base = self.root / "cold" / str(n) / model
        if not (base / "state").exists():
            self.cold_one(n, model, base)
        work = self.work("local", n, model)
        shutil.copytree(base / "state", work / "state")
        lim = self.limit(model, n)
        need = dict.fromkeys(min_calls(wl.rows), 0)
        self.emit(run_ours("local", lim, inp, work, need, n=n * repeat))

    def faults(self) -> None:
        n = min(self.args.sizes)
        inp, wl = self.inputs(n)
        need = min_calls(wl.rows)
        for model in self.args.models:
            lim = self.limit(model, n)
            work = self.work("faults", n, model)
            self.emit(run_ours("faults", lim, inp, work, need, faults=(0.10, 0.05), n=n))


# -- output --------------------------------------------------------------------------------

COLUMNS = (
    ("scenario", "scenario", "{}"),
    ("n", "N", "{}"),
    ("model", "model", "{}"),
    ("client", "client", "{}"),
    ("c_min", "C", "{}"),
    ("requests", "req", "{}"),
    ("requests_over_c", "req/C", "{:.3f}"),
    ("status_429", "429", "{}"),
    ("blocks", "blk", "{}"),
    ("cooldown_s", "cool s", "{:.1f}"),
    ("wall_s", "wall s", "{:.2f}"),
    ("c_over_r_s", "C/R s", "{:.1f}"),
    ("floor_s", "floor s", "{:.1f}"),
    ("wall_over_c_r", "wall/(C/R)", "{:.3f}"),
    ("wall_over_floor", "wall/floor", "{:.3f}"),
    ("effective_rate_per_s", "eff/s", "{:.2f}"),
    ("limit_rate_per_s", "limit/s", "{:.2f}"),
    ("peak_rss_mb", "RSS MB", "{:.0f}"),
)


def table(rows: list[dict], markdown: bool = False) -> str:
    def value(row: dict, key: str) -> Any:
        v = row.get(key)
        return MODEL_LABEL.get(v, v) if key == "model" else v

    return format_table(rows, COLUMNS, value, markdown)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks.run", description=__doc__)
    p.add_argument("--scenario", action="append", choices=SCENARIOS, help="repeatable")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--sizes", nargs="+", type=int, default=[2000, 10000])
    p.add_argument("--window", type=float, default=4.0, help="server window, seconds")
    p.add_argument("--local-rows", type=int, default=1_000_000)
    p.add_argument("--no-greedy", dest="greedy", action="store_false")
    p.add_argument(
        "--no-defaults-row",
        dest="defaults_row",
        action="store_false",
        help="skip the row at the defaults (only the limit told) beside each cold run",
    )
    p.add_argument("--quick", action="store_true", help="cold+warm+incremental, model a, 2k")
    p.add_argument("--workdir", type=Path, help="keep run dirs here (default: a temp dir)")
    p.add_argument("--json-out", type=Path, help="also write the rows as a JSON list here")
    p.add_argument("--markdown-out", type=Path, help="also write the table as Markdown here")
    args = p.parse_args(argv)
    if args.quick:
        args.scenario = args.scenario or ["cold", "warm", "incremental"]
        args.models = ["budget"]
        args.sizes = [2000]
    args.scenario = args.scenario or list(SCENARIOS)
    if max(args.sizes) + math.ceil(max(args.sizes) * 0.05) > SYNTHETIC:
        p.error(f"sizes must leave 5 % headroom in the {SYNTHETIC} synthetic tracks")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    catalog()  # build once, before the clock matters
    t0 = time.monotonic()
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="reccobeats-bench-")
        root = Path(tmp.name)
    else:
        root = args.workdir
        root.mkdir(parents=True, exist_ok=True)
    try:
        bench = Bench(args, root)
        for name in SCENARIOS:
            if name in args.scenario:
                if name == "cold2x":
                    bench.cold(factor=2.0, scenario="cold2x")
                else:
                    getattr(bench, name)()
        print()
        print(table(bench.rows))
        print(f"\nbenchmark wall: {time.monotonic() - t0:.0f}s", flush=True)
        if args.json_out:
            args.json_out.write_text(json.dumps(bench.rows, indent=1, sort_keys=True))
        if args.markdown_out:
            args.markdown_out.write_text(table(bench.rows, markdown=True) + "\n")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
