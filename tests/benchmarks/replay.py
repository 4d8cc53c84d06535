"""Replay a run report's answers through a fresh in-flight controller, to see why it moved.

    python -m tests.benchmarks.replay output/runs/<run>.json             # limit changes
    python -m tests.benchmarks.replay output/runs/<run>.json --evaluations  # every verdict

Why: a matrix case is one run, and its report keeps only the limit's steps
(``limiter.concurrency_timeline``). Its ``timeline`` keeps every attempt (start, endpoint,
status, latency), which is all the controller was fed: the in-flight count each request was
sent at is the number of attempts under way at its start (itself included). Fed in the order
the answers came back, a fresh ``ConcurrencyController`` goes through the run's limits again
and shows the knee behind each change; a changed controller can then be tried on the same
answers up to where its decisions part from the run's. Found this way (2026-12-04): the
L 2 s / K 4 default draw's 1.75 x night was a probe to 3 undone by 12 lucky answers at 2.

Exact while the rate stays the one the run ended with (the controller's need uses it); a
report whose rate was cut or raised is replayed at its last rate throughout, and says so.
The limiter holds a slot from admit to release, a little longer than an attempt's start to
its end in the timeline: threads that admit within those microseconds of a release, or
other processes sharing a Redis budget, can make the counts differ by one.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.api.concurrency import ConcurrencyController, ConcurrencyRules

#: Two instants closer than this are the same (an answer's end and the start it let go).
_SAME_INSTANT_S = 1e-9


@dataclass(frozen=True, slots=True)
class Answer:
    end_s: float  # when it came back: the order the controller saw it in
    in_flight: int  # attempts under way at its start, itself included
    status: int
    latency_s: float


@dataclass(frozen=True, slots=True)
class Step:
    at_s: float
    before: int
    after: int
    verdict: str  # the knee behind it (k, the range allowed, the top count), or the 429


def answers(timeline: list[Any]) -> list[Answer]:
    """The answers of a report's ``timeline`` (``[start, endpoint, status, latency]``), each
    with the in-flight count at its start, in the order they came back. Attempts without a
    status (transport errors) count as in flight but are not answers."""
    starts = sorted(float(e[0]) for e in timeline)
    # An attempt is under way at t if it started at or before t and ends after t (an answer
    # and the start it let go share an instant: that start does not count the answer).
    ends = sorted(float(e[0]) + float(e[3]) for e in timeline)
    out = []
    for start, _endpoint, status, latency in timeline:
        if status is None:
            continue
        s = float(start)
        under_way = bisect_right(starts, s) - bisect_right(ends, s + _SAME_INSTANT_S)
        out.append(Answer(s + float(latency), under_way, int(status), float(latency)))
    return sorted(out, key=lambda a: a.end_s)


def replay(
    found: list[Answer],
    *,
    rate_per_s: float,
    cap: int,
    initial: int | None = None,
    adaptive: bool = True,
    on_evaluation: Callable[[Answer, ConcurrencyController], None] | None = None,
) -> list[Step]:
    """Feed ``found`` to a fresh controller in the order ``RateLimiter.on_response`` does (a
    clean answer may first refute a blamed 429, then is an answer; a 429 may be blamed) and
    return its limit changes. Not replayed: ``on_rate_429``, which the limiter calls when the
    rate controller cuts the rate for a 429 (it drops a 429's ceiling); ``main`` warns when
    the rate changed."""
    c = ConcurrencyController(ConcurrencyRules(cap=cap, enabled=adaptive), initial)
    steps = []
    for a in found:
        before = c.limit
        knee_before = c.knee
        if a.status == 429:
            c.on_429(a.in_flight)
            why = f"429 at {a.in_flight} in flight"
        else:
            c.refutes_429(a.in_flight)
            c.on_answer(a.latency_s, a.in_flight, rate_per_s)
            why = _verdict(c)
        if on_evaluation is not None and c.knee is not knee_before:
            on_evaluation(a, c)
        if c.limit != before:
            steps.append(Step(a.end_s, before, c.limit, why))
    return steps


def fed_rate_per_s(limiter: dict[str, Any]) -> float:
    """The rate the limiter gave the controller (``RateLimiter._rate_per_s``): the rate in
    force or the spacing between starts, whichever is tighter; not the endpoints' own limits
    nor the in-flight bound (``binding.py`` names each in the report's ``limits_per_min``).
    Told 300/min that is the spacing, 0.21 s: 4.76/s, not 5 (the need rounds on it)."""
    rates = [
        per_min
        for name, per_min in limiter["limits_per_min"].items()
        if not name.startswith("endpoint ") and " in flight x " not in name
    ]
    return min(rates) / 60.0


def _verdict(c: ConcurrencyController) -> str:
    k = c.knee
    if k is None:
        return "no verdict"
    shown = "queue shown" if k.queue_shown else "no queue shown"
    return f"knee k={k.k} ({k.low}-{k.high} allowed, top {k.top}), {shown}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("report", type=Path, help="a run report (output/runs/<run>.json)")
    p.add_argument("--evaluations", action="store_true", help="print every verdict, too")
    args = p.parse_args(argv)
    report = json.loads(args.report.read_text())
    lim = report["limiter"]
    # The limiter notes the limit at every change it is told of, some of them to the same
    # value (a second 429 blamed at the same limit): compare the values it went through.
    recorded = [n for n, _ in itertools.groupby(n for _, n in lim["concurrency_timeline"])]
    rate = fed_rate_per_s(lim)
    if lim.get("rate_decreases") or lim.get("rate_increases"):
        print(f"# the rate changed during this run: replayed at {rate * 60:g}/min throughout")

    def show(a: Answer, c: ConcurrencyController) -> None:
        print(f"  t={a.end_s:8.2f} limit {c.limit:3d}  {_verdict(c)}")

    steps = replay(
        answers(report["timeline"]),
        rate_per_s=rate,
        cap=int(lim["concurrency_cap"]),
        initial=recorded[0],
        adaptive=bool(lim.get("adaptive_concurrency", True)),
        on_evaluation=show if args.evaluations else None,
    )
    for s in steps:
        print(f"t={s.at_s:8.2f} {s.before:3d} -> {s.after:3d}  {s.verdict}")
    same = [recorded[0]] + [s.after for s in steps] == recorded
    print(f"recorded: {' -> '.join(map(str, recorded))}")
    print("the replay goes through the run's limits" if same else "the replay parts from the run")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
