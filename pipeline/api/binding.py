"""Which limit binds: the rate each configured limit allows, and the smallest of them.

Why: a run is held back by the tightest of several limits (the told rate, the global gap,
per-endpoint limits, in-flight requests x latency), and a user who told a rate must see which
one it was (issue 10: a 0.25 s gap silently capped a told 300/min at 229/min). Used by the
limiter's ``stats()`` (with what was learned and observed) and by the dry-run plan (config
only). Every rate here is per minute.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pipeline.config import LimiterConfig


def _gap_rate(gap_s: float, margin_s: float) -> float | None:
    return 60.0 / (gap_s + margin_s) if gap_s > 0 else None


def binding_limit(
    config: LimiterConfig,
    *,
    rate_per_window: float | None = None,
    in_flight_limit: int | None = None,
    latency_s: float | None = None,
    endpoints: Iterable[str] | None = None,
) -> dict[str, Any]:
    """``{"binding_limit": name, "binding_rate_per_min": r, "limits_per_min": {name: r}}``.

    ``rate_per_window``: the rate in force (learned), default the configured ceiling.
    ``in_flight_limit`` and ``latency_s`` (a median): add the in-flight bound limit / latency.
    ``endpoints``: the endpoints whose own limits count (default: all configured).
    """
    per_min = 60.0 / config.window_s
    rate = config.rate_per_window if rate_per_window is None else rate_per_window
    name = "told rate" if config.told_rate else "rate"
    if rate < config.rate_per_window:
        # after 429s (tonight's or last night's): not the rate the user told, say so
        name = f"learned rate (configured {config.rate_per_window * per_min:.4g}/min)"
    limits: dict[str, float] = {name: rate * per_min}
    gap = _gap_rate(config.min_interval_s, config.margin_s)
    if gap is not None:
        spacing = config.min_interval_s + config.margin_s
        # Told a rate and given min_interval_s too, the gap is the setting's, not the rate's:
        # blaming the told rate sent users to --rate-limit, which cannot lift it.
        kind = (
            "spacing at the told rate"
            if config.gap_from_told_rate
            else "global gap (min_interval_s)"
        )
        limits[f"{kind} {spacing:.3g} s"] = gap
    if in_flight_limit is not None and latency_s:
        limits[f"{in_flight_limit} in flight x {latency_s:.3g} s latency"] = (
            in_flight_limit / latency_s * 60.0
        )
    wanted = set(config.endpoint_limits) if endpoints is None else set(endpoints)
    for name in sorted(wanted & set(config.endpoint_limits)):
        lim = config.endpoint_limits[name]
        options = [
            r
            for r in (lim.rate_per_min, _gap_rate(lim.min_interval_s, config.margin_s))
            if r is not None
        ]
        if options:
            limits[f"endpoint {name}"] = min(options)
    name = min(limits, key=lambda k: limits[k])
    return {
        "binding_limit": name,
        "binding_rate_per_min": round(limits[name], 2),
        "limits_per_min": {k: round(v, 2) for k, v in limits.items()},
    }
