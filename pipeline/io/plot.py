"""``reccobeats-etl report RUN_JSON --plot out.png``: the picture to look at when tuning.

Top: requests started per second over the run (stacked by outcome) against the configured
limit (and the learned one, when adaptive mode lowered it), with every 429 marked, and the
request rate averaged over the limiter's sliding window. Bottom: the latency distribution
with p50/p95. Everything comes from the run report JSON (``timeline``, ``limit``,
``limiter``, ``timing``), so a report from another machine plots the same.

matplotlib is optional (``pip install 'reccobeats-etl[plot]'``); it is imported lazily with
the non-interactive Agg backend, so plotting works on a headless server.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(
            "plotting needs matplotlib: pip install 'reccobeats-etl[plot]' (or matplotlib>=3.8)"
        ) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def limit_lines(report: Mapping[str, Any]) -> dict[str, float]:
    """Requests/s the limit allows: ``configured`` and (if lower) ``learned``; may be empty."""
    lim = report.get("limit") or {}
    out: dict[str, float] = {}
    if lim.get("max_rate_per_s"):
        out["configured"] = float(lim["max_rate_per_s"])
    elif report.get("timing", {}).get("configured_rate_per_min"):
        out["configured"] = float(report["timing"]["configured_rate_per_min"]) / 60.0
    learned = lim.get("learned_rate_per_s")
    if learned and "configured" in out and learned < out["configured"] - 1e-9:
        out["learned"] = float(learned)
    return out


def in_flight_steps(starts: list[float], latencies: list[float]) -> tuple[list[float], list[int]]:
    """Requests in flight over time, from each attempt's start and latency (a step line)."""
    events = sorted(
        [(s, 1) for s in starts] + [(s + lat, -1) for s, lat in zip(starts, latencies, strict=True)]
    )
    xs, ys, n = [0.0], [0], 0
    for t, d in events:
        n += d
        xs.append(t)
        ys.append(n)
    return xs, ys


def _in_flight_panel(
    ax: Any, report: Mapping[str, Any], starts: list[float], latencies: list[float], end: float
) -> None:
    """In flight vs the in-flight limit in force, and latency over time: which bound held.

    In flight at the limit with flat latency: the limit bound (raise max_concurrency). At
    the limit with latency rising: the server is saturated. Below the limit: the rate bound.
    """
    xs, ys = in_flight_steps(starts, latencies)
    ax.step(xs, ys, where="post", color="#4C72B0", lw=1.0, label="in flight")
    limiter = report.get("limiter") or {}
    steps = limiter.get("concurrency_timeline") or []
    if steps:
        lx = [float(t) for t, _ in steps] + [end]
        ly = [int(n) for _, n in steps] + [int(steps[-1][1])]
        ax.step(lx, ly, where="post", color="#2CA02C", ls="--", lw=1.4, label="in-flight limit")
    ax.set_ylabel("requests in flight")
    ax.set_xlim(0, end)
    ax.grid(alpha=0.3)
    twin = ax.twinx()
    if starts:
        twin.plot(starts, latencies, ".", color="#DD8452", ms=2, alpha=0.6, label="latency")
    twin.set_ylabel("latency s (dots, by start)")
    lines, labels = ax.get_legend_handles_labels()
    tl, tlab = twin.get_legend_handles_labels()
    ax.legend(lines + tl, labels + tlab, loc="upper right", fontsize=8)


def plot_report(report: Mapping[str, Any], png_path: Path | str) -> Path:
    """Draw ``report`` (a run report dict) to ``png_path``; returns the path."""
    plt = _pyplot()
    path = Path(png_path)
    timeline = [tuple(e) for e in report.get("timeline") or []]
    starts = [float(e[0]) for e in timeline]
    statuses = [e[2] for e in timeline]
    latencies = [float(e[3]) for e in timeline]
    duration = max([s + lat for s, lat in zip(starts, latencies, strict=True)] or [1.0])
    # 1 s bins (requests per second): narrower bins alias against a steady pace (0.4 s bins
    # at 4 req/s read as alternating 5 and 2.5). Only runs under 5 s get finer bins.
    bin_s = 1.0 if duration >= 5 else max(0.1, round(duration / 10, 1))
    n_bins = max(1, math.ceil(duration / bin_s))
    edges = [i * bin_s for i in range(n_bins + 1)]

    fig, (ax_rate, ax_flight, ax_lat) = plt.subplots(
        3, 1, figsize=(11, 10), gridspec_kw={"height_ratios": [3, 2, 2]}
    )
    _in_flight_panel(ax_flight, report, starts, latencies, duration)
    groups = {
        "2xx": [s for s, st in zip(starts, statuses, strict=True) if st is not None and st < 300],
        "429": [s for s, st in zip(starts, statuses, strict=True) if st == 429],
        "other error": [
            s
            for s, st in zip(starts, statuses, strict=True)
            if st is None or (st >= 300 and st != 429)
        ],
    }
    colors = {"2xx": "#4C72B0", "429": "#C44E52", "other error": "#DD8452"}
    data = [v for v in groups.values()]
    weights = [[1.0 / bin_s] * len(v) for v in data]
    ax_rate.hist(
        data,
        bins=edges,
        weights=weights,
        stacked=True,
        color=[colors[k] for k in groups],
        label=[f"{k} ({len(v)})" for k, v in groups.items()],
        alpha=0.85,
    )
    window = float((report.get("limit") or {}).get("window_s") or 0.0)
    if window and starts:
        # requests started in the trailing window, per second: what the server's window sees
        xs, ys = [], []
        j = 0
        for i, t in enumerate(starts):
            while starts[j] <= t - window:
                j += 1
            xs.append(t)
            ys.append((i - j + 1) / window)
        ax_rate.plot(xs, ys, color="black", lw=1.2, label=f"avg over {window:g}s window")
    for name, value in limit_lines(report).items():
        style = "--" if name == "configured" else ":"
        label = f"{name} limit {value:.2f}/s"
        ax_rate.axhline(value, color="#2CA02C", ls=style, lw=1.6, label=label)
    for t in groups["429"]:
        ax_rate.axvline(t, color=colors["429"], lw=0.6, alpha=0.5)
    if groups["429"]:
        ax_rate.plot(groups["429"], [0] * len(groups["429"]), "v", color=colors["429"], ms=7)
    req = report.get("requests", {})
    t = report.get("timing", {})
    cool = float((report.get("limiter") or {}).get("cooldown_seconds") or 0.0)
    ax_rate.set_title(
        f"run {report.get('run_id', '?')}: {req.get('total_attempts', len(timeline))} requests, "
        f"{req.get('status_429', len(groups['429']))} x 429, cool-down {cool:.1f}s | "
        f"wall {t.get('api_wall_s', 0):.1f}s vs floor C/R {t.get('floor_s', 0):.1f}s",
        fontsize=10,
    )
    ax_rate.set_xlabel("seconds since the first request")
    ax_rate.set_ylabel(f"requests started per second ({bin_s:g}s bins)")
    ax_rate.set_xlim(0, duration)
    ax_rate.legend(loc="upper right", fontsize=8)
    ax_rate.grid(alpha=0.3)

    ok_lat = [lat for lat, st in zip(latencies, statuses, strict=True) if st != 429]
    if ok_lat:
        ax_lat.hist(ok_lat, bins=min(60, max(10, len(ok_lat) // 5)), color="#4C72B0", alpha=0.85)
        srt = sorted(ok_lat)
        for q, style in ((0.5, "--"), (0.95, ":")):
            v = srt[min(len(srt) - 1, int(q * len(srt)))]
            ax_lat.axvline(v, color="black", ls=style, lw=1.2, label=f"p{int(q * 100)} {v:.3f}s")
        ax_lat.legend(loc="upper right", fontsize=8)
    else:
        ax_lat.text(0.5, 0.5, "no requests (everything was cached)", ha="center", va="center")
    ax_lat.set_xlabel("latency per attempt, seconds (429s excluded)")
    ax_lat.set_ylabel("attempts")
    ax_lat.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
