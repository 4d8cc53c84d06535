"""``report --plot``: a PNG drawn from a real (small) run report, and the limit it draws."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import main as cli_main
from pipeline.orchestrator import run_job
from pipeline.settings import ENDPOINTS, EndpointLimit, load_settings
from pipeline.simulator import Catalog, SimulatorConfig, SimulatorServer

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run against the simulator: 240 tracks, a tight limit, some 429s (2x too high)."""
    tmp = tmp_path_factory.mktemp("plot")
    ids = list(Catalog.load().all_spotify_ids[:240])
    inp = tmp / "in.parquet"
    pd.DataFrame({"playlist_id": ["p1"] * 120 + ["p2"] * 120, "track_id": ids}).to_parquet(inp)
    sim = SimulatorConfig(rate_per_window=6, window_s=1.0, burst=6, latency_s=0.01)
    with SimulatorServer(sim) as server:
        settings = load_settings(
            {
                "base_url": server.url,
                "input": inp,
                "output_dir": tmp / "out",
                "state_dir": tmp / "state",
                "rate_limit": 720.0,  # 12 per 1 s window: twice the server's limit
                "window_s": 1.0,
                "min_interval_s": 0.0,
                "endpoint_limits": {ep: EndpointLimit() for ep in ENDPOINTS},
                "adaptive": True,
                "adaptive_quiet_s": 0.5,
                "backoff_base_s": 0.05,
                "progress": False,
            }
        )
        report = run_job(settings, date(2025, 6, 1), progress=False)
    assert report.report_path is not None
    return report.report_path


def test_report_records_the_configured_limit(run_json: Path) -> None:
    report = json.loads(run_json.read_text())
    limit = report["limit"]
    assert limit["rate_per_min"] == 720.0
    assert limit["window_s"] == 1.0
    assert limit["max_rate_per_s"] == pytest.approx(12.0)
    assert limit["learned_rate_per_s"] <= limit["max_rate_per_s"]
    assert report["timeline"], "the plot draws the timeline"


def test_plot_writes_a_png(run_json: Path, tmp_path: Path) -> None:
    from pipeline.io.plot import limit_lines, plot_report

    report = json.loads(run_json.read_text())
    out = plot_report(report, tmp_path / "sub" / "run.png")
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000  # something was drawn
    assert limit_lines(report)["configured"] == pytest.approx(12.0)


def test_cli_report_plot(run_json: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    png = tmp_path / "cli.png"
    assert cli_main(["report", str(run_json), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert "plot:" in capsys.readouterr().out


def test_plot_of_a_run_without_requests(tmp_path: Path) -> None:
    from pipeline.io.plot import plot_report

    report = {"run_id": "warm", "timeline": [], "timing": {"configured_rate_per_min": 60}}
    assert plot_report(report, tmp_path / "w.png").read_bytes()[:8] == PNG_MAGIC
