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

Rules, evaluated every ``max(4, limit // 2)`` answers on the median of the last
``max(8, limit)`` (single lognormal latencies vary by 1.6x at sigma 0.5):

* **baseline**: the unloaded latency, the lowest such median seen; it drifts up a tenth of the
  way towards a calm median, so one lucky stretch does not set it for good;
* **need**: ``ceil(rate_per_s x median x 1.5) + 2`` (headroom for the latency tail and for
  Poisson-like arrival of answers);
* **saturated** (median > 1.4 x baseline in two evaluations in a row: latency rose as we
  added requests; one slow stretch may be CPU noise on the client; 1.25 was measured too
  low: the median of 8-16 lognormal answers swings that much): cut the
  limit in proportion (``limit x 1.1 / ratio``) and remember it as the ceiling; above a ceiling
  the limit grows by one per calm batch only (a probe), so it settles at the server's
  parallelism instead of oscillating;
* **calm** (median <= 1.1 x baseline): grow towards the need, doubling while no ceiling is
  known (slow start: a run of 65 requests cannot wait for a linear ramp), else by a quarter
  (at least one) up to the ceiling, then by one (a probe); when the need is lower than the
  limit, follow it down;
* **a cut that did not help**: if the median after a cut is still >= 0.9 x the one that made
  it, fewer requests in flight did not make answers faster: the baseline was a lucky low (or
  the server slowed for everyone); it is re-anchored there and nothing is cut;
* **429 from too much concurrency**: a 429 for a request sent at in-flight n is blamed on
  concurrency when n is above every in-flight count answered cleanly at least 3 times (and 3
  answers came from below n). Then the limit and the ceiling become n - 1 and the rate is
  left alone (the limiter does not cut the rate for it); probing above that ceiling is
  allowed only while such 429s stay within 1 % of the answers (measured: a probe per
  evaluation cost 5 429s in a 65-request run). Otherwise the 429 is the rate's.
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
_CALM = 1.1
_MIN_BATCH = 8
_MIN_EVERY = 4
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
        self._new = 0  # answers since the last evaluation
        self._skip = 0  # answers to requests sent before the last cut: they still queued
        self._cut_median: float | None = None  # the median that made the last cut
        self._saturated_streak = 0
        self._answers = 0
        self._hard_ceiling = False  # the ceiling came from a 429: probing it costs a 429
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
        self._recent.append(latency_s)
        self._new += 1
        # Decide every half limit of new answers (at least 4) on the median of the last
        # max(8, limit): quick enough to ramp within a few latencies, smooth enough to trust.
        if self._new < max(_MIN_EVERY, self.limit // 2) or len(self._recent) < _MIN_EVERY:
            return False
        self._new = 0
        median = statistics.median(self._recent)
        self.median_s = median
        full = len(self._recent) >= _MIN_BATCH
        if full and (self.baseline_s is None or median < self.baseline_s):
            self.baseline_s = median  # only from a full window: 4 answers are too few
        ratio = median / self.baseline_s if self.baseline_s else 1.0
        before = self.limit
        if (
            ratio > _SATURATED
            and full
            and self._cut_median is not None
            and median >= 0.9 * self._cut_median
        ):
            # Fewer requests in flight did not make answers faster: the latency is not
            # queueing we cause, the baseline was a lucky low. Re-anchor, do not cut.
            self.baseline_s = median
            self._cut_median = None
            self.ceiling = None  # the cut was not the server's parallelism either
            return False
        saturated = ratio > _SATURATED and full
        self._saturated_streak = self._saturated_streak + 1 if saturated else 0
        if saturated and self._saturated_streak < 2:
            return False  # one slow stretch may be noise (CPU, GC): act on two in a row
        if saturated:
            self._saturated_streak = 0
            self._cut_median = median
            self.limit = max(1, min(self.limit - 1, math.floor(self.limit * _CALM / ratio)))
            self.ceiling = self.limit
            self._hard_ceiling = False  # a latency ceiling: probing it costs no 429
            self.cuts += 1
            self._recent.clear()  # judge the new limit on its own answers, not on the
            self._skip = before  # ones already in flight (they queued behind the old limit)
            return self.limit != before
        if ratio <= _CALM:
            self._cut_median = None
            if self.baseline_s is not None:
                self.baseline_s += 0.1 * (median - self.baseline_s)
            need = math.ceil(rate_per_s * median * _HEADROOM) + _SPARE
            target = min(self.rules.cap, need)
            if target > self.limit:
                # No ceiling known yet: double (slow start); else a quarter at a time.
                step = self.limit if self.ceiling is None else max(1, self.limit // 4)
                if self.ceiling is not None and self.limit >= self.ceiling:
                    if self._hard_ceiling and not self._probe_affordable():
                        return False
                    step = 1  # a probe above what the server showed it can take
                    self.ceiling += 1
                elif self.ceiling is not None:
                    step = min(step, self.ceiling - self.limit)
                self.limit = min(target, self.limit + step)
            elif target < self.limit:
                self.limit = max(1, target)
        return self.limit != before

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
        self._hard_ceiling = True
        self.cuts += 1
        self._recent.clear()
        self._new = 0
        return True
