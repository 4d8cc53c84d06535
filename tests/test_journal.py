"""The journal: cheap saves between full rewrites, replay after a kill, crash windows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.state_support import FakeClock, all_rows, make, rows


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_journal_saves_only_new_rows_and_a_reload_replays_them(tmp_path: Path, clock) -> None:
    t = make(tmp_path, clock)
    t.put(rows(["a", "b"], value=[1, 2]))
    assert t.journal() == 2
    assert t.journal() == 0  # nothing new since
    t.put(rows(["a"], value=[10]))  # a later answer for a key already journaled
    assert t.journal() == 1
    assert not (tmp_path / "t.parquet").exists()  # no full rewrite happened
    assert len(list((tmp_path / "t.parquet.journal").glob("*.parquet"))) == 2
    again = make(tmp_path, clock)  # what a run killed now would find
    back = all_rows(again, ["a", "b"])
    values = dict(zip(back["id"], back["value"], strict=True))
    assert values == {"a": 10, "b": 2}  # replayed in order: last write wins


def test_checkpoint_folds_the_journal_into_the_file(tmp_path: Path, clock) -> None:
    t = make(tmp_path, clock)
    t.put(rows(["a"], value=[1]))
    t.journal()
    t.put(rows(["b"], value=[2]))
    assert t.checkpoint() == 2
    assert list((tmp_path / "t.parquet.journal").glob("*.parquet")) == []
    assert t.checkpoint() == 0
    again = make(tmp_path, clock)
    assert sorted(all_rows(again, ["a", "b"])["id"]) == ["a", "b"]
    assert again.checkpoint() == 0  # nothing to replay, nothing to rewrite


def test_crash_between_rewrite_and_journal_deletion_keeps_the_newer_value(
    tmp_path: Path, clock
) -> None:
    t = make(tmp_path, clock)
    t.put(rows(["a"], value=[1]))
    t.journal()
    stale = {p.name: p.read_bytes() for p in (tmp_path / "t.parquet.journal").glob("*.parquet")}
    t.put(rows(["a"], value=[2]))  # newer, not journaled: only the rewrite has it
    t.checkpoint()
    for name, data in stale.items():  # as if the run died before deleting the journal
        ((tmp_path / "t.parquet.journal") / name).write_bytes(data)
    again = make(tmp_path, clock)
    assert (
        all_rows(again, ["a"]).set_index("id").loc["a", "value"] == 2
    )  # the old entry is not replayed


def test_corrupt_journal_entry_is_quarantined_and_the_rest_replayed(
    tmp_path: Path, clock, caplog
) -> None:
    t = make(tmp_path, clock)
    t.put(rows(["a"], value=[1]))
    t.journal()
    t.put(rows(["b"], value=[2]))
    t.journal()
    first = sorted((tmp_path / "t.parquet.journal").glob("*.parquet"))[0]
    first.write_bytes(b"torn")
    again = make(tmp_path, clock)
    assert sorted(all_rows(again, ["a", "b"])["id"]) == ["b"]
    assert len(list((tmp_path / "t.parquet.journal").glob("*.corrupt-*"))) == 1
    assert "quarantined" in caplog.text


def test_journal_replay_keeps_multi_row_replacement(tmp_path: Path, clock) -> None:
    t = make(tmp_path, clock, multi_row=True)
    t.put(rows(["k", "k"], value=[1, 2]))
    t.journal()
    t.put(rows(["k"], value=[3]))  # replaces both rows of k
    t.journal()
    again = make(tmp_path, clock, multi_row=True)
    assert again.fresh(["k"])["value"].tolist() == [3]


def test_an_entry_written_after_the_wall_clock_stepped_back_is_still_replayed(
    tmp_path: Path, clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entry names start with the wall clock's nanoseconds (they order entries across runs),
    and a checkpoint marks the last entry it folded in. An NTP step or a resumed VM puts the
    clock back: an entry named by it sorted below the marker and was skipped on replay."""
    import pipeline.state.journal as journal

    now = [2_000_000_000_000_000_000]
    monkeypatch.setattr(journal.time, "time_ns", lambda: now[0])
    t = make(tmp_path, clock)
    t.put(rows(["a"], value=[1]))
    t.journal()
    t.checkpoint()  # the marker: the entry named at 2e18
    now[0] -= 10**15  # the clock steps back 11.6 days (any step back does it)
    t.put(rows(["b"], value=[2]))
    t.journal()
    again = make(tmp_path, clock)  # a kill now: the entry must be replayed
    assert sorted(all_rows(again, ["a", "b"])["id"]) == ["a", "b"]
