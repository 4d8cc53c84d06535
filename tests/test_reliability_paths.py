"""Issue 11, classes 4, 5 and 6: inputs are what the user meant, the published partition is
never absent, nothing outside the state and output dirs is touched.

Through ``pipeline.cli.main`` (the way cron and Airflow call the job) against the real
simulator over loopback; the partition test watches the real renames of a real publish.
"""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.io.schemas import RECOMMENDATION_SCHEMA
from pipeline.io.writer import load_enriched, write_partition
from tests.conftest import fast_config_toml
from tests.reliability_support import RUN_DATE, one_line_error

pytestmark = pytest.mark.integration

NOWHERE = "http://127.0.0.1:9"  # never called: these runs are refused before any request


def _run(tmp_path: Path, inp: Path, out: Path, state: Path, url: str = NOWHERE, *extra: str):
    cfg = fast_config_toml(tmp_path / "settings.toml")
    argv = ["run", "--input", str(inp), "--output", str(out), "--state-dir", str(state)]
    argv += ["--base-url", url, "--config", str(cfg), "--date", RUN_DATE, "--no-progress", "-q"]
    return main([*argv, *extra])


def _input(path: Path, ids: list[str], playlists: list[object] | None = None) -> Path:
    data: dict[str, object] = {"track_id": ids}
    if playlists is not None:
        data["playlist_id"] = playlists
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(data).to_parquet(path, index=False)
    return path


# -- class 4: inputs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layout",
    ["output_in_input", "state_in_input", "input_in_output", "same_dir_via_symlink"],
)
def test_overlapping_input_and_output_or_state_is_refused(tmp_path, capsys, catalog, layout):
    ids = sorted(catalog.known_spotify_ids)[:5]
    data = tmp_path / "data"
    out, state = tmp_path / "out", tmp_path / "state"
    if layout == "output_in_input":
        inp, out = data, data / "out"
    elif layout == "state_in_input":
        inp, state = data, data / ".state"
    elif layout == "input_in_output":
        inp = out / "exports"
    else:
        (tmp_path / "alias").symlink_to(data, target_is_directory=True)
        data.mkdir()
        inp, out = data, tmp_path / "alias" / "out"
    _input(inp / "part.parquet", ids)
    rc = _run(tmp_path, inp, out, state)
    one_line_error(capsys, rc, 2, "overlaps the input")


def test_directory_input_reads_parquet_by_content_and_skips_sidecars(
    tmp_path, capsys, simulator, catalog
):
    ids = sorted(catalog.known_spotify_ids)[:30]
    exports = tmp_path / "exports"
    _input(exports / "part-00000", ids[:10])  # Spark: no extension
    _input(exports / "part-00001.PARQUET", ids[10:20])  # upper-case extension
    _input(exports / "sub" / "part-00002.snappy.parquet", ids[20:])
    (exports / "_SUCCESS").write_bytes(b"")
    (exports / ".part-00000.crc").write_bytes(b"\x00crc")
    (exports / "part-00001.crc").write_bytes(b"\x00crc")
    (exports / "README.txt").write_text("not data\n")
    out = tmp_path / "out"
    rc = _run(tmp_path, exports, out, tmp_path / "state", simulator.url, "--no-recommendations")
    err = capsys.readouterr().err
    assert rc == 0, err
    tracks = load_enriched(out, RUN_DATE)
    assert sorted(tracks["spotify_id"]) == ids  # every row of every Parquet file
    assert "README.txt" in err and "not Parquet" in err  # the skipped file is named


def test_a_playlist_named_like_the_internal_group_keeps_its_id(
    tmp_path, capsys, simulator, catalog
):
    ids = sorted(catalog.known_spotify_ids)[:10]
    inp = _input(tmp_path / "in.parquet", ids, ["__all__"] * 5 + ["other"] * 5)
    out = tmp_path / "out"
    rc = _run(tmp_path, inp, out, tmp_path / "state", simulator.url)
    assert rc == 0, capsys.readouterr().err
    recs = load_enriched(out, RUN_DATE, "recommendations")
    assert set(recs["playlist_id"]) == {"__all__", "other"}  # no null playlist ids


def test_a_user_column_that_looks_like_a_pandas_index_is_data(tmp_path, simulator, catalog):
    ids = sorted(catalog.known_spotify_ids)[:3]
    inp = tmp_path / "in.parquet"
    pq.write_table(pa.table({"track_id": ids, "__index_level_0__": ["a", "b", "c"]}), inp)
    out = tmp_path / "out"
    rc = _run(tmp_path, inp, out, tmp_path / "state", simulator.url, "--no-recommendations")
    assert rc == 0
    extra = load_enriched(out, RUN_DATE)["input_extra"].map(json.loads)  # schema contract
    assert [e["__index_level_0__"] for e in extra] == ["a", "b", "c"]


# -- class 5: the published partition is never absent -----------------------------------------


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"playlist_id": [f"p{i}" for i in range(n)], "rank": range(1, n + 1)})


@pytest.mark.parametrize("exchange_syscall", [True, False], ids=["renameat2", "replace"])
def test_partition_is_present_and_whole_after_every_rename(tmp_path, monkeypatch, exchange_syscall):
    """After each filesystem switch of a re-publish, the date has the old rows or the new
    ones: a kill between any two steps can never leave the date absent."""
    day = date(2024, 6, 1)
    final = write_partition(_frame(3), tmp_path, "recommendations", day, RECOMMENDATION_SCHEMA)
    seen: list[int] = []

    def check() -> None:
        assert Path(final).is_dir(), "the partition is absent between two renames"
        seen.append(len(load_enriched(tmp_path, day, "recommendations")))

    def spying(real):
        def spy(*args, **kwargs):
            result = real(*args, **kwargs)
            check()
            return result

        return spy

    monkeypatch.setattr(os, "rename", spying(os.rename))
    monkeypatch.setattr(os, "replace", spying(os.replace))
    try:
        from pipeline.io import exchange
    except ImportError:  # the code before issue 11 had no exchange step
        exchange = None
    if exchange is not None:
        if exchange_syscall and exchange._renameat2 is not None:
            monkeypatch.setattr(exchange, "_renameat2", spying(exchange._renameat2))
        else:
            monkeypatch.setattr(exchange, "_renameat2", None)
    write_partition(_frame(5), tmp_path, "recommendations", day, RECOMMENDATION_SCHEMA)
    assert seen and set(seen) <= {3, 5}
    assert len(load_enriched(tmp_path, day, "recommendations")) == 5
    assert [p.name for p in Path(final).parent.iterdir()] == [Path(final).name]  # no litter


# -- class 6: nothing outside the state and output dirs ---------------------------------------


def test_a_symlink_in_the_state_dir_is_refused_and_nothing_outside_is_touched(
    tmp_path, capsys, catalog
):
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "00000000000000000001-1-000000.parquet"
    victim.write_bytes(b"not parquet: would be quarantined (renamed) by the journal replay")
    (outside / "registry.parquet").write_bytes(b"precious")
    state = tmp_path / "state"
    state.mkdir()
    (state / "tracks.parquet.journal").symlink_to(outside, target_is_directory=True)
    (state / "registry.parquet").symlink_to(outside / "registry.parquet")
    inp = _input(tmp_path / "in.parquet", sorted(catalog.known_spotify_ids)[:3])
    rc = _run(tmp_path, inp, tmp_path / "out", state)
    one_line_error(capsys, rc, 5, "symlink", "state dir")
    assert sorted(p.name for p in outside.iterdir()) == sorted([victim.name, "registry.parquet"])
    assert (outside / "registry.parquet").read_bytes() == b"precious"


def test_a_symlink_in_the_output_dir_is_refused(tmp_path, capsys, catalog):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "tracks").symlink_to(elsewhere, target_is_directory=True)
    inp = _input(tmp_path / "in.parquet", sorted(catalog.known_spotify_ids)[:3])
    rc = _run(tmp_path, inp, out, tmp_path / "state")
    one_line_error(capsys, rc, 2, "symlink", "output")
    assert list(elsewhere.iterdir()) == []
