"""The run report: one JSON file per run plus a short human summary.

The figures are the ones a user tunes with (design.md section 6): requests per endpoint,
429s and cool-down, cache/registry hit rates, latency, peak in-flight, and the wall time
against the floor ``C / R`` that the rate limit imposes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.settings import Settings
from pipeline.state.statedir import atomic_write_json


def endpoint_rate_per_s(
    settings: Settings, endpoint: str, global_rate: float | None = None
) -> float:
    """The highest steady rate (req/s) the configured limits allow on ``endpoint``.

    Rates are per minute whatever ``window_s`` is (the limiter scales them to the window).
    """
    limits = [(global_rate or settings.rate_limit) / 60.0]
    if settings.min_interval_s > 0:
        limits.append(1.0 / settings.min_interval_s)
    ep = settings.endpoint_limit(endpoint)
    if ep.rate_per_min is not None:
        limits.append(ep.rate_per_min / 60.0)
    if ep.min_interval_s > 0:
        limits.append(1.0 / ep.min_interval_s)
    return min(limits)


def floor_seconds(calls: Mapping[str, int], settings: Settings) -> float:
    """``sum(C_e / R_e)``: stages run one after another, each at its endpoint's rate."""
    return sum(n / endpoint_rate_per_s(settings, ep) for ep, n in calls.items() if n)


def limit_figures(settings: Settings, limiter: Mapping[str, Any]) -> dict[str, Any]:
    """The configured global limit (and the learned one) in the units a plot needs."""
    max_rate = settings.rate_limit / 60.0
    if settings.min_interval_s > 0:
        max_rate = min(max_rate, 1.0 / settings.min_interval_s)
    window = float(limiter.get("window_s") or settings.window_s)
    learned = limiter.get("effective_rate")
    return {
        "rate_per_min": settings.rate_limit,
        "window_s": settings.window_s,
        "rate_per_window": settings.rate_limit * settings.window_s / 60.0,
        "min_interval_s": settings.min_interval_s,
        "max_rate_per_s": round(max_rate, 6),
        "learned_rate_per_s": round(float(learned) / window, 6) if learned else None,
        "adaptive": settings.adaptive,
    }


def hit_rate(hits: int, misses: int) -> float | None:
    total = hits + misses
    return round(hits / total, 4) if total else None


def build_report(
    *,
    base: Mapping[str, Any],
    settings: Settings,
    metrics: Mapping[str, Any],
    limiter: Mapping[str, Any],
    caches: Mapping[str, tuple[int, int]],
    wall_s: float,
    api_wall_s: float,
) -> dict[str, Any]:
    """Assemble the report dict from the parts each component measured."""
    endpoints = metrics.get("endpoints", {})
    calls_needed = {ep: int(v.get("successes", 0)) for ep, v in endpoints.items()}
    attempts = sum(int(v.get("attempts", 0)) for v in endpoints.values())
    floor = floor_seconds(calls_needed, settings)
    report: dict[str, Any] = dict(base)
    report.update(
        {
            "requests": {
                "total_attempts": attempts,
                "total_needed": sum(calls_needed.values()),
                "by_endpoint": endpoints,
                "status_429": sum(int(v.get("status_429", 0)) for v in endpoints.values()),
                "retries": sum(int(v.get("retries", 0)) for v in endpoints.values()),
                "timeouts": sum(int(v.get("timeouts", 0)) for v in endpoints.values()),
                "latency_s": metrics.get("latency_s", {}),
                "peak_in_flight": metrics.get("peak_in_flight", 0),
            },
            "limiter": dict(limiter),
            "limit": limit_figures(settings, limiter),
            "cache": {
                name: {"hits": h, "misses": m, "hit_rate": hit_rate(h, m)}
                for name, (h, m) in caches.items()
            },
            "timing": {
                "wall_s": round(wall_s, 3),
                "api_wall_s": round(api_wall_s, 3),
                "floor_s": round(floor, 3),
                "wall_over_floor": round(api_wall_s / floor, 3) if floor else None,
                "effective_rate_per_min": round(attempts / api_wall_s * 60, 2)
                if api_wall_s > 0 and attempts
                else 0.0,
                "configured_rate_per_min": settings.rate_limit,
            },
        }
    )
    return report


def write_report(report: Mapping[str, Any], output_dir: Path) -> Path:
    path = output_dir / "runs" / f"{report['run_id']}.json"
    atomic_write_json(dict(report), path)
    return path


def _fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _fmt_rate(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def summary_text(report: Mapping[str, Any]) -> str:
    """A few lines for stderr: what happened, and whether it was as fast as it could be."""
    ids = report.get("ids", {})
    req = report.get("requests", {})
    t = report.get("timing", {})
    lat = req.get("latency_s", {}) or {}
    lines = [
        f"run {report.get('run_id')} date={report.get('run_date')} status={report.get('status')}",
        "rows: {valid} valid, {rejects} rejected | IDs: {distinct} distinct, {known} known, "
        "{new} new -> {found} found, {missing} not found, {failed} failed".format(
            valid=report.get("rows", {}).get("valid", 0),
            rejects=report.get("rows", {}).get("rejected", 0),
            **{
                k: ids.get(k, 0) for k in ("distinct", "known", "new", "found", "missing", "failed")
            },
        ),
    ]
    by_ep = req.get("by_endpoint", {})
    if by_ep:
        parts = [
            f"{ep} {v.get('successes', 0)}/{v.get('attempts', 0)}"
            + (f" (429x{v.get('status_429')})" if v.get("status_429") else "")
            for ep, v in sorted(by_ep.items())
        ]
        lines.append("requests ok/attempts: " + ", ".join(parts))
    else:
        lines.append("requests: none (everything was cached)")
    lines.append(
        "429s: {n} | retries: {r} | cool-down: {c:.1f}s | peak in-flight: {p} | "
        "latency p50/p95/max: {p50}/{p95}/{mx} s".format(
            n=req.get("status_429", 0),
            r=req.get("retries", 0),
            c=float(report.get("limiter", {}).get("cooldown_seconds", 0.0) or 0.0),
            p=req.get("peak_in_flight", 0),
            p50=_fmt_s(lat.get("p50")),
            p95=_fmt_s(lat.get("p95")),
            mx=_fmt_s(lat.get("max")),
        )
    )
    caches = report.get("cache", {})
    if caches:
        lines.append(
            "cache hit rates: "
            + ", ".join(f"{k} {_fmt_rate(v.get('hit_rate'))}" for k, v in caches.items())
        )
    floor = t.get("floor_s") or 0.0
    lines.append(
        "wall {w:.1f}s (API stages {a:.1f}s) vs floor C/R {f:.1f}s; effective {e}/min "
        "(configured {c}/min)".format(
            w=t.get("wall_s", 0.0),
            a=t.get("api_wall_s", 0.0),
            f=floor,
            e=t.get("effective_rate_per_min", 0.0),
            c=t.get("configured_rate_per_min"),
        )
    )
    if report.get("report_path"):
        lines.append(f"report: {report['report_path']}")
    return "\n".join(lines)


def load_report(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def ceil_div(a: int, b: int) -> int:
    return math.ceil(a / b) if a else 0
