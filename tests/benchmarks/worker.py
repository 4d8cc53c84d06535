"""Child process of the benchmark: one job run (or one greedy run), its peak RSS measured alone.

``python -m tests.benchmarks.worker SPEC.json`` prints one JSON line on stdout. A fresh
process per run makes peak RSS (``ru_maxrss``) that run's own, not the benchmark's. Kinds:

* ``job``    -- ``run_job`` with explicit settings overrides (the compressed-time suite);
* ``cli``    -- ``reccobeats-etl run ARGV...`` exactly as a user types it (the matrix), with
  the CLI's own signal handling, so SIGTERM at a deadline still leaves a run report;
* ``greedy`` -- the greedy 5-thread baseline.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from datetime import date
from pathlib import Path


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    logging.basicConfig(level=logging.ERROR)
    t0 = time.monotonic()
    if spec["kind"] == "job":
        from pipeline.orchestrator import run_job
        from pipeline.settings import load_settings

        settings = load_settings(spec["overrides"])
        report = run_job(settings, date.fromisoformat(spec["run_date"]), progress=False)
        out = {"report_path": str(report.report_path), "exit_code": report.exit_code}
    elif spec["kind"] == "cli":
        from pipeline.cli import main as cli_main

        code = cli_main(spec["argv"])
        reports = sorted(
            Path(spec["output_dir"]).glob("runs/*.json"), key=lambda p: p.stat().st_mtime
        )
        out = {"report_path": str(reports[-1]) if reports else None, "exit_code": code}
        out["wall_s"] = time.monotonic() - t0
    else:
        import pandas as pd

        from tests.benchmarks.greedy import run_greedy

        rows = pd.read_parquet(spec["input"])
        res = run_greedy(spec["base_url"], rows, spec["deadline_s"])
        out = {
            "attempts": res.attempts,
            "status_429": res.status_429,
            "wall_s": res.wall_s,
            "finished": res.finished,
            "retry_after_slept_s": res.retry_after_slept_s,
        }
    out["process_wall_s"] = time.monotonic() - t0
    out["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
