"""The one jitter formula: capped exponential backoff with a jittered share.

Two waits use it with different ``keep`` shares, for different reasons:

* a thread retrying after a 5xx or a transport error draws with ``keep=0`` ("full
  jitter", AWS): threads that failed together are spread over the whole interval, so they do
  not retry in lockstep;
* the limiter's shared cool-down after a 429 without ``Retry-After`` draws with
  ``keep=0.5`` ("equal jitter"): one silence for every thread, which must last at least
  half the step or it is no silence at all.
"""

from __future__ import annotations

import random

FULL_JITTER = 0.0
EQUAL_JITTER = 0.5


def backoff_s(step: int, base_s: float, max_s: float, rng: random.Random, keep: float) -> float:
    """Uniform in ``[keep * d, d]`` with ``d = min(max_s, base_s * 2**(step-1))``, step >= 1."""
    exponent = min(max(0, step - 1), 62)
    ceiling = min(max_s, base_s * 2.0**exponent)
    floor = ceiling * keep
    return floor + rng.uniform(0.0, ceiling - floor)
