"""What a shared budget costs per request, and why a Lua script on the server's clock.

    python -m tests.benchmarks.shared_budget_cost             # ~30 s: starts its own redis-server
    python -m tests.benchmarks.shared_budget_cost --procs 4 --seconds 3

Prints (and docs/decisions.md "Shared budget" records):

1. added latency per admission: ``RateLimiter.acquire`` + ``release`` with the Redis backend
   minus the same with the in-memory backend (limits wide open, one thread): p50 / p99;
2. the most admissions per second one Redis sustains: ``--procs`` processes hammering the
   admission script of one budget (the Python clients, not Redis, may be what saturates on a
   small machine: the server's CPU share is printed too);
3. the candidates for the atomic admission, one call each, single thread: the ``limits``
   package (``RedisStorage`` + ``MovingWindowRateLimiter``), pyrate-limiter (``RedisBucket``)
   and our ``admit.lua``: p50 / p99;
4. clock skew: two clients of the same 10-per-window limit, the second host's clock 30 s
   ahead: how many starts each library admits inside one real window (the limit is 10).

``limits`` and ``pyrate-limiter`` are not project dependencies: item 3-4 skip a library that is
not installed (``pip install limits pyrate-limiter``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

from pipeline.api.backends.redis_budget import RedisBackend
from pipeline.api.limiter import RateLimiter
from pipeline.api.limiter_backend import AdmitRule
from pipeline.config import SharedBudgetConfig, limiter_config
from pipeline.settings import ENDPOINTS, EndpointLimit, load_settings
from tests.redis_support import start_redis

OPEN = AdmitRule(window_s=60.0, budget=10**9, interval_s=0.0, max_in_flight=10**6)


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def budget_config(url: str, name: str) -> SharedBudgetConfig:
    return SharedBudgetConfig(url=url, name=name, lease_s=10.0, timeout_s=2.0)


def added_latency(url: str, n: int) -> dict[str, float]:
    settings = load_settings(
        {
            "rate_limit": 1e9,
            "min_interval_s": 0.0,
            "max_concurrency": 64,
            "endpoint_limits": {ep: EndpointLimit() for ep in ENDPOINTS},
            "adaptive": True,
        }
    )
    config = limiter_config(settings)

    def one(limiter: RateLimiter) -> None:
        limiter.acquire("tracks").release()
        limiter.on_response("tracks", 200)

    memory_limiter = RateLimiter(config)
    memory = timed(lambda: one(memory_limiter), n)
    with RedisBackend(budget_config(url, "cost"), clock=time.monotonic) as backend:
        shared_limiter = RateLimiter(config, backend=backend)
        shared = timed(lambda: one(shared_limiter), n)
    return {
        "memory_p50_us": pct(memory, 0.5) * 1e6,
        "redis_p50_us": pct(shared, 0.5) * 1e6,
        "redis_p99_us": pct(shared, 0.99) * 1e6,
        "added_p50_us": (pct(shared, 0.5) - pct(memory, 0.5)) * 1e6,
        "added_p99_us": (pct(shared, 0.99) - pct(memory, 0.99)) * 1e6,
    }


def _hammer(url: str, seconds: float, out: Any) -> None:
    with RedisBackend(budget_config(url, "rate"), clock=time.monotonic) as backend:
        count, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            lease = backend.admit("tracks", time.monotonic(), OPEN).lease
            if lease is not None:
                backend.release(lease)
                count += 1
        out.put(count)


def max_rate(url: str, procs: int, seconds: float, redis_pid: int) -> dict[str, float]:
    import psutil

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_hammer, args=(url, seconds, queue)) for _ in range(procs)]
    server = psutil.Process(redis_pid)
    cpu0 = server.cpu_times()
    for w in workers:
        w.start()
    total = sum(queue.get(timeout=seconds + 60) for _ in workers)
    for w in workers:
        w.join()
    cpu1 = server.cpu_times()
    busy = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    return {
        "procs": procs,
        "admissions_per_s": total / seconds,
        "redis_cpu_share": busy / seconds,
        "per_s_at_full_redis_cpu": total / busy if busy > 0 else float("nan"),
    }


def candidates(url: str, n: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with RedisBackend(budget_config(url, "cand"), clock=time.monotonic) as backend:

        def ours() -> None:
            lease = backend.admit("tracks", time.monotonic(), OPEN).lease
            assert lease is not None
            backend.release(lease)

        samples = timed(ours, n)
        results["admit.lua (+release)"] = {"p50_us": pct(samples, 0.5) * 1e6}
        results["admit.lua (+release)"]["p99_us"] = pct(samples, 0.99) * 1e6
    try:
        from limits import RateLimitItemPerSecond
        from limits.storage import RedisStorage
        from limits.strategies import MovingWindowRateLimiter

        storage = RedisStorage(url)
        limiter = MovingWindowRateLimiter(storage)
        item = RateLimitItemPerSecond(10**6, 60)
        samples = timed(lambda: limiter.hit(item, "bench"), n)
        results["limits moving window"] = {
            "p50_us": pct(samples, 0.5) * 1e6,
            "p99_us": pct(samples, 0.99) * 1e6,
        }
    except ImportError:
        pass
    try:
        import redis
        from pyrate_limiter import Duration, Limiter, Rate, RedisBucket

        bucket = RedisBucket.init([Rate(10**6, Duration.MINUTE)], redis.Redis.from_url(url), "b")
        plimiter = Limiter(bucket)
        samples = timed(lambda: plimiter.try_acquire("bench", blocking=False), n)
        results["pyrate-limiter RedisBucket"] = {
            "p50_us": pct(samples, 0.5) * 1e6,
            "p99_us": pct(samples, 0.99) * 1e6,
        }
    except ImportError:
        pass
    return results


def skew(url: str, ahead_s: float = 30.0) -> dict[str, int]:
    """Admitted within one real window of a 10-per-window limit, host B's clock ahead."""
    out: dict[str, int] = {}
    rule = AdmitRule(window_s=5.0, budget=10, interval_s=0.0, max_in_flight=100)
    a = RedisBackend(budget_config(url, "skew"), clock=time.monotonic)
    b = RedisBackend(budget_config(url, "skew"), clock=lambda: time.monotonic() + ahead_s)
    with a, b:
        got = [a.admit("tracks", 0.0, rule).lease for _ in range(10)]
        got += [b.admit("tracks", 0.0, rule).lease for _ in range(10)]
        out["admit.lua"] = sum(x is not None for x in got)
    try:
        import limits.storage.redis as limits_redis
        from limits import RateLimitItemPerSecond
        from limits.storage import RedisStorage
        from limits.strategies import MovingWindowRateLimiter

        lim = MovingWindowRateLimiter(RedisStorage(url))
        item = RateLimitItemPerSecond(10, 5)
        n = sum(lim.hit(item, "skew") for _ in range(10))
        real = time.time
        with mock.patch.object(limits_redis.time, "time", lambda: real() + ahead_s):
            n += sum(lim.hit(item, "skew") for _ in range(10))
        out["limits moving window"] = n
    except ImportError:
        pass
    try:
        import redis
        from pyrate_limiter import Duration, Limiter, Rate, RedisBucket

        rates = [Rate(10, 5 * Duration.SECOND)]
        conn = redis.Redis.from_url(url)

        class Ahead(RedisBucket):
            def now(self) -> int:
                return super().now() + int(ahead_s * 1000)

        host_a = Limiter(RedisBucket.init(rates, conn, "skew"))
        host_b = Limiter(Ahead.init(rates, conn, "skew"))
        n = sum(bool(host_a.try_acquire("x", blocking=False)) for _ in range(10))
        n += sum(bool(host_b.try_acquire("x", blocking=False)) for _ in range(10))
        out["pyrate-limiter RedisBucket"] = n
    except ImportError:
        pass
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=3000)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        server = start_redis(Path(tmp))
        try:
            assert server._proc is not None
            lat = added_latency(server.url, args.samples)
            print(
                "added latency per admission (acquire+release+on_response, 1 thread): "
                f"p50 {lat['added_p50_us']:.0f} us, p99 {lat['added_p99_us']:.0f} us "
                f"(redis p50 {lat['redis_p50_us']:.0f} / p99 {lat['redis_p99_us']:.0f} us, "
                f"in-memory p50 {lat['memory_p50_us']:.0f} us)"
            )
            rate = max_rate(server.url, args.procs, args.seconds, server._proc.pid)
            print(
                f"max admissions/s, one Redis, {rate['procs']} client processes: "
                f"{rate['admissions_per_s']:.0f}/s at {rate['redis_cpu_share']:.0%} of a core "
                f"for redis-server (~{rate['per_s_at_full_redis_cpu']:.0f}/s per full core)"
            )
            for name, fig in candidates(server.url, args.samples).items():
                print(f"  {name:<28} p50 {fig['p50_us']:6.0f} us  p99 {fig['p99_us']:6.0f} us")
            print("clock skew (host B 30 s ahead), starts admitted in one window, limit 10:")
            for name, n in skew(server.url).items():
                print(f"  {name:<28} {n}")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
