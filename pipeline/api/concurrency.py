"""The in-flight limit: Little's law from the observed latency, backing off a saturated server.

Why: with slow answers (production: 20-140 s) the rate limit is not what bounds a run, the
number of requests in flight is. To keep a told rate R going at latency L the client needs
about R x L requests in flight (Little's law); a fixed small pool caps throughput at
pool / L whatever R allows (4 in flight at 30 s: 8 requests/min). But more in flight than the
server works on at once only queues there: every answer gets slower and nothing gets faster.
So the limit in force follows what the rate and latency need, below ``cap``, and steps back
when the server shows it is saturated.

``ConcurrencyController`` is pure (no clock, lock or thread), like ``adaptive.RateController``:
the limiter feeds it every answer's latency and the in-flight count its request was sent at,
under the limiter's lock, and reads ``limit``.

Rules, evaluated every ``max(4, limit // 2)`` answers:

* **need**: ``ceil(rate_per_s x median x 1.5) + 2`` on the median of the last ``max(8,
  limit)`` latencies (headroom for the latency tail and for Poisson-like arrival of answers);
* **load dependence**: a least-squares fit of log latency on the in-flight count each answer
  was sent at, over the last ``max(32, 2 x limit)`` answers. Its slope says how much slower
  an answer gets per request we add; ``ratio`` is the fitted latency at the highest
  in-flight count in the window over the one at the lowest. Why a fit and not "the median
  against the lowest median seen" (the first version): single lognormal latencies vary by
  1.6x at sigma 0.5, so the lowest of many 8-answer medians is a lucky low, and an ordinary
  median then looked 1.4x "saturated": on a server that never queues (429 above 4
  concurrent, L = 1 s) the limit was cut to 2-3 for 25 s of a 48 s run. A server that
  queues makes answers sent at higher counts slower; one that slows for everyone, or noise,
  does not. A slope must be significant (t > 2.5) to count; no spread in in-flight (every
  request sent at the same count): no verdict. The ratio is at most the span of counts
  (highest / lowest): a queue slows an answer at most in proportion to the requests ahead
  of it, so a steeper fit over a narrow span (13-16 in flight) is noise;
* **saturated** (ratio > 1.4 in two evaluations in a row): cut the limit in proportion
  (``limit x 1.1 / ratio``, at most by half: a noisy slope must not take it to 1) and
  remember it as the ceiling; above it the limit grows by one (a probe) only after a full
  fit window (``max(32, 2 x limit)`` answers) at the current limit came out calm, so it
  settles at the server's parallelism instead of climbing a saw-tooth (one probe per calm
  batch of 4 answers made a saw-tooth between K and 3 x K);
* **calm** (ratio <= 1.15, or no verdict): grow towards the need, doubling while no ceiling
  is known (slow start: a run of 65 requests cannot wait for a linear ramp; beyond twice the
  initial limit only with a verdict of 12 answers or more, so a server of 2 workers is not
  flooded before the first fit), else by a quarter (at least one) up to the ceiling, then by
  one (a probe, see above); when the need is lower than the limit, follow it down;
* **a cut that did not help**: if the median after a cut is still >= 0.9 x the one that made
  it, fewer requests in flight did not make answers faster (the server slowed for everyone
  while we ramped up); the ceiling is dropped and nothing is cut;
* **429 from too much concurrency**: a 429 for a request sent at in-flight n is blamed on
  concurrency when n is above every in-flight count answered cleanly at least 3 times (and 3
  answers came from below n). Then the limit and the ceiling become n - 1 and the rate is
  left alone (the limiter does not cut the rate for it); probing above that ceiling is
  allowed only while such 429s stay within 1 % of the answers (measured: a probe per
  evaluation cost 5 429s in a 65-request run). A latency cut below that ceiling does not
  erase it. Otherwise the 429 is the rate's.

``baseline_s`` (reported as the unloaded latency) is the fitted latency at the lowest
in-flight count when the slope is significant, else the window's median.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict, deque
from dataclasses import dataclass

#: Before any latency was seen: what the fixed pools used to allow (chunk concurrency 4).
INITIAL_LIMIT = 4
_HEADROOM = 1.5
_SPARE = 2
_SATURATED = 1.4
_CALM = 1.15
_CUT_TARGET = 1.1
_MIN_BATCH = 8
_MIN_EVERY = 4
_FIT_WINDOW = 32
_MIN_FIT = 12
_T_SIGNIFICANT = 2.5
_CLEAN_ANSWERS = 3
_PROBE_429_BUDGET = 0.01


@dataclass(frozen=True, slots=True)
class ConcurrencyRules:
    cap: int
    enabled: bool = True


class ConcurrencyController:
    """The in-flight limit in force and the observations behind it (not thread-safe)."""

    def __init__(self, rules: ConcurrencyRules, initial: int | None = None) -> None:
        if rules.cap < 1:
            raise ValueError("cap must be >= 1")
        self.rules = rules
        start = rules.cap if not rules.enabled else (initial or INITIAL_LIMIT)
        self.limit = max(1, min(rules.cap, int(start)))
        self.ceiling: int | None = None  # learned from saturation or concurrency 429s
        self.baseline_s: float | None = None
        self.median_s: float | None = None  # the last batch's median latency
        self.cuts = 0
        self.concurrency_429 = 0
        self._recent: deque[float] = deque(maxlen=_MIN_BATCH)
        self._fit: deque[tuple[int, float]] = deque(maxlen=_FIT_WINDOW)  # (in flight, ln s)
        self._new = 0  # answers since the last evaluation
        self._skip = 0  # answers to requests sent before the last cut: they still queued
        self._cut_median: float | None = None  # the median that made the last cut
        self._saturated_streak = 0
        self._answers = 0
        self._ceiling_429: int | None = None  # the lowest ceiling a concurrency 429 set
        self._at_limit = 0  # answers judged since the limit last changed
        self._ok: defaultdict[int, int] = defaultdict(int)
        self._bad: defaultdict[int, int] = defaultdict(int)

    def on_answer(self, latency_s: float, in_flight: int, rate_per_s: float) -> bool:
        """A non-429 answer that took ``latency_s``, sent at ``in_flight`` (itself included).

        Returns True when the limit changed."""
        self._ok[in_flight] += 1
        self._answers += 1
        if not self.rules.enabled:
            return False
        if self._skip > 0:
            self._skip -= 1
            return False
        if self._recent.maxlen != max(_MIN_BATCH, self.limit):
            self._recent = deque(self._recent, maxlen=max(_MIN_BATCH, self.limit))
        if self._fit.maxlen != max(_FIT_WINDOW, 2 * self.limit):
            self._fit = deque(self._fit, maxlen=max(_FIT_WINDOW, 2 * self.limit))
        self._recent.append(latency_s)
        self._fit.append((in_flight, math.log(max(latency_s, 1e-6))))
        self._new += 1
        self._at_limit += 1
        # Decide every half limit of new answers (at least 4): quick enough to ramp within a
        # few latencies; the fit over the longer window is what is trusted for a cut.
        if self._new < max(_MIN_EVERY, self.limit // 2) or len(self._recent) < _MIN_EVERY:
            return False
        self._new = 0
        median = statistics.median(self._recent)
        self.median_s = median
        ratio = self._load_ratio()
        before = self.limit
        saturated = ratio is not None and ratio > _SATURATED
        if saturated and self._cut_median is not None and median >= 0.9 * self._cut_median:
            # Fewer requests in flight did not make answers faster: the latency is not
            # queueing we cause. Drop the (latency) ceiling, do not cut.
            self._cut_median = None
            self.ceiling = self._ceiling_429
            self._saturated_streak = 0
            return False
        self._saturated_streak = self._saturated_streak + 1 if saturated else 0
        if saturated and self._saturated_streak < 2:
            return False  # one slow stretch may be noise (CPU, GC): act on two in a row
        if saturated:
            assert ratio is not None
            self._saturated_streak = 0
            self._cut_median = median
            proportional = math.floor(self.limit * _CUT_TARGET / ratio)
            self.limit = max(1, self.limit // 2, min(self.limit - 1, proportional))
            self.ceiling = self.limit  # a latency ceiling: probing it costs no 429
            self.cuts += 1
            self._recent.clear()  # judge the new limit on its own answers, not on the
            self._fit.clear()
            self._skip = before  # ones already in flight (they queued behind the old limit)
            self._at_limit = 0
            return self.limit != before
        if ratio is None or ratio <= _CALM:
            self._cut_median = None
            need = math.ceil(rate_per_s * median * _HEADROOM) + _SPARE
            target = min(self.rules.cap, need)
            if ratio is None and len(self._fit) < _MIN_FIT:
                # No verdict yet (the first answers, or just after a cut): slow start may
                # reach twice the initial limit, nothing above a known ceiling.
                blind = 2 * INITIAL_LIMIT if self.ceiling is None else self.ceiling
                target = min(target, max(self.limit, blind))
            if target > self.limit:
                # No ceiling known yet: double (slow start); else a quarter at a time.
                step = self.limit if self.ceiling is None else max(1, self.limit // 4)
                if self.ceiling is not None and self.limit >= self.ceiling:
                    at_429 = self._ceiling_429 is not None and self.limit >= self._ceiling_429
                    if at_429 and not self._probe_affordable():
                        return False
                    if self._at_limit < max(_FIT_WINDOW, 2 * self.limit):
                        return False  # judge this limit on a full window before the next probe
                    step = 1  # a probe above what the server showed it can take
                    self.ceiling += 1
                elif self.ceiling is not None:
                    step = min(step, self.ceiling - self.limit)
                self.limit = min(target, self.limit + step)
            elif target < self.limit:
                self.limit = max(1, target)
        if self.limit != before:
            self._at_limit = 0
        return self.limit != before

    def _load_ratio(self) -> float | None:
        """Fitted latency at the window's highest in-flight count over its lowest (1.0: no
        significant rise), at most that span (highest / lowest count); None: too few answers
        or no spread to tell. Sets ``baseline_s``.

        Why at most the span: requests we add can slow an answer at most in proportion to the
        requests ahead of it (a pure queue: latency ~ in flight), so a steeper fit is noise.
        Measured: on a server that never queued (L = 5 s, K = 64), a window sent at 13-16 in
        flight fitted a ratio above 1.4 twice and cut the limit from 16 to 8 for the last
        15 s of a 63 s run."""
        n = len(self._fit)
        if n < _MIN_FIT:
            return None
        xs = [float(x) for x, _ in self._fit]
        ys = [y for _, y in self._fit]
        lo, hi = min(xs), max(xs)
        if lo == hi:
            self.baseline_s = math.exp(statistics.median(ys))
            return None
        slope, intercept = statistics.linear_regression(xs, ys)
        resid = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
        mx = statistics.fmean(xs)
        se = math.sqrt(resid / (n - 2) / sum((x - mx) ** 2 for x in xs))
        if slope <= 0 or (se > 0 and slope / se < _T_SIGNIFICANT):
            self.baseline_s = math.exp(statistics.median(ys))
            return 1.0
        self.baseline_s = math.exp(intercept + slope * lo)
        return min(math.exp(slope * (hi - lo)), hi / lo)

    def on_rate_429(self) -> None:
        """A 429 the rate controller took as its own (it cut the rate): the rate was too high.
        A ceiling an earlier 429 set may have been the rate's too (a told rate 2x too high
        first trips the server's burst limit while the in-flight count is at a new high, which
        looks like "too many concurrent"; measured: the limit stayed at 9 of a needed 16), so
        it is dropped; the in-flight tallies stay, so a real concurrency limit is found again
        by the next 429 above it."""
        if self._ceiling_429 is None:
            return
        if self.ceiling is not None and self.ceiling >= self._ceiling_429:
            self.ceiling = None  # that 429's ceiling, or probes above it
        self._ceiling_429 = None

    def _probe_affordable(self) -> bool:
        """Above a ceiling a 429 set, probe only while such 429s stay within 1 % of the
        answers (the rate controller's probe budget): a small run keeps what works."""
        return self.concurrency_429 + 1 <= _PROBE_429_BUDGET * self._answers

    def on_429(self, in_flight: int) -> bool:
        """A 429 for a request sent at ``in_flight``. True: blamed on concurrency (limit cut;
        the caller leaves the rate alone); False: the rate's."""
        self._bad[in_flight] += 1
        if not self.rules.enabled or in_flight < 2:
            return False
        # The highest in-flight count that has been answered cleanly a few times: a 429 above
        # it is the server refusing concurrency; at or below it, the rate.
        clean = max((n for n, v in self._ok.items() if v >= _CLEAN_ANSWERS), default=0)
        low_ok = sum(v for n, v in self._ok.items() if n < in_flight)
        if in_flight <= clean or low_ok < _CLEAN_ANSWERS:
            return False
        self.concurrency_429 += 1
        self.limit = self.ceiling = max(1, min(self.limit, in_flight - 1))
        self._ceiling_429 = min(self.ceiling, self._ceiling_429 or self.ceiling)
        self.cuts += 1
        self._recent.clear()
        self._fit.clear()
        self._new = 0
        return True
