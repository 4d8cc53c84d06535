"""The adaptive rate controller: AIMD with probing, as a pure state machine.

Why its own module: the rules (cut on a 429, climb after a quiet stretch, treat a 429 right
after a climb as a failed probe) are where the limiter's judgement lives, and they are easiest
to get right when they can be tested step by step with plain numbers. ``RateController``
holds no clock, lock or thread: every method takes ``now`` and returns what changed; the
limiter calls it under its own lock and applies the result (pacing, backend publication).

Rules (rates are starts per window):

* multiplicative decrease on a 429 (``decrease``), never below ``floor``; a 429 answering a
  request sent before the last decrease is stale and changes nothing;
* additive increase (``increase``) after ``quiet_s`` of answers without a 429, never above
  ``ceiling``. An increase is a probe: a 429 within one window of it restores the rate that
  worked (no cut) and doubles the quiet stretch before the next probe;
* warm start (issue 11): a run that starts from a learned rate below the ceiling (the last
  run ended in a storm) multiplies the rate by ``SLOW_START_FACTOR`` after each answer,
  until the ceiling or its first 429 (which restores the rate that worked): a storm's
  penalty is not carried into a clean night (64.5 s for 10 requests instead of ~8 s);
* after the run's first 429 a probe is made only while 429s stay within ``probe_429_budget``
  of the requests made (small runs keep the rate that works instead of spending a tenth of
  their calls on probes; long runs still climb). ``None``: always probe;
* a told rate's first 429 after ``forgive_after`` clean answers is forgiven (counted, rate
  kept; the limiter widens its gap a little instead). Why: told the rate, starts are spaced
  one told interval apart plus a small margin, and a rate that is really too high shows
  within the first seconds (a told 2x trips the server's burst limit at its 6th-7th
  request). A first 429 after many clean answers is two starts that network jitter brought
  closer at the server than we spaced them; halving the rate for it made the rest of a run
  2x slower. The next 429 is the rate's as usual;
* a 429 the in-flight limit took as its own is only noted (``note_429``); when answers after
  it refute that (``ConcurrencyController.refutes_429``), ``reclaim_429`` decides it as the
  rate's, as it would have been decided when it came (forgivable or not, a failed probe or
  not), without counting it twice.

With ``enabled=False`` the rate stays at the ceiling; 429s are still counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pipeline.config import LimiterConfig

#: Warm start: the learned rate is multiplied by this after each answer until the first 429.
SLOW_START_FACTOR = 4.0
#: A told rate's first 429 after this many clean answers is forgiven (``forgive_429``).
FORGIVE_AFTER = 20

#: What ``reclaim_429`` did with a 429 it took back.
Reclaimed = Literal["cut", "forgiven", "kept"]


@dataclass(frozen=True, slots=True)
class RateRules:
    """The controller's constants (built from ``LimiterConfig``)."""

    ceiling: float
    floor: float
    window_s: float
    enabled: bool = True
    decrease: float = 0.5
    increase: float = 6.0
    quiet_s: float = 30.0
    probe_429_budget: float | None = 0.01
    forgive_after: int | None = None  # None: no 429 is forgiven (the rate was not told)

    @classmethod
    def from_config(cls, c: LimiterConfig) -> RateRules:
        ceiling = float(c.rate_per_window)
        return cls(
            ceiling=ceiling,
            floor=min(float(c.min_rate_per_window), ceiling),
            window_s=float(c.window_s),
            enabled=c.adaptive,
            decrease=c.decrease,
            increase=float(c.increase_per_window),
            quiet_s=float(c.quiet_s),
            probe_429_budget=c.probe_429_budget,
            forgive_after=FORGIVE_AFTER if c.told_rate and c.min_interval_s > 0 else None,
        )


class RateController:
    """The learned rate and the bookkeeping its decisions need (not thread-safe)."""

    def __init__(
        self,
        rules: RateRules,
        now: float,
        initial_rate: float | None = None,
        *,
        warm_start: bool = False,
    ) -> None:
        """``warm_start``: ``initial_rate`` is last run's learned rate, a hint to climb from
        quickly (see the module docstring), not a rate this run has seen work."""
        if not 0 < rules.decrease < 1:
            raise ValueError("decrease must be in (0, 1)")
        self.rules = rules
        start = rules.ceiling if initial_rate is None or not rules.enabled else initial_rate
        self.rate = min(rules.ceiling, max(rules.floor, float(start)))
        self.count_429 = 0
        self.decreases = 0
        self.increases = 0
        self.last_decrease_at = -math.inf
        self.forgiven = 0
        self._clean = 0  # answers without a 429
        self._quiet_anchor = now  # start of the current stretch without a 429 (or increase)
        self._good_rate: float | None = None  # the rate a probe left; restored if it fails
        self._probe_quiet = rules.quiet_s
        self._increased_at = -math.inf
        self._warm_start = warm_start and rules.enabled and self.rate < rules.ceiling
        self._noted: tuple[float, bool] | None = None  # the last 429 noted: (when, forgivable)

    def on_success(self, now: float, requests_made: int) -> bool:
        """A non-429 answer. Returns True when the rate was raised (a probe started)."""
        r = self.rules
        self._clean += 1
        if self._warm_start and self.count_429 == 0:
            self._good_rate = self.rate
            self.rate = min(r.ceiling, self.rate * SLOW_START_FACTOR)
            self._warm_start = self.rate < r.ceiling
            self._quiet_anchor = self._increased_at = now
            self.increases += 1
            return True
        if not (
            r.enabled
            and self.rate < r.ceiling
            and now - self._quiet_anchor >= self._probe_quiet
            and self._probe_affordable(requests_made)
        ):
            return False
        self._good_rate = self.rate
        self.rate = min(r.ceiling, self.rate + r.increase)
        self._quiet_anchor = self._increased_at = now
        self.increases += 1
        return True

    def on_429(self, now: float, started_at: float | None, in_cooldown: bool) -> bool:
        """A 429. ``started_at``: when the answered request started (None: unknown, then a 429
        during a running cool-down counts as stale). Returns True when the rate changed."""
        self.count_429 += 1
        self._quiet_anchor = now
        self._warm_start = False
        self._noted = None
        if not self.rules.enabled:
            return False
        stale = started_at <= self.last_decrease_at if started_at is not None else in_cooldown
        if stale:
            return False
        self._decrease(now, now)
        return True

    def _decrease(self, now: float, at: float) -> None:
        """The cut for a 429 that came at ``at`` (``now``, or earlier for a reclaimed one)."""
        if self._good_rate is not None and at - self._increased_at <= self.rules.window_s:
            self.rate = self._good_rate  # the probe failed: back to what worked
            self._probe_quiet *= 2
        else:
            self.rate = max(self.rules.floor, self.rate * self.rules.decrease)
            self._probe_quiet = self.rules.quiet_s
        self._good_rate = None
        self.last_decrease_at = now
        self.decreases += 1

    def forgive_429(self, now: float) -> bool:
        """A 429 the caller may forgive (see the module docstring): True when it was, and
        then it is counted and the rate kept; False: decide with ``on_429``."""
        if not self._forgivable():
            return False
        self.note_429(now)
        self._noted = None
        self.forgiven += 1
        return True

    def note_429(self, now: float) -> None:
        """A 429 blamed on something else (too many in flight): counted, rate unchanged.

        Remembered until the next 429, so ``reclaim_429`` can still decide it as the rate's
        with what was known when it came (whether it was forgivable, a failed probe)."""
        forgivable = self._forgivable()
        self.count_429 += 1
        self._quiet_anchor = now
        self._noted = (now, forgivable)

    def _forgivable(self) -> bool:
        """Would a 429 now be forgiven: a told rate's first, after ``forgive_after`` clean
        answers (the module docstring)."""
        after = self.rules.forgive_after
        return after is not None and self.count_429 == 0 and self._clean >= after

    def reclaim_429(self, now: float) -> Reclaimed:
        """The 429 last noted as another cause's was the rate's after all (the answers since
        refuted the other cause): decide it as ``forgive_429`` / ``on_429`` would have when it
        came, without counting it again. Nothing when another 429 came since."""
        noted, self._noted = self._noted, None
        if noted is None or not self.rules.enabled:
            return "kept"
        at, forgivable = noted
        if forgivable:
            self.forgiven += 1
            return "forgiven"
        self._warm_start = False
        self._decrease(now, at)
        return "cut"

    def _probe_affordable(self, requests_made: int) -> bool:
        budget = self.rules.probe_429_budget
        if self.count_429 == 0 or budget is None:
            return True
        return self.count_429 + 1 <= budget * requests_made


def whole_starts(rate: float) -> int:
    """Whole starts per window a (possibly fractional, learned) rate allows; at least 1."""
    return max(1, math.floor(rate + 1e-9))


class Pacing:
    """After a 429, space starts window/rate apart: for one window, or (adaptive) for good.

    The budget left unused in the window (and, after a decrease, the starts of the old rate
    still in it) would otherwise go out the instant the cool-down ends: the burst that got us
    the 429. Real starts stay in the windows, so the sliding-window guarantee is untouched;
    pacing only spreads what the window allows. Adaptive: the server just showed the
    configured rate is too high and its shape is unknown (it may be strict spacing), so the
    spacing stays for the rest of the run. Pure: the limiter passes every instant.

    A run that starts from a learned rate below the configured one is paced from its first
    request (``after_429`` at the start): the last run's 429 showed the configured rate too
    high, and the configured gap would burst the learned budget's starts into its first
    second (measured: told 600/min against a 300/min + 6/s server, night 2 took its 429 at the
    7th request, before any answer, and halved the learned 300 to 150: 56.7 s for 132
    requests against 35 s on night 1, and 150 saved for night 3).
    """

    def __init__(self, window_s: float, for_good: bool) -> None:
        self._window = window_s
        self._for_good = for_good
        self.since = self.until = math.inf  # no 429 yet: no pacing
        self.step = 0.0

    def after_429(self, cooldown_until: float, rate: float) -> None:
        self.since = cooldown_until
        self.until = math.inf if self._for_good else cooldown_until + self._window
        self.step = self._window / whole_starts(rate)

    def rate_changed(self, now: float, rate: float) -> None:
        if self.until > now:
            self.step = self._window / whole_starts(rate)

    def active(self, now: float) -> bool:
        return now < self.until
