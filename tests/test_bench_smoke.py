"""The benchmark suite at tiny scale, so its code cannot rot: the figures it prints (counted
by the simulator) must equal the run report's (counted by the job)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks import run as bench


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_quick_benchmark_counters_match_the_run_report(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["--scenario", "cold", "--scenario", "warm", "--models", "budget"]
    # A 2 s window, not 1: at 1 s (2 starts per window) the cold run once took a 429 in the
    # full suite, not alone or beside a CPU hog (4 of 4 clean); scheduling jitter is a larger
    # share of a 1 s window. The run report was not kept, so the cause is a guess.
    argv += ["--sizes", "200", "--window", "2.0", "--workdir", str(tmp_path), "--no-defaults-row"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(r["scenario"], r["client"]) for r in rows] == [
        ("cold", "ours"),
        ("cold", "greedy"),
        ("warm", "ours"),
    ]
    assert "wall/(C/R)" in out  # the table
    for row in (r for r in rows if r["client"] == "ours"):
        report = json.loads(Path(row["report_path"]).read_text())
        assert row["requests"] == report["requests"]["total_attempts"] == row["report_requests"]
        assert row["status_429"] == report["requests"]["status_429"] == row["report_429"]
        assert row["failed_ids"] == 0
    cold, greedy, warm = rows
    assert cold["status_429"] == 0
    assert cold["requests"] == cold["c_min"]  # the fewest calls
    assert greedy["requests"] >= greedy["c_min"]
    assert warm["requests"] == 0


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_matrix_runs_the_cli_as_a_user_would_and_prints_the_side_by_side(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tests.benchmarks import matrix

    argv = ["--quick", "--n", "80", "--cases", "concurrency", "--oracle"]
    assert matrix.main([*argv, "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(r["case"], r["client"]) for r in rows] == [
        ("concurrency", "ours"),
        ("concurrency", "oracle"),
        ("concurrency", "greedy"),
    ]
    assert "wall/floor" in out and "ours/greedy" in out and "srv med s load" in out
    ours, oracle, greedy = rows
    assert ours["settings"] == "defaults + --rate-limit --base-url"
    assert ours["told_per_min"] == 600  # what --quick's server admits, told as a user would
    assert ours["report_agrees"] and ours["exit_code"] == 0  # server and report count alike
    assert ours["ours_over_greedy"] == round(ours["wall_s"] / greedy["wall_s"], 3)
    assert ours["ours_over_oracle"] == round(ours["wall_s"] / oracle["wall_s"], 3)
    # the oracle knows the server refuses above 4: it holds 4 from the first request
    assert oracle["settings"].endswith("adaptive_concurrency=False max_concurrency=4")
    limiter = json.loads(Path(oracle["report_path"]).read_text())["limiter"]
    assert not limiter["adaptive_concurrency"] and limiter["concurrency_cap"] == 4
    assert {limit for _, limit in limiter["concurrency_timeline"]} == {4}
    assert oracle["status_429"] == 0 and "ours_over_oracle" not in oracle
    for row in rows:
        assert row["floor_kind"] == "C*L/K"  # 0.5 s x C / K=4 binds before C/R
        assert row["server_latency_unloaded_median_s"] > 0.1  # lognormal, median 0.5 s
        assert row["requests"] >= row["c_min"] and row["peak_in_flight"] <= 5


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_matrix_night2_runs_new_tracks_from_the_state_night_1_left(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tests.benchmarks import matrix

    argv = ["--quick", "--n", "200", "--cases", "slow", "--no-greedy", "--night2"]
    assert matrix.main([*argv, "--workdir", str(tmp_path)]) == 0
    rows = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    assert [r["client"] for r in rows] == ["ours", "ours n2"]
    night1, night2 = rows
    assert night2["requests"] >= night2["c_min"] > 0  # new tracks: nothing was cached
    assert "ours_over_greedy" not in night2
    assert night1["dry_run_eta_s"] is None and night2["dry_run_eta_s"] > 0  # the plan's ETA
    first = json.loads(Path(night1["report_path"]).read_text())["limiter"]
    second = json.loads(Path(night2["report_path"]).read_text())["limiter"]
    # night 2 starts where night 1 ended (learned_rate.json), not at the initial 4
    assert second["concurrency_timeline"][0][1] == first["concurrency_limit"] != 4


def test_matrix_draws_repeat_only_latency_bound_cases_and_summarise_each() -> None:
    from tests.benchmarks import matrix

    args = matrix.parse_args(["--sweep", "--cases", "budget", "L2-K4", "--draws", "3"])
    budget, l2k4 = args.selected
    assert matrix.draws(budget, args) == [budget]  # 20-40 ms jitter: one run says it
    seeds = [c.server.latency_seed for c in matrix.draws(l2k4, args)]
    assert seeds == [None, 1, 2]  # the default draw first, so one-draw figures stay in it
    argv = ["--sweep", "--cases", "L2-K4", "--draws", "2", "--latency-seed", "5"]
    seeded = matrix.parse_args(argv)
    assert [c.server.latency_seed for c in matrix.draws(seeded.selected[0], seeded)] == [5, 6]

    def row(client: str, wall: float, load: float, **extra: float) -> dict:
        fields = {"wall_over_floor": wall, "loaded_over_unloaded": load, "status_429": 1}
        return {"case": "L2-K4", "client": client, **fields, **extra}

    rows = [row("ours", 1.2, 1.1, ours_over_oracle=1.0), row("oracle", 1.2, 1.0)]
    rows += [row("ours", 1.5, 1.3, ours_over_oracle=1.2), row("oracle", 1.25, 1.0)]
    rows += [row("ours", 1.3, 1.2, ours_over_oracle=1.1), row("oracle", 1.3, 1.0)]
    table = [[c.strip() for c in ln.split("|")] for ln in matrix.summary(rows).splitlines()]
    by_client = {cells[1]: cells for cells in table[2:]}
    ours = ["3", "1.30 (1.20-1.50)", "1.20 (1.10-1.30)", "3", "1.10 (1.00-1.20)", "-"]
    assert by_client["ours"][2:] == ours  # draws, wall, load, 429s summed, ours/oracle, greedy
    assert by_client["oracle"][3] == "1.25 (1.20-1.30)"
    assert matrix.summary(rows[:2]) == ""  # one draw: nothing to summarise
