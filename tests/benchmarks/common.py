"""What both benchmark drivers (``run``: the compressed-time suite, ``matrix``: the user's view)
share: running one job or greedy client in a child process, and printing a table.

A child per run makes its peak RSS its own (``worker``). A run that overstays its deadline is
asked to stop with SIGTERM (the job then writes its partial run report, as in production) and
killed only if it ignores that; the row is then marked unfinished.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
#: After SIGTERM, how long a child may take to write its report before it is killed.
GRACE_S = 30.0


def run_child(
    spec: dict[str, Any], work: Path, timeout_s: float | None = None, check: bool = True
) -> dict[str, Any]:
    """Run ``tests.benchmarks.worker`` on ``spec``; its JSON line, plus ``timed_out``.

    A child that crashes raises, unless ``check`` is False: then the result carries ``error``
    (the end of its stderr), so one broken run does not cost the rest of a long matrix.
    """
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"spec-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(spec))
    # the job must see only what the spec says: no RECCOBEATS_* from the caller's shell
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECCOBEATS_")}
    env["PYTHONPATH"] = str(REPO)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.benchmarks.worker", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    elapsed = time.monotonic() - t0
    lines = [ln for ln in (out or "").strip().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 and not (timed_out and lines):
        failed = {"timed_out": timed_out, "finished": False, "wall_s": elapsed, "peak_rss_mb": 0.0}
        if timed_out:
            return failed
        if not check:
            return {**failed, "error": (err or "").strip().splitlines()[-1:] or ["?"]}
        raise RuntimeError(f"benchmark child failed ({proc.returncode}):\n{err[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["timed_out"] = timed_out
    result.setdefault("process_wall_s", elapsed)
    return result


Column = tuple[str, str, str]  # row key, heading, format


def format_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[Column],
    cell_value: Callable[[dict[str, Any], str], Any] = lambda row, key: row.get(key),
    markdown: bool = False,
) -> str:
    """A right-aligned text table (or Markdown); ``None`` shows as ``-``."""

    def cell(row: dict[str, Any], key: str, fmt: str) -> str:
        v = cell_value(row, key)
        if v is None:
            return "-"
        text = fmt.format(v)
        if key == "wall_s" and row.get("error"):
            return text + "!"
        return text + ("*" if key == "wall_s" and not row.get("finished", True) else "")

    head = [h for _, h, _ in columns]
    body = [[cell(r, k, f) for k, _, f in columns] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("-|-".join("-" * w for w in widths))
    lines += [" | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    if markdown:
        lines = [f"| {line} |" for line in lines]
        lines[1] = lines[1].replace(" ", "-")
    return "\n".join(lines)
