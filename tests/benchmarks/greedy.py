"""The greedy client the issue compares against: batch calls on 5 threads, no throttle.

It does the same calls as the pipeline (tracks, then audio features, then recommendations,
stage after stage) but sends as fast as its threads allow; on a 429 the thread that got it
sleeps ``Retry-After`` and retries, on its own (no shared cool-down). Deliberately small:
this is the baseline, not a second pipeline.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import requests

THREADS = 5
BATCH = 40
SEEDS = 5
MAX_CHUNKS = 4


@dataclass
class GreedyResult:
    attempts: int = 0
    status_429: int = 0
    retry_after_slept_s: float = 0.0
    wall_s: float = 0.0
    finished: bool = True
    timeline: list[tuple[float, str, int, float]] = field(default_factory=list)


class Greedy:
    def __init__(self, base_url: str, deadline_s: float) -> None:
        self.base = base_url
        self.res = GreedyResult()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._t0 = time.monotonic()
        self._deadline = self._t0 + deadline_s

    def _session(self) -> requests.Session:
        s = getattr(self._local, "s", None)
        if s is None:
            s = self._local.s = requests.Session()
        return s

    def get(self, endpoint: str, path: str, params: dict[str, str]) -> Any:
        while time.monotonic() < self._deadline:
            t = time.monotonic()
            r = self._session().get(self.base + path, params=params, timeout=60)
            with self._lock:
                self.res.attempts += 1
                self.res.timeline.append(
                    (t - self._t0, endpoint, r.status_code, time.monotonic() - t)
                )
            if r.status_code == 429:
                wait = float(r.headers.get("Retry-After", "1"))
                with self._lock:
                    self.res.status_429 += 1
                    self.res.retry_after_slept_s += wait
                time.sleep(wait)
                continue
            if r.status_code == 404:
                return {"content": []}
            r.raise_for_status()
            return r.json()
        self.res.finished = False
        return {"content": []}

    def run(self, rows: pd.DataFrame) -> GreedyResult:
        ids = list(pd.unique(rows["spotify_track_id"]))
        chunks = [ids[i : i + BATCH] for i in range(0, len(ids), BATCH)]
        found: set[str] = set()
        with ThreadPoolExecutor(THREADS) as pool:
            for body in pool.map(
                lambda c: self.get("tracks", "/v1/track", {"ids": ",".join(c)}), chunks
            ):
                found.update(_spotify_ids(body))
            ordered = [s for s in ids if s in found]
            chunks = [ordered[i : i + BATCH] for i in range(0, len(ordered), BATCH)]
            list(
                pool.map(
                    lambda c: self.get(
                        "audio_features", "/v1/audio-features", {"ids": ",".join(c)}
                    ),
                    chunks,
                )
            )
            seed_sets = []
            for _, group in rows.groupby("playlist_id", sort=True):
                seeds = [s for s in pd.unique(group["spotify_track_id"]) if s in found]
                n = min(math.ceil(len(seeds) / SEEDS), MAX_CHUNKS)
                seed_sets += [seeds[i * SEEDS : (i + 1) * SEEDS] for i in range(n)]
            list(
                pool.map(
                    lambda s: self.get(
                        "recommendation",
                        "/v1/track/recommendation",
                        {"seeds": ",".join(s), "size": "20"},
                    ),
                    seed_sets,
                )
            )
        self.res.wall_s = time.monotonic() - self._t0
        return self.res


def _spotify_ids(body: Any) -> list[str]:
    items = body.get("content", []) if isinstance(body, dict) else []
    return [str(i.get("href", "")).rsplit("/", 1)[-1] for i in items]


def run_greedy(base_url: str, rows: pd.DataFrame, deadline_s: float) -> GreedyResult:
    return Greedy(base_url, deadline_s).run(rows)
