"""Issue 11, class 3 (OS errors): every OS error on the output gets one line, its documented
exit code (8) and a run report if one can still be written; the old partition survives.

Real simulator over loopback, through ``pipeline.cli.main``. The full disk is a fake
filesystem layer (``pyarrow.parquet.write_table`` failing with ``ENOSPC`` for files under the
output dir only: the state dir keeps working, as when only the output volume is full); the
blocked path is a real OS error (a regular file where the dataset directory must go).
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.io.writer import load_enriched
from tests.conftest import fast_config_toml
from tests.reliability_support import RUN_DATE

pytestmark = pytest.mark.integration


def _run(tmp_path: Path, url: str, inp: Path) -> int:
    cfg = fast_config_toml(tmp_path / "settings.toml")
    return main(
        ["run", "--input", str(inp), "--output", str(tmp_path / "out"), "--state-dir",
         str(tmp_path / "state"), "--base-url", url, "--config", str(cfg), "--date", RUN_DATE,
         "--no-progress", "-q", "--no-recommendations"]
    )  # fmt: skip


def _error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("reccobeats-etl: error:")]
    assert len(lines) == 1, err
    return lines[0]


def _input(tmp_path: Path, ids: list[str]) -> Path:
    inp = tmp_path / "in.parquet"
    pd.DataFrame({"track_id": ids}).to_parquet(inp, index=False)
    return inp


def test_disk_full_while_publishing_is_one_line_exit_8_and_the_old_partition_survives(
    tmp_path, capsys, monkeypatch, simulator, catalog
):
    ids = sorted(catalog.known_spotify_ids)[:20]
    inp = _input(tmp_path, ids)
    assert _run(tmp_path, simulator.url, inp) == 0
    before = load_enriched(tmp_path / "out", RUN_DATE)
    capsys.readouterr()

    out = (tmp_path / "out").resolve()
    real_write = pq.write_table

    def full_disk(table, where, *args, **kwargs):
        name = where if isinstance(where, str | Path) else getattr(where, "name", None)
        if isinstance(name, str | Path) and out in Path(name).resolve().parents:
            raise OSError(errno.ENOSPC, "No space left on device", str(name))
        return real_write(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", full_disk)
    inp = _input(tmp_path, ids + sorted(catalog.known_spotify_ids)[20:25])  # a new day's input
    rc = _run(tmp_path, simulator.url, inp)
    line = _error_line(capsys.readouterr().err)
    assert rc == 8, line
    assert "No space left on device" in line and "report:" in line
    monkeypatch.undo()
    after = load_enriched(tmp_path / "out", RUN_DATE)
    pd.testing.assert_frame_equal(after, before)  # the published partition is untouched
    reports = sorted((tmp_path / "out" / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    last = json.loads(reports[-1].read_text())
    assert last["status"] == "write_failed" and last["exit_code"] == 8


def test_a_blocked_output_path_at_publish_is_one_line_exit_8(tmp_path, capsys, simulator, catalog):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "tracks").write_text("a file where the dataset dir must go")
    inp = _input(tmp_path, sorted(catalog.known_spotify_ids)[:5])
    rc = _run(tmp_path, simulator.url, inp)
    line = _error_line(capsys.readouterr().err)
    assert rc == 8, line
    assert "tracks" in line
