"""Crash resume on object storage: SIGKILL a real run whose state and outputs live in S3.

Like ``test_reliability_crash.py`` but every byte of state and output is in a bucket of a
real S3-compatible server (moto over loopback): the killed process leaves its lease object
behind, so the resumed run must wait for the lease to expire and take it over (a short
``lock_lease_s`` keeps that to seconds). Checked after each kill: the state reads back
without quarantine, a re-run completes with ``requests(kill) + requests(resume) <= 1.05 x
requests(clean run)`` and the same outputs; and a reader loop running through the killed run
and the resume never sees a partial or mixed partition (via ``load_enriched`` and via plain
``pd.read_parquet``).
"""

# ruff: noqa: F811  (pytest fixtures imported from tests.s3_support are parameters here)
from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from pipeline import load_enriched
from pipeline.io.storage import open_storage
from pipeline.simulator import SimulatorServer
from tests.reliability_support import (
    RUN_DATE,
    USER_RATE_PER_MIN,
    catalog_ids,
    kill_when,
    run_args,
    run_to_end,
    start,
    user_rate_server,
    write_input,
    write_user_config,
)
from tests.s3_support import S3Server, s3_server  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

N_IDS = 1600
RESUME_BUDGET = 1.05
LEASE_S = 5


@dataclass
class Env:
    root: Path
    inp: Path
    cfg: Path
    sim: SimulatorServer
    s3: S3Server


@dataclass
class Clean:
    requests: int
    by_endpoint: dict[str, int]
    out: str
    wall_s: float
    rows: int


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server):
    root = tmp_path_factory.mktemp("s3crash")
    ids = catalog_ids(0, 11)[:N_IDS]
    inp = write_input(root / "in.parquet", ids, per_playlist=20, repeat_every=50)
    # The defaults plus the rate the server enforces, as in test_reliability_crash.py; a
    # short lease so each resume takes the killed run's over within seconds.
    cfg = write_user_config(
        root / "settings.toml",
        USER_RATE_PER_MIN,
        max_seed_chunks_per_playlist=2,
        lock_lease_s=LEASE_S,
        lock_wait_s=4 * LEASE_S,
    )
    with SimulatorServer(user_rate_server(seed=11)) as sim:
        yield Env(root, inp, cfg, sim, s3_server)


def _args(env: Env, name: str) -> tuple[list[str], str, str]:
    bucket = env.s3.new_bucket()
    out, state = f"s3://{bucket}/out", f"s3://{bucket}/state"
    return run_args(env.inp, out, state, env.sim.url, env.cfg), out, state  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def clean(env: Env) -> Clean:
    args, out, _ = _args(env, "clean")
    before = env.sim.counters()
    t0 = time.monotonic()
    rc = run_to_end(args, env.root / "clean.log")
    assert rc == 0, (env.root / "clean.log").read_text()
    after = env.sim.counters()
    by_ep = {
        ep: after["by_endpoint"][ep]["requests"] - before["by_endpoint"][ep]["requests"]
        for ep in ("tracks", "audio_features", "recommendation")
    }
    rows = len(load_enriched(out, date=RUN_DATE))
    return Clean(
        after["requests_total"] - before["requests_total"], by_ep, out, time.monotonic() - t0, rows
    )


@dataclass
class ReaderLoop:
    """Reads the partition over and over while runs write it; records what it saw."""

    out: str
    rows: int
    seen: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            for how, read in (("load_enriched", self._enriched), ("pandas", self._plain)):
                try:
                    df = read()
                except FileNotFoundError:
                    self.seen.append(f"{how}:absent")
                    continue
                except Exception as exc:  # a torn read would surface here
                    self.bad.append(f"{how}: {type(exc).__name__}: {exc}")
                    continue
                numbers = df["row_number"].tolist()
                if len(numbers) != self.rows or len(set(numbers)) != self.rows:
                    self.bad.append(f"{how}: {len(numbers)} rows, {len(set(numbers))} distinct")
                self.seen.append(f"{how}:whole")

    def _enriched(self) -> pd.DataFrame:
        return load_enriched(self.out, date=RUN_DATE)

    def _plain(self) -> pd.DataFrame:
        df = pd.read_parquet(f"{self.out}/tracks")
        if df.empty:
            raise FileNotFoundError(self.out)
        return df

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _requests(sim: SimulatorServer, endpoint: str) -> int:
    return int(sim.counters()["by_endpoint"][endpoint]["requests"])


def _published(out: str) -> Callable[[], bool]:
    store = open_storage(out)
    return lambda: store.exists(f"tracks/date={RUN_DATE}/part-0.parquet")


#: Each point costs ~30 s (a clean-sized run, a lease expiry, a resume), so the default suite
#: kills during one fetch stage and during publish; ``-m soak`` adds the other stages.
_SOAK = pytest.mark.soak
KILL_POINTS = [
    pytest.param("resolve-50%", "tracks", 0.5, marks=_SOAK, id="resolve-50%"),
    pytest.param("features-50%", "audio_features", 0.5, id="features-50%"),
    pytest.param(
        "recommendations-50%", "recommendation", 0.5, marks=_SOAK, id="recommendations-50%"
    ),
    pytest.param("publish", "publish", None, id="publish"),
]


@pytest.mark.parametrize(("name", "what", "fraction"), KILL_POINTS)
def test_sigkill_on_s3_then_resume(env: Env, clean: Clean, name, what, fraction) -> None:
    args, out, state = _args(env, name)
    if fraction is not None:
        base = _requests(env.sim, what)
        target = max(1, round(clean.by_endpoint[what] * fraction))
        condition = lambda: _requests(env.sim, what) - base >= target  # noqa: E731
    else:
        condition = _published(out)
    _kill_and_resume(env, clean, name, args, out, state, condition)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(10))
def test_sigkill_on_s3_at_random_moments_soak(env: Env, clean: Clean, seed: int) -> None:
    args, out, state = _args(env, f"random-{seed}")
    deadline = time.monotonic() + random.Random(seed).uniform(0.3, clean.wall_s)
    _kill_and_resume(
        env, clean, f"random-{seed}", args, out, state, lambda: time.monotonic() >= deadline
    )


def _kill_and_resume(env: Env, clean: Clean, name: str, args, out, state, condition) -> None:
    work = env.root / name
    work.mkdir(exist_ok=True)
    reader = ReaderLoop(out, clean.rows)
    total_before = env.sim.counters()["requests_total"]
    proc = start(args, work / "killed.log")
    killed = kill_when(proc, condition, timeout=90)
    if not killed and name.startswith("random-"):
        reader.stop()
        pytest.skip("the run finished before the random moment")
    assert killed, f"the run ended before {name}: {(work / 'killed.log').read_text()}"
    spent_killed = env.sim.counters()["requests_total"] - total_before
    store = open_storage(state)
    if spent_killed:  # the lock is taken before the first request (not at a kill during startup)
        assert store.exists(".lock"), "a killed run leaves its lease behind"

    t0 = time.monotonic()
    rc = run_to_end(args, work / "resume.log", timeout=180)
    resume_wall = time.monotonic() - t0
    reader.stop()
    log = (work / "resume.log").read_text()
    assert rc == 0, log
    spent = env.sim.counters()["requests_total"] - total_before
    assert not [n for n in store.list_files("") if ".corrupt-" in n], "quarantined state"
    assert not store.exists(".lock"), "the resumed run releases the lock"
    assert not reader.bad, reader.bad[:5]
    assert any(s.endswith(":whole") for s in reader.seen)
    ratio = spent / clean.requests
    line = {
        "point": name,
        "clean": clean.requests,
        "before_kill": spent_killed,
        "kill_plus_resume": spent,
        "ratio": round(ratio, 3),
        "resume_wall_s": round(resume_wall, 1),
        "reads_checked": len(reader.seen),
    }
    print(json.dumps(line))
    with (env.root / "figures.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
    assert ratio <= RESUME_BUDGET, f"{name}: {spent} requests vs clean {clean.requests}"
    for dataset, keys in (("tracks", ["row_number"]), ("recommendations", ["playlist_id", "rank"])):
        pd.testing.assert_frame_equal(
            _comparable(load_enriched(out, dataset=dataset), keys),
            _comparable(load_enriched(clean.out, dataset=dataset), keys),
        )


def _comparable(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Sorted, without the columns that name the run that wrote a row."""
    df = df.drop(columns=[c for c in ("run_id", "loaded_at") if c in df.columns])
    return df.sort_values(keys, kind="stable").reset_index(drop=True)
