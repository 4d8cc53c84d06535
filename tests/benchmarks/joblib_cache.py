"""Measure: request-level caching (joblib.Memory) vs our entity caches on an incremental night.

Night 1 resolves N tracks in chunks of 40; night 2 sees the same list with 5 % new tracks
mixed in (playlists grow in place). joblib.Memory keys on the call's arguments, i.e. the
chunk's exact composition, so almost every chunk of night 2 misses; the entity caches key on
each track and only the new ones are asked. Run: python -m tests.benchmarks.joblib_cache
"""

from __future__ import annotations

import math
import random
import string
import tempfile
import time

import joblib

CHUNK = 40


def _ids(n: int, rng: random.Random) -> list[str]:
    alphabet = string.ascii_letters + string.digits
    return ["".join(rng.choice(alphabet) for _ in range(22)) for _ in range(n)]


def main(n: int = 10_000, new_fraction: float = 0.05) -> None:
    rng = random.Random(1)
    night1 = _ids(n, rng)
    night2 = list(night1)
    for new_id in _ids(int(n * new_fraction), rng):
        night2.insert(rng.randrange(len(night2) + 1), new_id)
    calls = {"n": 0}

    with tempfile.TemporaryDirectory() as tmp:
        memory = joblib.Memory(tmp, verbose=0)

        @memory.cache
        def fetch_chunk(ids: tuple[str, ...]) -> list[str]:
            calls["n"] += 1
            return list(ids)

        for night in (night1, night2):
            calls["n"] = 0
            t0 = time.perf_counter()
            for i in range(0, len(night), CHUNK):
                fetch_chunk(tuple(night[i : i + CHUNK]))
            print(
                f"joblib.Memory: {len(night):>6} ids -> {calls['n']:>4} calls "
                f"({time.perf_counter() - t0:.2f}s, cache files are pickles)"
            )
    new = set(night2) - set(night1)
    print(f"entity cache : night 2 -> {math.ceil(len(new) / CHUNK):>4} calls ({len(new)} new ids)")


if __name__ == "__main__":
    main()
