"""The physical floor of each server model: the earliest the last of C calls can start.

* budget (a) / block (c): at most L starts in any window W and at most b in any 1 s, so the
  k-th start is ``t_k = max(t_{k-1}, t_{k-b} + 1, t_{k-L} + W)``: the first L go at the burst
  rate, then one window's budget per W. A client told the limit never trips (c)'s block, so
  (c)'s floor is (a)'s.
* spacing (b): ``t_k = k * W / L``.

``floor_s`` adds one round trip per stage (a stage needs the previous stage's answers), so it
is what a perfect client could reach; ``C / R`` is the issue's headline figure.
"""

from __future__ import annotations

BURST_WINDOW_S = 1.0


def last_start(calls: int, model: str, rate_per_window: int, window_s: float, burst: int) -> float:
    if calls <= 0:
        return 0.0
    if model == "spacing":
        return (calls - 1) * window_s / rate_per_window
    t = 0.0
    history: list[float] = []
    for k in range(calls):
        t = history[-1] if history else 0.0
        if k >= rate_per_window:
            t = max(t, history[k - rate_per_window] + window_s)
        if burst and k >= burst:
            t = max(t, history[k - burst] + BURST_WINDOW_S)
        history.append(t)
    return t


def floor_s(
    calls: int,
    model: str,
    rate_per_window: int,
    window_s: float,
    burst: int,
    round_trip_s: float = 0.0,
    stages: int = 3,
) -> float:
    if calls <= 0:
        return 0.0
    return last_start(calls, model, rate_per_window, window_s, burst) + stages * round_trip_s
