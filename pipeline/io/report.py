"""The run report: ``RunReport`` (what ``run_job`` returns), its JSON file per run
(``<output>/runs/<run_id>.json``, local or on object storage) and a short human summary.

One module for the report's shape, building, writing and formatting, so a field is added in
one place. The figures are the ones a user tunes with (design.md section 6): requests per
endpoint, 429s and cool-down, cache/registry hit rates, latency, peak in-flight, the wall
time against the floor ``C / R`` that the rate limit imposes, and, when state or outputs
live on object storage, the list/get/put/delete/head operations per root.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from pipeline.config import limiter_config
from pipeline.io.atomic import atomic_write_json, json_bytes
from pipeline.io.run_schema import SCHEMA_VERSION
from pipeline.io.run_schema import load_report as _load_validated
from pipeline.io.storage import KINDS as OP_KINDS
from pipeline.io.storage import LocalStorage, Storage
from pipeline.settings import MAX_CONCURRENCY, EndpointLimit, Settings


@dataclass
class RunReport:
    """What a run did; ``figures`` is the JSON written to ``<output>/runs/<run_id>.json``."""

    run_id: str
    run_date: date
    status: str  # ok | partial | dry_run
    exit_code: int
    report_path: Path | str | None  # a URI when the output is on object storage
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.figures)

    def summary(self) -> str:
        return summary_text(self.figures)


def endpoint_rate_per_s(
    settings: Settings, endpoint: str, global_rate: float | None = None
) -> float:
    """The highest steady rate (req/s) the configured limits allow on ``endpoint``.

    Rates are per minute whatever ``window_s`` is (the limiter scales them to the window).
    The limits are the limiter's (``limiter_config``: the told-rate rule applies).
    """
    config = limiter_config(settings)
    limits = [(global_rate or settings.rate_limit) / 60.0]
    if config.min_interval_s > 0:
        limits.append(1.0 / (config.min_interval_s + config.margin_s))
    ep = config.endpoint_limits.get(endpoint, EndpointLimit())
    if ep.rate_per_min is not None:
        limits.append(ep.rate_per_min / 60.0)
    if ep.min_interval_s > 0:
        limits.append(1.0 / ep.min_interval_s)
    return min(limits)


def floor_seconds(
    calls: Mapping[str, int], settings: Settings, global_rate: float | None = None
) -> float:
    """``sum(C_e / R_e)``: each endpoint's calls at the rate its limits allow.

    ``global_rate`` (per minute) stands for the configured one, e.g. a lower learned rate.
    """
    return sum(n / endpoint_rate_per_s(settings, ep, global_rate) for ep, n in calls.items() if n)


def limit_figures(settings: Settings, limiter: Mapping[str, Any]) -> dict[str, Any]:
    """The configured global limit (and the learned one) in the units a plot needs."""
    gap = limiter_config(settings).min_interval_s
    max_rate = settings.rate_limit / 60.0
    if gap > 0:
        max_rate = min(max_rate, 1.0 / gap)
    window = float(limiter.get("window_s") or settings.window_s)
    learned = limiter.get("effective_rate")
    return {
        "rate_per_min": settings.rate_limit,
        "window_s": settings.window_s,
        "rate_per_window": settings.rate_limit * settings.window_s / 60.0,
        "min_interval_s": gap,
        "max_rate_per_s": round(max_rate, 6),
        "learned_rate_per_s": round(float(learned) / window, 6) if learned else None,
        "adaptive": settings.adaptive,
    }


def start_rate_per_min(starts: int, span_s: float | None) -> float | None:
    """The rate requests were started at: ``starts - 1`` gaps over the first-to-last span.

    Why not starts over the stages' wall time: N starts spaced 1/R apart span (N - 1)/R, so
    N over that read above R on small runs (4 calls at 60/min showed 77/min), and the wall
    also holds the last answer's latency. ``None`` when fewer than two starts (no gap).
    """
    if starts < 2 or not span_s or span_s <= 0:
        return None
    return round((starts - 1) / span_s * 60.0, 2)


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
    report: dict[str, Any] = {"schema_version": SCHEMA_VERSION, **base}
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
                "effective_rate_per_min": start_rate_per_min(
                    attempts, metrics.get("start_span_s")
                ),
                "configured_rate_per_min": settings.rate_limit,
            },
        }
    )
    return report


def write_report(report: Mapping[str, Any], output_dir: Path | Storage) -> Path | str:
    """Write ``<output>/runs/<run_id>.json`` atomically; returns its path (or URI)."""
    name = f"runs/{report['run_id']}.json"
    if isinstance(output_dir, Storage) and not isinstance(output_dir, LocalStorage):
        output_dir.write_bytes(name, json_bytes(dict(report)))
        return output_dir.uri(name)
    path = (output_dir.path() if isinstance(output_dir, LocalStorage) else output_dir) / name
    atomic_write_json(dict(report), path)
    return path


def object_store_line(report: Mapping[str, Any]) -> str | None:
    """``object store ops (list/get/put/delete/head): state 1/9/5/1/0, output 2/0/6/1/0``,
    or ``None`` when the run kept everything on local disks."""
    ops = report.get("object_store")
    if not ops:
        return None
    parts = [
        f"{root} " + "/".join(str(counts.get(k, 0)) for k in OP_KINDS)
        for root, counts in ops.items()
    ]
    return "object store ops (" + "/".join(OP_KINDS) + "): " + ", ".join(parts)


def _fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _fmt_rate(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def _fmt_per_min(x: float | None) -> str:
    return "n/a" if x is None else f"{x}/min"


def plan_text(report: Mapping[str, Any]) -> str:
    """A dry run's plan: rows, IDs new/known, calls per endpoint, the ETA and, under a
    budget, the runs it takes."""
    ids, plan, rows = report.get("ids", {}), report.get("plan", {}), report.get("rows", {})
    lines = [
        f"plan for {report.get('run_date')}: {rows.get('valid', 0)} valid rows, "
        f"{rows.get('rejected', 0)} rejected; {ids.get('distinct', 0)} distinct IDs: "
        f"{ids.get('known', 0)} known, {ids.get('new', 0)} new"
    ]
    lines += [f"  {ep:<15} at most {n} calls" for ep, n in plan.get("calls_at_most", {}).items()]
    learned = plan.get("learned_rate_per_min")
    basis = (
        f"the learned rate {learned:.4g}/min (429s held the limiter below the configured "
        f"{plan.get('rate_limit_per_min'):g}/min)"
        if learned
        else "the configured limits"
    )
    latency = plan.get("latency_s")
    if latency:
        basis += (
            f" and the last run's latency ({latency:.3g} s at {plan.get('in_flight')} in flight)"
        )
    lines.append(
        f"  ETA at {basis}: ~{plan.get('eta_s')} s (no request was made, nothing was written)"
    )
    budget = budget_line(plan)
    if budget:
        lines.append(budget)
    if plan.get("binding_limit"):
        lines.append(binding_line(plan))
    return "\n".join(lines)


def budget_line(plan: Mapping[str, Any]) -> str | None:
    """``budget: this needs 8 runs of at most 5 calls (--max-requests) for the 40 expected...``

    Why: a user with a budget asks how many nights the backlog takes; the plan computed it
    (``runs_needed``) and printed only the ETA. ``None`` without a budget (one run)."""
    budget = plan.get("budget") or {}
    max_requests, time_budget_s = budget.get("max_requests"), budget.get("time_budget_s")
    if not (max_requests or time_budget_s):
        return None
    calls = sum(int(n) for n in (plan.get("calls_expected") or {}).values())
    each = []
    if max_requests:
        each.append(f"at most {max_requests} calls (--max-requests)")
    if time_budget_s:
        each.append(f"{time_budget_s:g} s (--time-budget)")
    runs = int(plan.get("runs_needed") or 0)
    return (
        f"  budget: this needs {runs} run{'' if runs == 1 else 's'} of {' and '.join(each)} "
        f"for the {calls} expected calls; the first makes ~{plan.get('calls_tonight', 0)}"
    )


def binding_line(figures: Mapping[str, Any]) -> str:
    """``binding limit: global gap (min_interval_s) 0.27 s = 222/min (limits: ...)``."""
    limits = figures.get("limits_per_min") or {}
    others = ", ".join(f"{k} {v:g}/min" for k, v in limits.items())
    return (
        f"  binding limit: {figures.get('binding_limit')} = "
        f"{figures.get('binding_rate_per_min'):g}/min (limits: {others})"
    )


def cap_hint(limiter: Mapping[str, Any]) -> str | None:
    """A line when the in-flight cap, not the rate or the server, held the run back.

    Why: at production latencies (20-140 s) the default cap of 16 allows 7-48 requests/min
    whatever rate was told, and nothing else in the summary says which setting lifts it."""
    cap, limit = limiter.get("concurrency_cap"), limiter.get("concurrency_limit")
    latency, rate = limiter.get("latency_median_s"), limiter.get("effective_rate")
    window = limiter.get("window_s")
    name = str(limiter.get("binding_limit") or "")
    if not (cap and limit == cap and latency and rate and window) or "in flight" not in name:
        return None
    need = math.ceil(rate / window * latency)
    if need <= cap:
        return None
    return (
        f"  hint: the in-flight cap of {cap} held this run back: {rate * 60 / window:g}/min "
        f"at {latency:.3g} s needs ~{need} in flight; --max-concurrency (up to "
        f"{MAX_CONCURRENCY}, or RECCOBEATS_MAX_CONCURRENCY) lifts it, if the API takes that "
        "many at once"
    )


def summary_text(report: Mapping[str, Any]) -> str:
    """A few lines for stderr: what happened, and whether it was as fast as it could be."""
    if report.get("status") == "dry_run":
        return plan_text(report)
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
        "wall {w:.1f}s (API stages {a:.1f}s) vs floor C/R {f:.1f}s; effective {e} "
        "(configured {c}/min)".format(
            w=t.get("wall_s", 0.0),
            a=t.get("api_wall_s", 0.0),
            f=floor,
            e=_fmt_per_min(t.get("effective_rate_per_min")),
            c=t.get("configured_rate_per_min"),
        )
    )
    limiter = report.get("limiter", {})
    if limiter.get("binding_limit"):
        lines.append(binding_line(limiter))
        parallel = limiter.get("server_parallelism")
        lines.append(
            "  in flight: limit {lim} of cap {cap} (adaptive {ad}), latency median {m} s "
            "(unloaded {b} s){k}".format(
                lim=limiter.get("concurrency_limit"),
                cap=limiter.get("concurrency_cap"),
                ad="on" if limiter.get("adaptive_concurrency") else "off",
                m=_fmt_s(limiter.get("latency_median_s")),
                b=_fmt_s(limiter.get("latency_baseline_s")),
                k=f", the server queues above ~{parallel} at once" if parallel else "",
            )
        )
        hint = cap_hint(limiter)
        if hint:
            lines.append(hint)
    store_line = object_store_line(report)
    if store_line:
        lines.append(store_line)
    if report.get("report_path"):
        lines.append(f"report: {report['report_path']}")
    return "\n".join(lines)


def load_report(path: Path) -> dict[str, Any]:
    """The run report at ``path``, validated (``run_schema``): ``InputError`` if it is not one."""
    return _load_validated(path)


def ceil_div(a: int, b: int) -> int:
    return math.ceil(a / b) if a else 0
