"""The benchmark matrix: our job AS A USER RUNS IT vs the greedy 5-thread client, side by side.

    python -m tests.benchmarks.matrix                 # every case (~15-20 min on 2 cores)
    python -m tests.benchmarks.matrix --quick         # the same cases, half the size (~3-6 min)
    python -m tests.benchmarks.matrix --cases slow slow-told-2x
    python -m tests.benchmarks.matrix --set max_concurrency=16   # + a tuned row beside each
    python -m tests.benchmarks.matrix --night2        # + night 2 of ours: warm, new tracks
    python -m tests.benchmarks.matrix --sweep --oracle  # + a client that knew the server

Our job is the real CLI, ``reccobeats-etl run --input .. --base-url URL --rate-limit R``, and
nothing else: every other setting is its default (no ``RECCOBEATS_*`` variable reaches it).
``--set KEY=VALUE`` (repeatable) adds a second row per case with those settings in a TOML
``--config`` file; the default row is always printed beside it, so no tuned figure stands alone.

Time is NOT compressed: the server's window is the real minute, so the job's defaults (quiet
periods, backoff, Retry-After cap) mean what they mean in production. Each server model gets
its own fresh simulator (``pipeline/simulator``, loopback):

* ``budget``      -- R/min in any sliding minute + a burst cap per second, 20-40 ms latency
* ``spacing``     -- one start per 60/R s, no burst
* ``block``       -- budget, and the 3rd 429 within a minute blocks everything for 30 s
* ``concurrency`` -- budget + lognormal latency (median L) + 429 above K concurrent requests
* ``slow``        -- budget + lognormal latency (median L) + a server that works on at most K
  requests at once (the rest queue)
* ``*-told-2x``   -- the same servers, our job told twice the real rate (an unknown limit)

Figures per row: requests vs the minimum C (``workload.min_calls``), 429s (counted by the
SERVER), wall vs C/R and vs the floor ``max(C/R, C x L/K)`` for latency-bound servers, peak
in-flight requests (server-side), the server's median latency loaded (queue wait + service)
vs unloaded (service alone), peak RSS of the run's process, and wall ours / wall greedy on the
same server; on night 2, the ETA its ``--dry-run`` printed just before. ``--oracle`` adds,
on each latency-bound server, our job holding the in-flight count a client that knew R, L
and K would pick (``controller_model.oracle_limit``, uncapped), and ours / oracle beside
it. A row marked ``*`` hit its deadline (``--deadline`` x floor) and was stopped with
SIGTERM: its wall is a lower bound.

Mapping to production latencies: what a client must do depends on Little's law, the
in-flight need R x L, and on K; all durations then scale together. A case (R, L, K) here
behaves like production (R', L', K) with R x L = R' x L', every time multiplied by L'/L. The
``slow`` case (5/s, L = 2 s, K = 16: 10 in flight needed) is production at L' = 30 s and
R' = 20/min; the ``concurrency`` case (5/s, L = 1 s, K = 4) is L' = 20-70 s at 15-4.3/min.
``--sweep`` adds (L, K) = (0.05, 2), (0.5, 2), (1, 4), (2, 4), (2, 64), (5, 16), (5, 64):
R x L from 0.25 to 25 in flight, K below it (the floor is C x L/K) and above it (C/R), i.e.
production L' = 20-70 s at rates of 0.2-75/min.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.settings import MAX_CONCURRENCY
from pipeline.simulator import SimulatorServer
from tests.benchmarks.common import REPO, format_table, run_child
from tests.benchmarks.controller_model import oracle_limit
from tests.benchmarks.servers import RUN_DATE, Case, cases
from tests.benchmarks.workload import catalog, min_calls, synthetic_ids, workload

# -- runs ------------------------------------------------------------------------------------


class Matrix:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        ids = synthetic_ids()[: args.n]
        wl = workload(ids)
        self.input = wl.write(root / "inputs" / f"n{args.n}.parquet")
        self.need = min_calls(wl.rows)
        self.c_min = sum(self.need.values())
        # --night2: the next night's tracks, all new (same size, the next playlists)
        nxt = workload(synthetic_ids()[args.n : 2 * args.n], first_playlist=len(wl.rows))
        self.input2 = nxt.write(root / "inputs" / f"n{args.n}-night2.parquet")
        self.need2 = min_calls(nxt.rows)
        self.rows: list[dict[str, Any]] = []
        self.draw: int | None = None  # --draws: the latency seed of the runs now going

    def work(self, case: Case, client: str) -> Path:
        draw = "" if self.draw is None else f"-draw{self.draw}"
        return self.root / f"{case.name}{draw}" / client

    def emit(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        print(
            f"# {row['case']:<15} {row['client']:<8} wall {row['wall_s']:7.1f}s "
            f"req {row['requests']:4d} 429 {row['status_429']:3d}",
            file=sys.stderr,
            flush=True,
        )

    def deadline(self, case: Case) -> float:
        stages = 3 * case.server.unloaded_latency_s
        return self.args.deadline * case.server.floor_s(self.c_min) + stages + 15.0

    def ours(
        self,
        case: Case,
        tuned: dict[str, Any] | None,
        night: int = 1,
        label: str | None = None,
    ) -> dict[str, Any]:
        """Our job on a fresh server. Night 2: new tracks, in the state dir night 1 left (the
        learned rate and in-flight limit: what a nightly user gets from the second night).
        ``label``: the row's client and run dir instead of ours / ours+set."""
        work = self.work(case, label or ("tuned" if tuned else "default"))
        if night == 1:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
        told = case.server.rate_per_min * case.told_factor
        out = work / "output"
        source = self.input if night == 1 else self.input2
        with SimulatorServer(case.server.config()) as sim:
            argv = ["run", "--input", str(source), "--output", str(out)]
            argv += ["--state-dir", str(work / "state"), "--date", RUN_DATE]
            argv += ["--base-url", sim.url, "--rate-limit", f"{told:g}", "--no-progress", "-q"]
            if tuned:
                toml = work / "tuned.toml"
                toml.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in tuned.items()))
                argv += ["--config", str(toml)]
            eta = dry_run_eta(argv) if night > 1 else None  # what the plan promised
            spec = {"kind": "cli", "argv": argv, "output_dir": str(out)}
            child = run_child(spec, work, timeout_s=self.deadline(case), check=False)
            server = sim.counters()
        report = None
        if child.get("report_path"):
            report = json.loads(Path(child["report_path"]).read_text())
        client = (label or ("ours+set" if tuned else "ours")) + ("" if night == 1 else f" n{night}")
        need = self.need if night == 1 else self.need2
        row = self.row(case, client, server, child, report, need)
        row["told_per_min"] = told
        row["dry_run_eta_s"] = eta
        row["settings"] = "defaults + --rate-limit --base-url" + (
            "".join(f" {k}={v}" for k, v in tuned.items()) if tuned else ""
        )
        return row

    def oracle(self, case: Case) -> dict[str, Any]:
        """Our job knowing the server in advance: a fixed in-flight count (``oracle_limit``:
        what R x L needs, at most K, uncapped) from the first request, on the same draws.

        Why: at C = 130 the floor is not reachable on every server (at L = 5 s the last
        answers' tail is a latency of a run ~5 latencies long), and the controller model's
        oracle is a model. This row shows, in the same run, what part of ours / floor is
        learning the server and what part no client can avoid; it also found two places the
        runner left a slot empty (docs/decisions.md, "Two chunks ready")."""
        srv = case.server
        n = oracle_limit(srv.latency_median_s, srv.k, MAX_CONCURRENCY, srv.rate_per_s)
        fixed = {"adaptive_concurrency": False, "max_concurrency": n}
        return self.ours(case, fixed, label="oracle")

    def greedy(self, case: Case) -> dict[str, Any]:
        work = self.work(case, "greedy")
        with SimulatorServer(case.server.config()) as sim:
            spec = {
                "kind": "greedy",
                "base_url": sim.url,
                "input": str(self.input),
                "deadline_s": self.deadline(case),
            }
            child = run_child(spec, work, timeout_s=self.deadline(case) + 60, check=False)
            server = sim.counters()
        row = self.row(case, "greedy", server, child, None, self.need)
        row["told_per_min"] = None
        row["settings"] = "5 threads, sleeps Retry-After"
        return row

    def row(
        self,
        case: Case,
        client: str,
        server: dict[str, Any],
        child: dict[str, Any],
        report: dict[str, Any] | None,
        need: dict[str, int],
    ) -> dict[str, Any]:
        srv = case.server
        c = sum(need.values())
        requests = int(server["requests_total"])
        n429 = int(server["rejected_429"])
        if report is not None:
            wall = float(report["timing"]["wall_s"])
        else:
            wall = float(child.get("wall_s") or child.get("process_wall_s") or 0.0)
        finished = bool(child.get("finished", True)) and not child.get("timed_out")
        if report is not None and child.get("exit_code") not in (0, None):
            finished = finished and child.get("exit_code") == 0
        lat = server.get("latency", {})
        loaded, unloaded = lat.get("median_s"), lat.get("service_median_s")
        c_over_r = c / srv.rate_per_s
        floor = srv.floor_s(c)
        row: dict[str, Any] = {
            "case": case.name,
            "server": srv.describe(),
            "client": client,
            "n": self.args.n,
            "c_min": c,
            "c_min_by_endpoint": need,
            "requests": requests,
            "requests_over_c": round(requests / c, 3),
            "status_429": n429,
            "pct_429": round(100.0 * n429 / requests, 2) if requests else 0.0,
            "rejected_by_limit": server.get("rejected_by_limit", {}),
            "blocks": int(server.get("blocks_started", 0)),
            "wall_s": round(wall, 2),
            "c_over_r_s": round(c_over_r, 2),
            "floor_s": round(floor, 2),
            "floor_kind": "C/R" if math.isclose(floor, c_over_r) else "C*L/K",
            "wall_over_c_r": round(wall / c_over_r, 3),
            "wall_over_floor": round(wall / floor, 3),
            "peak_in_flight": int(server.get("peak_in_flight", 0)),
            "peak_working": server.get("capacity", {}).get("peak_working"),
            "peak_queued": server.get("capacity", {}).get("peak_queued"),
            "server_latency_loaded_median_s": loaded,
            "server_latency_unloaded_median_s": unloaded,
            "loaded_over_unloaded": round(loaded / unloaded, 3) if loaded and unloaded else None,
            "queue_wait_median_s": lat.get("queue_wait_median_s"),
            "peak_rss_mb": round(float(child.get("peak_rss_mb") or 0.0), 1),
            "finished": finished,
            "timed_out": bool(child.get("timed_out")),
        }
        if self.draw is not None:
            row["draw"] = self.draw
        if child.get("error"):  # crashed: no figure of it means anything
            row["error"] = child["error"]
            row["wall_over_c_r"] = row["wall_over_floor"] = None
        if report is not None:
            req = report["requests"]
            row["exit_code"] = child.get("exit_code")
            row["client_peak_in_flight"] = req.get("peak_in_flight")
            row["report_requests"] = int(req["total_attempts"])
            row["report_429"] = int(req["status_429"])
            row["report_agrees"] = (row["report_requests"], row["report_429"]) == (requests, n429)
            row["failed_ids"] = int(report["ids"].get("failed", 0))
            row["report_path"] = child["report_path"]
        return row

    def ratios(self) -> None:
        """ours / greedy wall on the same server (greedy ran once per distinct server), and
        ours / oracle on the same case (same tracks: night 1 only)."""
        greedy = {(r["server"], r.get("draw")): r for r in self.rows if r["client"] == "greedy"}
        oracle = {(r["case"], r.get("draw")): r for r in self.rows if r["client"] == "oracle"}
        for r in self.rows:
            if r["client"] in ("greedy", "oracle") or r["client"].endswith(" n2") or r.get("error"):
                continue  # night 2 has other tracks
            g = greedy.get((r["server"], r.get("draw")))
            o = oracle.get((r["case"], r.get("draw")))
            if g and g["wall_s"]:
                r["ours_over_greedy"] = round(r["wall_s"] / g["wall_s"], 3)
            if o and o["wall_s"] and not o.get("error"):
                r["ours_over_oracle"] = round(r["wall_s"] / o["wall_s"], 3)


def draws(case: Case, args: argparse.Namespace) -> list[Case]:
    """The case on each of ``--draws`` latency draws: the one given (``--latency-seed``, or
    the catalog seed's), then the next seeds. A server without lognormal latency runs once:
    its 20-40 ms jitter does not move a rate-bound run."""
    if args.draws < 2 or not case.server.latency_median_s:
        return [case]
    first = case.server.latency_seed
    seeds = [first] + [(first or 0) + i for i in range(1, args.draws)]
    return [replace(case, server=replace(case.server, latency_seed=s)) for s in seeds]


def dry_run_eta(argv: list[str]) -> float | None:
    """The ETA ``run --dry-run`` prints for these arguments (no request; nothing written)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECCOBEATS_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", *argv, "--dry-run"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
    )
    found = re.search(r"ETA at .*: ~([0-9.]+) s", proc.stdout)
    return float(found.group(1)) if found else None


# -- output ----------------------------------------------------------------------------------

COLUMNS = (
    ("case", "case", "{}"),
    ("client", "client", "{}"),
    ("told_per_min", "told/min", "{:g}"),
    ("c_min", "C", "{}"),
    ("requests", "req", "{}"),
    ("requests_over_c", "req/C", "{:.2f}"),
    ("status_429", "429", "{}"),
    ("pct_429", "429 %", "{:.1f}"),
    ("wall_s", "wall s", "{:.1f}"),
    ("c_over_r_s", "C/R s", "{:.1f}"),
    ("floor_s", "floor s", "{:.1f}"),
    ("wall_over_c_r", "wall/(C/R)", "{:.2f}"),
    ("wall_over_floor", "wall/floor", "{:.2f}"),
    ("peak_in_flight", "peak infl", "{}"),
    ("server_latency_unloaded_median_s", "srv med s idle", "{:.3f}"),
    ("server_latency_loaded_median_s", "srv med s load", "{:.3f}"),
    ("loaded_over_unloaded", "load/idle", "{:.2f}"),
    ("peak_rss_mb", "RSS MB", "{:.0f}"),
    ("dry_run_eta_s", "ETA s", "{:.1f}"),
    ("ours_over_greedy", "ours/greedy", "{:.2f}"),
    ("ours_over_oracle", "ours/oracle", "{:.2f}"),
)


def table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    return format_table(rows, COLUMNS, markdown=markdown)


def summary(rows: list[dict[str, Any]]) -> str:
    """Per case and client over ``--draws``: median (lowest-highest) of the ratios, because
    one draw of lognormal latencies is one sample: the same case took 1.18 and 1.41 x the
    floor on two nights of one run (2026-12-04)."""

    def spread(values: list[float]) -> str:
        if not values:
            return "-"
        return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"

    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["case"], r["client"]), []).append(r)
    out = []
    for (case, client), rs in groups.items():
        if len(rs) < 2:
            continue
        ok = [r for r in rs if not r.get("error")]
        out.append(
            {
                "case": case,
                "client": client,
                "draws": len(rs),
                "wall_over_floor": spread([r["wall_over_floor"] for r in ok]),
                "loaded_over_unloaded": spread(
                    [r["loaded_over_unloaded"] for r in ok if r["loaded_over_unloaded"]]
                ),
                "status_429": sum(r["status_429"] for r in rs),
                "ours_over_oracle": spread(
                    [r["ours_over_oracle"] for r in ok if "ours_over_oracle" in r]
                ),
                "ours_over_greedy": spread(
                    [r["ours_over_greedy"] for r in ok if "ours_over_greedy" in r]
                ),
            }
        )
    columns = (
        ("case", "case", "{}"),
        ("client", "client", "{}"),
        ("draws", "draws", "{}"),
        ("wall_over_floor", "wall/floor med (range)", "{}"),
        ("loaded_over_unloaded", "load/idle med (range)", "{}"),
        ("status_429", "429 total", "{}"),
        ("ours_over_oracle", "ours/oracle med (range)", "{}"),
        ("ours_over_greedy", "ours/greedy med (range)", "{}"),
    )
    return format_table(out, columns) if out else ""


def servers_legend(rows: list[dict[str, Any]]) -> str:
    seen: dict[str, str] = {}
    for r in rows:
        seen.setdefault(r["case"], r["server"])
    return "\n".join(f"  {case:<15} {server}" for case, server in seen.items())


def git_state() -> str:
    def git(*a: str) -> str:
        proc = subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, check=False)
        return proc.stdout.strip()

    dirty = git("status", "--short")
    n = len(dirty.splitlines()) if dirty else 0
    return f"git HEAD {git('rev-parse', '--short', 'HEAD')}, {n} changed/untracked paths"


def _parse_set(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--set wants KEY=VALUE, not {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.matrix",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="2x rate, L/2, n/2: the same ratios")
    p.add_argument("--cases", nargs="+", metavar="NAME", help="only these cases")
    p.add_argument("--sweep", action="store_true", help="add the L x K latency sweep")
    p.add_argument("--n", type=int, help="distinct tracks (default 2000; quick 1000)")
    p.add_argument("--no-greedy", dest="greedy", action="store_false")
    p.add_argument(
        "--oracle",
        action="store_true",
        help="+ on each latency-bound server told its rate, our job holding a fixed in-flight "
        "count chosen knowing R, L and K: what any client could reach",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--night2",
        action="store_true",
        help="after each of our runs, a second night: new tracks, the state night 1 left",
    )
    p.add_argument(
        "--deadline", type=float, help="stop a run after this x its floor (default 6; quick 3)"
    )
    p.add_argument(
        "--latency-seed",
        type=int,
        help="other lognormal latency draws (same tracks): one matrix run is one draw per case",
    )
    p.add_argument(
        "--draws",
        type=int,
        default=1,
        help="run each latency-bound case on this many latency draws (the default or "
        "--latency-seed, then the next seeds) and print the median and range per case",
    )
    p.add_argument("--workdir", type=Path, help="keep run dirs here (default: a temp dir)")
    p.add_argument("--json-out", type=Path, help="also write the rows as a JSON list here")
    p.add_argument("--markdown-out", type=Path, help="also write the table as Markdown here")
    args = p.parse_args(argv)
    args.n = args.n or (1000 if args.quick else 2000)
    args.deadline = args.deadline or (3.0 if args.quick else 6.0)
    args.tuned = _parse_set(args.set)
    all_cases = cases(args.quick, args.sweep)
    names = [c.name for c in all_cases]
    unknown = sorted(set(args.cases or ()) - set(names))
    if unknown:
        p.error(f"unknown case(s) {unknown}; known: {names}")
    args.selected = [c for c in all_cases if not args.cases or c.name in args.cases]
    if args.latency_seed is not None:
        args.selected = [
            replace(c, server=replace(c.server, latency_seed=args.latency_seed))
            for c in args.selected
        ]
    if args.cases:  # a selection keeps its greedy baseline even if its twin is not selected
        args.selected = [
            replace(c, greedy=True) if c.told_factor == 1.0 else c for c in args.selected
        ]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    catalog()  # build once, before the clock matters
    t0 = time.monotonic()
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="reccobeats-matrix-")
        root = Path(tmp.name)
    else:
        root = args.workdir
        root.mkdir(parents=True, exist_ok=True)
    try:
        m = Matrix(args, root)
        print(f"# {git_state()}; n={args.n} C={m.c_min} {m.need}", flush=True)
        for case in (d for c in args.selected for d in draws(c, args)):
            m.draw = case.server.latency_seed if args.draws > 1 else None
            m.emit(m.ours(case, None))
            if args.night2:
                m.emit(m.ours(case, None, night=2))
            if args.tuned:
                m.emit(m.ours(case, args.tuned))
                if args.night2:
                    m.emit(m.ours(case, args.tuned, night=2))
            if args.oracle and case.server.latency_median_s and case.told_factor == 1.0:
                m.emit(m.oracle(case))
            if args.greedy and case.greedy:
                m.emit(m.greedy(case))
        m.ratios()
        for row in m.rows:
            print(json.dumps(row, sort_keys=True))
        print()
        print(table(m.rows))
        if args.draws > 1:
            print(f"\nover {args.draws} latency draws:\n" + summary(m.rows))
        print("\nservers:\n" + servers_legend(m.rows))
        print("* = stopped at its deadline (wall is a lower bound); ! = the run crashed (error)")
        print(f"\nmatrix wall: {time.monotonic() - t0:.0f}s", flush=True)
        if args.json_out:
            args.json_out.write_text(json.dumps(m.rows, indent=1, sort_keys=True))
        if args.markdown_out:
            args.markdown_out.write_text(table(m.rows, markdown=True) + "\n")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
