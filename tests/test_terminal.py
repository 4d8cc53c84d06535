"""Issue 12: the screen a user sees in a real terminal (tmux), with bars and warnings.

Before: every warning split a bar line (``... 3.82chunk/s]2`` / ``026-12-01 21:35:08,670
WARNING ...``) and left a frozen copy behind, and bars closed at 81 %. Now log lines go
through ``tqdm.write`` above the bars, every stage's bar ends as one finished line at 100 %,
and a ``requests`` line counts requests done against the plan. The run here is against a
simulator answering 15 % of requests with 5xx, so warnings arrive while the bars move.
tmux renders the terminal; ``capture-pane`` gives the screen as a user sees it.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipeline.simulator import SimulatorConfig, SimulatorServer
from tests.conftest import REPO, SAMPLE_INPUT, fast_config_toml

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (make tmux)"),
]

STAMP = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z"
BARS = ("requests", "resolve IDs", "audio features", "recommendations")


def tmux_screen(tmp_path: Path, command: str, timeout_s: float = 120.0) -> str:
    """Run ``command`` in a detached 120x40 tmux session; the whole screen once it ended."""
    sock = str(tmp_path / "tmux.sock")
    done = tmp_path / "done"
    script = f"{command}; echo exit=$? > {shlex.quote(str(done))}; sleep 600"
    tmux = ["tmux", "-S", sock]
    subprocess.run(
        [*tmux, "new-session", "-d", "-x", "120", "-y", "40", "bash", "-c", script], check=True
    )
    try:
        finished = threading.Event()
        waited = 0.0
        while not finished.wait(0.1):
            waited += 0.1
            if done.exists() or waited > timeout_s:
                finished.set()
        assert done.exists(), "the command did not finish in time"
        return subprocess.run(
            [*tmux, "capture-pane", "-p", "-J", "-S", "-", "-E", "-"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)


def test_bars_finished_lines_and_warnings_in_a_real_terminal(tmp_path: Path) -> None:
    flaky = SimulatorConfig(rate_per_window=100_000, burst=0, error_rate=0.15, seed=3)
    with SimulatorServer(flaky) as sim:
        cfg = fast_config_toml(tmp_path / "fast.toml", max_concurrency=2)
        cmd = [
            sys.executable, "-m", "pipeline", "run",
            "--input", str(SAMPLE_INPUT), "--output", str(tmp_path / "out"),
            "--state-dir", str(tmp_path / "state"), "--base-url", sim.url,
            "--date", "2025-03-01", "--config", str(cfg), "--rate-limit", "900",
        ]  # fmt: skip
        screen = tmux_screen(tmp_path, f"cd {shlex.quote(str(REPO))} && {shlex.join(cmd)}")
    lines = [line.rstrip() for line in screen.splitlines() if line.strip()]
    (tmp_path / "screen.txt").write_text(screen)
    assert "exit=" not in screen  # the marker went to a file, not the screen
    warnings = [line for line in lines if " WARNING " in line]
    assert warnings, screen  # the 5xx answers were logged while the bars ran
    # No line split by a log record: a timestamp only ever starts a line.
    assert not [line for line in lines if re.search(".+" + STAMP, line)], screen
    assert all(re.match(STAMP, line) for line in warnings), screen
    for name in BARS:
        bar_lines = [line for line in lines if re.match(rf"{name} *: ", line)]
        assert len(bar_lines) == 1, (name, screen)  # no frozen copies left behind
        assert "100%" in bar_lines[0], bar_lines[0]
    summary = [line for line in lines if " status=ok" in line]
    assert len(summary) == 1 and lines.index(summary[0]) > lines.index(bar_lines[0]), screen
