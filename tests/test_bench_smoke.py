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
    argv += ["--sizes", "200", "--window", "1.0", "--workdir", str(tmp_path)]
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
