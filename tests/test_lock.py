"""StateLock: one run per state dir, waiting, release, unusable dirs, temp-file sweep."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.errors import StateError, StateLockedError
from pipeline.state.lock import StateLock

# -- lock ----------------------------------------------------------------------------------


def test_state_dir_creates_dir_and_lock(tmp_path: Path) -> None:
    target = tmp_path / "a" / "state"
    with StateLock(target) as sd:
        assert target.is_dir()
        assert sd.locked
        assert (target / ".lock").exists()
    assert not sd.locked


def test_second_state_dir_raises_locked(tmp_path: Path) -> None:
    with StateLock(tmp_path), pytest.raises(StateLockedError, match=r"another run holds .*\.lock"):
        StateLock(tmp_path).__enter__()


def test_second_state_dir_waits_up_to_lock_wait(tmp_path: Path) -> None:
    with StateLock(tmp_path):
        started = time.monotonic()
        with pytest.raises(StateLockedError, match=r"waited 0\.3s"):
            StateLock(tmp_path, lock_wait_s=0.3).__enter__()
        assert time.monotonic() - started >= 0.29


def test_lock_released_on_exit_allows_next_run(tmp_path: Path) -> None:
    with StateLock(tmp_path):
        pass
    with StateLock(tmp_path) as sd:
        assert sd.locked


def test_unusable_state_dir_raises_state_error(tmp_path: Path) -> None:
    # Root ignores chmod, so make the path impossible: a directory under a regular file.
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(StateError, match="cannot create state dir") as info:
        StateLock(blocker / "sub").__enter__()
    assert not isinstance(info.value, StateLockedError)


def test_taking_the_lock_removes_temp_files_of_killed_writes(tmp_path: Path) -> None:
    torn = [tmp_path / ".registry.parquet.abc.tmp", tmp_path / "t.parquet.journal" / ".e.x.tmp"]
    torn[1].parent.mkdir()
    for p in torn:
        p.write_bytes(b"half")
    kept = tmp_path / "registry.parquet"
    kept.write_bytes(b"real")
    with StateLock(tmp_path):
        assert not any(p.exists() for p in torn)
        assert kept.read_bytes() == b"real"
