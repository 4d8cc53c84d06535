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
* **the knee** (``fit_knee``): over the last ``max(32, 2 x limit)`` answers and the anchor,
  a least-squares fit of ``ln latency = ln S + max(0, ln(n / k))`` on the in-flight count n
  each answer was sent at: a server of k workers, flat below k, proportional above it. It
  gives k, the range of k the answers do not rule out (an F bar at 2.5 standard errors), and
  whether a queue shows at all (the knee beats the flat line by 2.8 standard errors; at 2.5,
  3 of 40 model runs of a server that never queues cut 4 -> 2 on a lucky-low anchor, and so
  did the matrix's ``concurrency`` case, 39.8 -> 44.7 s). Why a fit and not "the median
  against the lowest median seen" (the first version): single lognormal latencies vary by
  1.6x at sigma 0.5, so the lowest of many 8-answer medians is a lucky low (a server that
  never queued had its limit cut to 2-3 for 25 s of a 48 s run). A server that queues makes
  answers sent at higher counts slower; one that slows for everyone, or noise, does not. Why
  a knee and not the straight line of log latency on n (the version before): the line
  through both halves put the unloaded latency 20-50 % low, and the cut ``limit x 1.1 /
  ratio`` at 1-3 on 4 workers. The ``ratio`` is the fitted latency at the limit over the
  unloaded one (at most limit / lowest count: a queue slows an answer at most in proportion
  to the requests ahead of it);
* **the anchor**: the 8 latest answers sent at the fewest in flight (none older than 128
  answers) stay in the fit. Why: at a steady limit every request is sent at the same count,
  so the window alone has no spread and gives no verdict; that read as calm, and a server of
  4 workers kept 8 queued (every answer 2x slower) for 25 s of a 65 s run;
* **saturated** (two evaluations in a row: a queue shows, the limit is above every k the
  answers allow, and the ratio is above 1.25): cut to the middle of the k allowed (the best
  fit alone undercut: only answers sent below k tell k from k - 1; the first cut after a
  held slow-start step not below that step's base while the knee allows k there), at most
  by 3/4, and
  remember it as the ceiling; the window is kept (the answers above the new limit are the
  evidence), only answers still in flight are skipped. Above the ceiling the limit grows by
  one (a probe) after a full window at the current limit (after 12 answers when the answers
  rule out a queue below the limit), and not while the answers allow a queue just below it
  (limit > 1.2 x the lowest k allowed; for a latency ceiling, only for 4 such windows), so it
  settles at the server's parallelism instead of climbing a saw-tooth;
* **a probe is judged on its own answers** (``_probe_undone``): 24 answers sent above the old
  limit more than 10 % slower than those sent at it undo it (above 2: 14 %, a third of the
  way to the 1.5 x a queue there would cause; above 1: 26 %; ``_probe_kept``), and the next
  probe waits twice as long (up to 8 windows); from 4.5 % below to 7 % above that bar is too
  close to call, and the probe is judged on a full window (32) instead; no probe starts
  while one is being judged. One request above k workers costs (k + 1) / k, which the knee
  cannot show through the noise, so probes to k + 1 used to stay (loaded latency 1.25-1.3 x);
* **a refresh before a probe**: when the anchor holds no answer sent at 60 % of the limit or
  below (it ages out), the limit dips there until 4 such answers are back, and the probe is
  decided with them (``_start_refresh``): at a steady limit the fit otherwise has no spread,
  and every full window probed one more, back into the queue on long runs;
* **calm** (ratio <= 1.15, or no verdict): grow towards the need, doubling while no ceiling
  is known (slow start: a run of 65 requests cannot wait for a linear ramp; beyond twice the
  initial limit only with a verdict of 12 answers or more, and each step only once 4 answers
  sent above the last step's base are back no more than 15 % slower than those sent at or
  below it, or 2 x the limit of them are: ``_step_borne_out``), else by a quarter (at least one)
  up to the ceiling, then by one (a probe, see above); when the need is lower than the
  limit, follow it down;
* **a cut the answers after it do not bear out**: 6 answers after a cut, if those sent at
  the new limit are not at least 13 % faster than the ones sent between it and the old limit
  before the cut (``_cut_helped``), or the fit shows no queue even at 2.5 standard errors,
  the latency was noise or not queueing we caused: the limit goes back to where it was (not
  above: probes find out more) and the anchor is emptied (a lucky-low anchor is the usual
  cause; measured on latency that does not depend on load, 5 of 40 runs cut once, and 2 of
  those stayed cut for 40+ answers);
* **429 from too much concurrency**: a 429 for a request sent at in-flight n is blamed on
  concurrency when n is above every in-flight count answered cleanly at least 3 times (and 3
  answers came from below n). Then the limit and the ceiling become n - 1 and the rate is
  left alone (the limiter does not cut the rate for it); probing above that ceiling is
  allowed only while such 429s stay within 1 % of the answers (measured: a probe per
  evaluation cost 5 429s in a 65-request run). A latency cut below that ceiling does not
  erase it. Otherwise the 429 is the rate's;
* **a blame the answers refute** (``refutes_429``): a request sent at more in flight than the
  blamed one, before the cut, that comes back clean shows the server took that many at
  once, so the 429 was not about concurrency: the limit goes back to where it was before the
  cut, the 429's ceiling goes, and the limiter hands the 429 to the rate controller. Why: a
  rate told 2x too high first trips the server's burst limit just after the limit doubles
  (a new high of both in-flight and starts per second); the blame held 9 of the 16 needed
  and the rate was cut only at the next 429, 12 s later (2 x 429, 1.35 x C/R). On a server
  that does refuse concurrency the requests above the blamed count are refused too, or were
  never sent (its 429 comes back before the next start). One such answer is enough: told
  600/min against 300/min + 6/s, the only request sent above the blamed 10 was at 11. The
  risk: at a told gap shorter than the network's round trip, a server that does refuse
  above k accepts a request we sent at k + 2 when two of the k + 1 counted before it were
  not in the server (an answer or the refused one's 429 still on the way to us); then the
  rate is halved for nothing, and the next request above k is refused and blamed again. At
  loopback that is never; in production (round trip ~0.1 s, answers 20-140 s) it needs a
  request to finish within one round trip of the 429: k x 0.1 s / 30 s, ~5 % at k = 16.

``baseline_s`` (reported as the unloaded latency) is the knee's S when a queue shows, else
the median of the fitted answers.
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
_SATURATED = 1.25
_CALM = 1.15
_MIN_BATCH = 8
_MIN_EVERY = 4
_FIT_WINDOW = 32
_MIN_FIT = 12
_F_SIGNIFICANT = 6.25  # the k the answers allow: within 2.5 standard errors of the best
_F_SHOWN = 8.0  # a queue shows (cut for it): the knee beats the flat line by 2.8 std errors
_CLEAN_ANSWERS = 3
_PROBE_429_BUDGET = 0.01
_ANCHOR = 8
_ANCHOR_AGE = 128  # answers: a server that slowed for everyone is not one that queues
_PROBE_CALM = 1.2
_STREAK = 2
_HELPED = 0.87  # a cut must make answers at least this much faster, or it is undone
_JUDGE_CUT = 6  # answers at the new limit before a latency cut is judged
_JUDGE_PROBE = 24  # answers sent above the old limit before a latency probe is judged
_PROBE_KEPT = 1.1  # ... kept only if they are at most this much slower than those at it
_PROBE_KEPT_SHARE = 1 / 3  # ... or a third of the way to the queue at the base (ln)
_PROBE_CLEAR = (1.05, 1.18)  # around the 1.1 bar (scaled with _probe_kept): judge on 32
_PROBE_BACKOFF = 8  # an undone probe doubles the wait for the next, up to this many windows
_BLOCK_LIFT = 4  # windows at a latency ceiling after which a possible queue no longer blocks
_REFRESH_DEPTH = 0.6  # a refresh holds this share of the limit (at least one fewer)


@dataclass(frozen=True, slots=True)
class ConcurrencyRules:
    cap: int
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Knee:
    """What the answers say about the server's parallelism: the number of workers ``k``
    (least squares), the range ``low``-``high`` the answers do not rule out (F bar), whether
    a queue shows at all (a knee fits significantly better than none), the unloaded latency."""

    k: int
    low: int
    high: int
    top: int  # the highest count answered
    queue_shown: bool  # the knee beats the flat line by 2.8 standard errors: cut for it
    queue_possible: bool  # ... by 2.5: a cut is not undone while this holds
    unloaded_s: float


@dataclass(frozen=True, slots=True)
class _Cut:
    from_limit: int  # the limit before the cut
    before: list[float]  # ln latency of the answers sent between the new limit and it


@dataclass(frozen=True, slots=True)
class _Probe:
    seq: int  # the answer count when the limit went one above ``base``
    base: int  # the limit probed above
    before: list[float]  # ln latency of the answers sent at ``base`` in the window


@dataclass(frozen=True, slots=True)
class _Step:
    seq: int  # the answer count when slow start stepped up from ``base``
    base: int


@dataclass(frozen=True, slots=True)
class _Blame:
    at: int  # the highest in-flight count a concurrency 429 was blamed at
    limit: int  # the limit, ceiling and 429 ceiling before the first of them
    ceiling: int | None
    ceiling_429: int | None
    n: int  # how many 429s were blamed


def _slower(after: list[float], before: list[float]) -> float:
    """How many times slower the answers ``after`` are than ``before`` (ln latencies: the
    ratio of their geometric means), for judging a cut or a probe on its own answers."""
    return math.exp(statistics.fmean(after) - statistics.fmean(before))


def _probe_kept(base: int) -> float:
    """How much slower than those sent at ``base`` a probe's answers may be and it be kept.

    Why it depends on the base: held at base + 1 on a server of base workers, one request
    always waits, so answers take (base + 1) / base as long: 1.5 x above 2, 1.25 x above 4.
    A bar of 1.1 x everywhere was a quarter of the way (in ln latency) to that above 2, and
    noise undid a probe to 3 on 4 workers (1.13 x on 32 answers against 12 lucky-fast ones at
    2: the matrix's L 2 s / K 4 then held 2 for 55 s, 1.75 x the floor). A third of the way,
    not below 1.1 x: 1.26 x above 1, 1.14 x above 2, 1.10 x from 3 on. Halfway kept too many
    probes to 3 on 2 workers (controller model, 1,300 requests, 200 runs per case: 1,860 ->
    1,846 of 2,200 meeting both targets; a third: 1,855, and at 130 requests the same on both
    nights)."""
    return max(_PROBE_KEPT, ((base + 1) / base) ** _PROBE_KEPT_SHARE)


def fit_knee(points: list[tuple[int, float]]) -> Knee | None:
    """Fit ``ln latency = ln S + max(0, ln(n / k))`` over (in flight at send, ln latency):
    a server of k workers serving FIFO, where an answer sent at n > k waits for n - k others.

    Why a knee and not a straight line (the version before): a queue is flat below k and
    proportional above it; a line through both halves put the unloaded latency 20-50 % low
    and its cut target ``limit x 1.1 / ratio`` at 1-2 on 4 workers. The search over k is
    exhaustive (k from the lowest count to the highest: at most ``cap`` fits of ~40 points),
    so the F bar is a little lax; the cut is checked afterwards (``on_answer``).
    None: no spread of counts to tell."""
    xs = [float(x) for x, _ in points]
    ys = [y for _, y in points]
    lo, hi = int(min(xs)), int(max(xs))
    if lo == hi:
        return None
    logs = [math.log(x) for x in xs]
    fits = []
    for k in range(lo, hi + 1):
        lk = math.log(k)
        zs = [y - max(0.0, lx - lk) for lx, y in zip(logs, ys, strict=True)]
        log_s = statistics.fmean(zs)
        fits.append((sum((z - log_s) ** 2 for z in zs), k, log_s))
    rss, k, log_s = min(fits)
    bar = rss * (1 + _F_SIGNIFICANT / max(1, len(points) - 2))
    allowed = [kk for r, kk, _ in fits if r <= bar]
    shown = fits[-1][0] > rss * (1 + _F_SHOWN / max(1, len(points) - 2))  # vs the flat line
    possible = fits[-1][0] > bar
    unloaded = math.exp(log_s) if shown else math.exp(statistics.median(ys))
    return Knee(k, min(allowed), max(allowed), hi, shown, possible, unloaded)


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
        self._fit: deque[tuple[int, int, float]] = deque(maxlen=_FIT_WINDOW)  # (#, n, ln s)
        self._anchor: list[tuple[int, int, float]] = []  # the answers sent at the fewest
        self._new = 0  # answers since the last evaluation
        self._skip = 0  # answers to requests sent before the last cut: they still queued
        self._cut: _Cut | None = None  # a latency cut not yet judged on its own answers
        self._saturated_streak = 0
        self._answers = 0
        self._ceiling_429: int | None = None  # the lowest ceiling a concurrency 429 set
        self._blame: _Blame | None = None  # concurrency 429s the answers may still refute
        self._at_limit = 0  # answers judged since the limit last changed
        self._refresh_to: int | None = None  # the limit to go back to after a refresh
        self._probe: _Probe | None = None  # a latency probe not yet judged
        self._probe_wait = 1  # windows between probes: doubled by each probe undone
        self._step: _Step | None = None  # the last slow-start step, judged before the next
        self.knee: Knee | None = None  # the last fit
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
        point = (self._answers, in_flight, math.log(max(latency_s, 1e-6)))
        self._fit.append(point)
        self._keep_anchor(point)
        self._new += 1
        self._at_limit += 1
        if self._refresh_to is not None:
            return self._refreshing()
        # Decide every half limit of new answers (at least 4): quick enough to ramp within a
        # few latencies; the fit over the longer window is what is trusted for a cut.
        if self._new < max(_MIN_EVERY, self.limit // 2) or len(self._recent) < _MIN_EVERY:
            return False
        self._new = 0
        median = statistics.median(self._recent)
        self.median_s = median
        knee = self.knee = self._fit_knee()
        ratio = self._queue_ratio(knee)
        before = self.limit
        # Saturated: the fit puts a queue below the limit in force, one the answers do not
        # allow to be at or above it, and costing more than a quarter of the latency.
        saturated = (
            knee is not None and ratio is not None and ratio > _SATURATED and self.limit > knee.high
        )
        if self._cut is not None and self._at_limit >= _JUDGE_CUT:
            cut, self._cut = self._cut, None
            if not self._cut_helped(cut) or (knee is not None and not knee.queue_possible):
                # Answers at the lower limit are no faster than those sent between it and the
                # old one, or no queue shows any more: the latency was noise, or not queueing
                # we caused. Undo the cut (back to the old limit, not above: probes find out).
                self.limit = min(cut.from_limit, self._ceiling_429 or cut.from_limit)
                self.ceiling = self.limit
                self._anchor.clear()
                self._at_limit = 0
                return self.limit != before
        if self._probe is not None and not saturated and self._probe_undone():
            return True
        self._saturated_streak = self._saturated_streak + 1 if saturated else 0
        if saturated and self._saturated_streak < _STREAK:
            return False  # one slow stretch may be noise (CPU, GC): act on two in a row
        if saturated:
            assert knee is not None
            self._saturated_streak = 0
            # The middle of the k the answers allow: the best fit alone undercut (k = 1-2 on
            # 2 workers in 30 of 40 model runs: only answers sent below k tell k from k - 1).
            middle = round((knee.k + knee.high) / 2)
            # The first cut after a held slow-start step stops at its base while the knee
            # allows k there: from 8 the middle often landed on 3 on 4 workers, from 16 on 4.
            last = self._step
            if self.ceiling is None and last is not None and last.base <= knee.high:
                middle = max(middle, last.base)
            self.limit = max(1, self.limit // 4, min(self.limit - 1, middle))
            # what answers sent between the new limit and the old one took: the cut's yardstick
            self._cut = _Cut(before, [y for _, x, y in self._fit if self.limit < x <= before])
            self.ceiling = self.limit  # a latency ceiling: probing it costs no 429
            self.cuts += 1
            self._recent.clear()  # judge the new limit on its own answers, not on the
            self._skip = before  # ones already in flight (they queued behind the old limit)
            self._at_limit = 0
            return self.limit != before
        if ratio is None or ratio <= _CALM:
            need = math.ceil(rate_per_s * median * _HEADROOM) + _SPARE
            target = min(self.rules.cap, need)
            if ratio is None and len(self._fit) < _MIN_FIT:
                # No verdict yet (the first answers, or just after a cut): slow start may
                # reach twice the initial limit, nothing above a known ceiling.
                blind = 2 * INITIAL_LIMIT if self.ceiling is None else self.ceiling
                target = min(target, max(self.limit, blind))
            if target > self.limit and self.ceiling is None and not self._step_borne_out():
                return False  # slow start waits for its last step's own answers
            if target > self.limit:
                # No ceiling known yet: double (slow start); else a quarter at a time.
                step = self.limit if self.ceiling is None else max(1, self.limit // 4)
                if self.ceiling is not None and self.limit >= self.ceiling:
                    at_429 = self._ceiling_429 is not None and self.limit >= self._ceiling_429
                    if at_429 and not self._probe_affordable():
                        return False
                    if self._probe is not None:
                        return False  # the last probe is not judged yet
                    # A latency ceiling the answers now rule out (no queue below the limit)
                    # is probed sooner; a 429's ceiling is not a matter of latency.
                    ruled_out = not at_429 and knee is not None and knee.low >= self.limit
                    judged = _MIN_FIT if ruled_out else max(_FIT_WINDOW, 2 * self.limit)
                    judged *= self._probe_wait
                    if self._at_limit < judged:
                        return False  # judge this limit on a full window before the next probe
                    if (
                        knee is not None
                        and self.limit > _PROBE_CALM * knee.low
                        and (at_429 or self._at_limit < _BLOCK_LIFT * judged)
                    ):
                        # The answers allow a queue just below: do not add to it, unless the
                        # limit has held for a long time (a probe is judged, and undone).
                        return False
                    if not at_429 and self.limit > 1 and not self._anchored_low():
                        return self._start_refresh()
                    step = 1  # a probe above what the server showed it can take
                    if not at_429:
                        at_base = [y for _, x, y in self._fit if x == self.limit]
                        if len(at_base) >= _MIN_EVERY:
                            self._probe = _Probe(self._answers, self.limit, at_base)
                    self.ceiling += 1
                elif self.ceiling is not None:
                    step = min(step, self.ceiling - self.limit)
                if self.ceiling is None:
                    self._step = _Step(self._answers, self.limit)
                self.limit = min(target, self.limit + step)
            elif target < self.limit:
                self.limit = max(1, target)
        if self.limit != before:
            self._at_limit = 0
        return self.limit != before

    def _fit_knee(self) -> Knee | None:
        """The knee over the window and the anchor; sets ``baseline_s``. None: too few answers
        or no spread of in-flight counts."""
        if len(self._fit) < _MIN_FIT:
            return None
        seen = {seq for seq, _, _ in self._fit}
        points = [(x, y) for seq, x, y in self._anchor if seq not in seen]
        points += [(x, y) for _, x, y in self._fit]
        knee = fit_knee(points)
        self.baseline_s = (
            math.exp(statistics.median(y for _, y in points)) if knee is None else knee.unloaded_s
        )
        return knee

    def _queue_ratio(self, knee: Knee | None) -> float | None:
        """How much slower than unloaded the fit says answers are at the limit in force (1.0: no
        queue shown; None: no verdict). At most the count over the lowest count: a queue slows
        an answer at most in proportion to the requests ahead of it (a line fitted over 13-16
        in flight once said 1.4 x on a server that never queued, and cut 16 to 8)."""
        if knee is None:
            return None
        if not knee.queue_shown:
            return 1.0
        return max(1.0, min(self.limit, knee.top) / knee.k)

    def _cut_helped(self, cut: _Cut) -> bool:
        """Are answers sent at or below the cut limit faster than those sent between it and the
        old limit before the cut (a queue: by the ratio of the counts)? Why not the fit alone:
        its window still holds the old queue's answers (8-16 in flight, 4 x slower), which
        keep a queue "possible" whatever the new limit shows; measured in the matrix (L 2 s,
        K 4): after 16 -> 4, a second cut 4 -> 2 on two lucky-low first answers held 2 in
        flight for 15 s although answers at 2 took what those at 4 had (2.02 s / 1.97 s)."""
        since = list(self._fit)[-self._at_limit :] if self._at_limit else []
        after = [y for _, x, y in since if x <= self.limit]
        if len(after) < _MIN_EVERY or len(cut.before) < _MIN_EVERY:
            return True  # nothing to compare: the fit decides
        return _slower(after, cut.before) < _HELPED

    def _probe_undone(self) -> bool:
        """Judge a latency probe on ``_JUDGE_PROBE`` answers sent above its old limit: if they
        are more than ``_probe_kept`` (1.1 x; above 2, 1.14 x) slower than those sent at it,
        go back (and wait twice as long before the next probe); else keep it.

        Why: one request above a server's k workers slows answers by (k + 1) / k (1.25 x on 4),
        which the knee cannot show through lognormal noise (sigma 0.5) in a 32-answer window;
        so a probe to k + 1 stayed, the loaded latency at 1.25-1.3 x (the matrix's L 2 s /
        K 4: 5 in flight from 54 s to the end, 1.31 x). Compared on their own answers, 24
        against the window's at the old limit, such a probe is undone ~83 % of the time, and
        one the server does take (no queue) is kept ~75 % (normal approximation). Controller
        model, 1,300 requests, 20 runs each, against the refresh alone: loaded latency median
        L 0.5 s / K 2 1.37 -> 1.15 x, L 1 s / K 4 1.18 -> 1.06 x, L 2 s / K 4 1.10 -> 1.03 x;
        the wall 1-4 % longer (holding exactly k takes 1.17-1.23 x the floor, k + 1 1.15 x)."""
        p = self._probe
        assert p is not None
        if self.limit != p.base + 1:  # cut, refreshed or probed again since: moot
            self._probe = None
            return False
        after = self._sent_above(p.seq, p.base)
        if len(after) < _JUDGE_PROBE:
            return False
        slower = _slower(after, p.before)
        kept = _probe_kept(p.base)
        more = self._fit.maxlen or _FIT_WINDOW  # the most the window holds
        low, high = (kept * bound / _PROBE_KEPT for bound in _PROBE_CLEAR)
        if len(after) < more and low < slower <= high:
            return False  # too close to call on 24: judge on a full window
        # Why a second look: on 24 answers against 32, sigma 0.5, a probe to k on k workers
        # was undone ~24 % of the time, and each undone one doubles the wait; on 1,300-request
        # runs a cut to k - 1 then stayed there (L 2 s / K 4: 3 in flight for 400 s).
        self._probe = None
        if slower <= kept:
            self._probe_wait = 1
            return False
        self.limit = self.ceiling = p.base
        self._probe_wait = min(_PROBE_BACKOFF, 2 * self._probe_wait)
        self._at_limit = 0
        return True

    def _step_borne_out(self) -> bool:
        """May slow start step again? Only once ``_MIN_EVERY`` answers sent above the last
        step's base are back and they are no more than ``_CALM`` x slower than those sent at
        or below it.

        Why: the knee needs 12 answers and a spread to show a queue; until then "no queue
        shown" read as calm, and the second doubling went 8 -> 16 on a server of 4 workers
        (matrix L 2 s / K 4: 16 in flight for 10 s, loaded latency 1.28-1.33 x). The step's
        own answers show a queue sooner: sent at 5-8 on 4 workers they take 1.25-2 x.
        Controller model, 40 runs of 130 requests: runs reaching 16 in flight on 4 workers at
        2 s 37 -> 9, loaded latency median 1.26 -> 1.14 x (L 1 s / K 4: 1.25 -> 1.18 x); on 16
        workers the limit reaches 14 at 6.75 s instead of 6.45 s (median wall 1.286 x either
        way). Why "held", not "taken back to the base": 4 answers against 4-8 cannot tell a
        queue from noise (a third of steps on a server that never queues look 15 % slower),
        and back at the base with a ceiling the ramp would go on one probe at a time."""
        r = self._step
        if r is None or self.limit <= r.base:
            return True  # no step, or it was taken back
        before = [y for _, x, y in self._fit if x <= r.base]
        after = self._sent_above(r.seq, r.base)
        if len(before) < _MIN_EVERY or len(after) >= 2 * self.limit:
            return True  # the fit has the step's answers now: it decides
        return len(after) >= _MIN_EVERY and _slower(after, before) <= _CALM

    def _sent_above(self, since: int, base: int) -> list[float]:
        """ln latency of the window's answers after answer ``since`` that were sent at more
        than ``base`` in flight: what a probe or a slow-start step above ``base`` is judged on."""
        return [y for seq, x, y in self._fit if seq > since and x > base]

    @property
    def settled(self) -> int:
        """The limit to remember for the next run: during a refresh, the one it returns to
        (the dip is a measurement, not something learned about the server)."""
        return self._refresh_to or self.limit

    def _anchored_low(self) -> bool:
        """Does the anchor hold an answer sent at the refresh depth or below? Without one the
        fit cannot see the queue a probe would add to."""
        return self._anchored_at_most(self._refresh_depth()) > 0

    def _anchored_at_most(self, count: int) -> int:
        """How many anchor answers were sent at ``count`` in flight or fewer."""
        return sum(1 for _, x, _ in self._anchor if x <= count)

    def _refresh_depth(self) -> int:
        """60 % of the limit, at least one fewer: deep enough to be below a server's workers
        when the limit is a probe or two above them."""
        return max(1, min(self.limit - 1, int(self.limit * _REFRESH_DEPTH)))

    def _start_refresh(self) -> bool:
        """Before a probe with no fresh answer at the refresh depth: hold that many in flight
        until ``_MIN_EVERY`` answers sent there are back, then return to the limit
        (``_refreshing``); the next probe is decided with them in the fit.

        Why: the anchor ages out (a server that slows for everyone must not read as a queue),
        and at a steady limit every request is sent at the limit, so after ``_ANCHOR_AGE``
        answers the fit had no spread and no verdict, which let every full window probe one
        more. Controller model, 1,300 requests (10,000 tracks), 20 runs each: on 4 workers at
        L 2 s the limit crept from 5 back to 16 over 900 answers; the loaded latency's p90 was
        3.35 x the service time (L 0.5 s / K 2: 3.32 x); with the refresh alone 1.25 x
        (1.49 x). Why 60 % and not one fewer: on 2 workers, answers at 3 are queued too, so 4
        against 3 showed no knee (p90 2.02 x). It costs ~4 answers at 60 % of the limit per
        ``_ANCHOR_AGE``, and when a server slows for everyone mid-run, the cut an old fast
        anchor caused is probed back up later (docs/decisions.md, "Long runs"). BBR drains
        its window to re-measure the round trip for the same reason. An anchor that never
        ages instead stopped the creep but cut 3 x as often on a server that doubled its
        latency for everyone (L 2 s, 16 workers: 29 cuts against 9)."""
        self._refresh_to = self.limit
        self.limit = self._refresh_depth()
        self._at_limit = 0
        return True

    def _refreshing(self) -> bool:
        """During a refresh: no verdicts (its answers are the low ones it came for); back to
        the limit once ``_MIN_EVERY`` answers sent at the depth are in the anchor."""
        assert self._refresh_to is not None
        if self._anchored_at_most(self.limit) < _MIN_EVERY:
            return False
        self.limit, self._refresh_to = self._refresh_to, None
        self._at_limit = 0
        self._new = 0
        return True

    def _keep_anchor(self, point: tuple[int, int, float]) -> None:
        """Keep the latest answers sent at the fewest requests in flight, for the fit.

        Why: at a steady limit every request is sent at the same count, so the window alone
        has no spread and says nothing; a server queueing 8 requests on 4 workers (every
        answer 2x slower) went unseen for 25 s of a 65 s run. The anchor keeps what the
        server answered at a lower count in the fit."""
        self._anchor = [p for p in self._anchor if p[0] > point[0] - _ANCHOR_AGE]
        if len(self._anchor) < _ANCHOR:
            self._anchor.append(point)
            return
        worst = max(x for _, x, _ in self._anchor)
        if point[1] <= worst:
            oldest = min(i for i, p in enumerate(self._anchor) if p[1] == worst)
            self._anchor[oldest] = point

    def sustained_per_s(self) -> float | None:
        """Starts per second the limit sustains at the median latency (Little's law), while a
        concurrency 429's ceiling holds it; else None (the limit follows the rate)."""
        if self._ceiling_429 is None or not self.median_s:
            return None
        return self.limit / self.median_s

    def refutes_429(self, in_flight: int) -> bool:
        """Does a clean answer to a request sent at ``in_flight`` refute the concurrency 429s
        blamed so far (see the module docstring)? True: they are taken back (the limit is
        restored, their ceiling dropped; the caller gives the 429 to the rate). Only while the
        limit is below the blamed count, so the answer is to a request sent before the cut."""
        b = self._blame
        if b is None or in_flight <= b.at or self.limit >= b.at:
            return False
        self._blame = None
        self._refresh_to = None
        self.concurrency_429 -= b.n
        self.cuts -= b.n
        self.limit, self.ceiling, self._ceiling_429 = b.limit, b.ceiling, b.ceiling_429
        self._at_limit = 0
        return True

    def on_rate_429(self) -> None:
        """A 429 the rate controller took as its own (it cut the rate): the rate was too high.
        A ceiling an earlier 429 set may have been the rate's too (a told rate 2x too high
        first trips the server's burst limit while the in-flight count is at a new high, which
        looks like "too many concurrent"; measured: the limit stayed at 9 of a needed 16), so
        it is dropped; the in-flight tallies stay, so a real concurrency limit is found again
        by the next 429 above it."""
        self._blame = None
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
        b = self._blame or _Blame(0, self.limit, self.ceiling, self._ceiling_429, 0)
        self._blame = _Blame(max(in_flight, b.at), b.limit, b.ceiling, b.ceiling_429, b.n + 1)
        self._refresh_to = None
        self.limit = self.ceiling = max(1, min(self.limit, in_flight - 1))
        self._ceiling_429 = min(self.ceiling, self._ceiling_429 or self.ceiling)
        self.cuts += 1
        self._recent.clear()
        self._fit.clear()
        self._new = 0
        return True
