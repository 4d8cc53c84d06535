"""Issue 11, class 1: a negative answer is cached only when the API really gave it.

The real simulator over loopback plays servers that are not the API's healthy self: one
that answers 400 (with a validation body) to every request, a proxy's HTML 404 page, a
JSON 200 of the wrong content type. After each, nothing is recorded as "missing", the run
fails (exit 3, or 7 when not one request was answered) and a healthy run on the same state
dir asks every ID again and finds them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.simulator import SimulatorConfig, SimulatorServer
from pipeline.stages.bisect import budget_for
from tests.conftest import FAST_SIM_RATE, fast_config_toml
from tests.reliability_support import RUN_DATE, catalog_ids

pytestmark = pytest.mark.integration


def _run(tmp_path: Path, url: str, inp: Path) -> int:
    cfg = fast_config_toml(tmp_path / "settings.toml", max_retries=1)
    return main(
        ["run", "--input", str(inp), "--output", str(tmp_path / "out"), "--state-dir",
         str(tmp_path / "state"), "--base-url", url, "--config", str(cfg), "--date", RUN_DATE,
         "--no-progress", "-q", "--no-recommendations"]
    )  # fmt: skip


def _registry(tmp_path: Path) -> pd.DataFrame:
    path = tmp_path / "state" / "registry.parquet"
    if not path.exists():
        journal = sorted((tmp_path / "state" / "registry.parquet.journal").glob("*.parquet"))
        if not journal:
            return pd.DataFrame({"spotify_id": [], "status": []})
        return pd.concat([pq.read_table(j).to_pandas() for j in journal])
    return pq.read_table(path).to_pandas()


def _config(**faults: object) -> SimulatorConfig:
    return SimulatorConfig(rate_per_window=FAST_SIM_RATE, burst=0, **faults)  # type: ignore[arg-type]


def _healthy_rerun_finds_them(tmp_path: Path, inp: Path, known: set[str]) -> None:
    with SimulatorServer(_config()) as healthy:
        assert _run(tmp_path, healthy.url, inp) == 0
        asked = healthy.counters()["by_endpoint"]["tracks"]["requests"]
    registry = _registry(tmp_path).drop_duplicates("spotify_id", keep="last")
    found = set(registry.loc[registry["status"] == "found", "spotify_id"])
    assert known <= found
    assert asked >= 1


@pytest.mark.parametrize(
    "fault",
    [{"reject_all": True}, {"html_404": True}],
    ids=["400-to-everything", "html-404-page"],
)
def test_a_server_that_is_not_the_api_records_nothing_as_missing(tmp_path, fault, capsys):
    ids = catalog_ids(0, 0)[:120]  # 3 chunks of 40
    inp = tmp_path / "in.parquet"
    pd.DataFrame({"track_id": ids}).to_parquet(inp, index=False)
    with SimulatorServer(_config(**fault)) as hostile:
        known = set(hostile.catalog.known_spotify_ids) & set(ids)
        rc = _run(tmp_path, hostile.url, inp)
        requests = hostile.counters()["by_endpoint"]["tracks"]["requests"]
    err = capsys.readouterr().err
    assert rc in (3, 7), err  # a failure, not a clean run
    assert "Traceback" not in err
    registry = _registry(tmp_path)
    assert not (registry["status"] == "missing").any(), "a failure was cached as 'not found'"
    # bounded: never 2N-1 requests per chunk (79 for 40 IDs): at most one bisection budget
    # per chunk in flight when the first one proved the endpoint rejects everything
    assert requests <= 3 * (1 + budget_for(40)) + 2, requests
    _healthy_rerun_finds_them(tmp_path, inp, known)
