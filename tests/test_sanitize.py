"""Issue 11, class 6: the terminal shows only our words.

Unit tests of ``clean_text``, then the CLI end to end: a server error body carrying terminal
escapes and a newline that forges ``reccobeats-etl: error: ...`` reaches stderr escaped, on
the lines we wrote (``responses`` plays the API over https).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import responses

from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.sanitize import clean_text
from tests.conftest import fast_config_toml

BASE = "https://api.reccobeats.test"
FORGED = "\x1b[2J\x1b]8;;http://evil\x07click\x1b]8;;\x07\r\nreccobeats-etl: error: forged"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text, ünïcode and emoji 🎵", "plain text, ünïcode and emoji 🎵"),
        ("a\nb", "a\\nb"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("del\x7f c1\x9b", "del\\x7f c1\\x9b"),
        ("bidi \u202egnp.exe", "bidi \\u202egnp.exe"),
        ("line\u2028sep", "line\\u2028sep"),
    ],
)
def test_clean_text_escapes_control_characters_and_keeps_the_rest(raw, shown):
    assert clean_text(raw) == shown
    assert clean_text(clean_text(raw)) == shown  # idempotent


def test_clean_text_cuts_before_escaping():
    assert clean_text("x" * 10, limit=4) == "xxxx..."


def test_every_product_error_message_is_clean():
    assert str(InputError(f"file {FORGED}")).count("\n") == 0
    assert "\x1b" not in str(InputError(FORGED))


@responses.activate
def test_a_hostile_error_body_reaches_stderr_escaped(tmp_path, capsys, catalog):
    ids = sorted(catalog.known_spotify_ids)[:3]
    inp = tmp_path / "in.parquet"
    pd.DataFrame({"track_id": ids}).to_parquet(inp, index=False)
    body = json.dumps({"status": 4031, "error": FORGED, "path": "uri=/v1/track"})
    responses.add(responses.GET, f"{BASE}/v1/track", body=body, status=403,
                  content_type="application/json")  # fmt: skip
    cfg = fast_config_toml(tmp_path / "settings.toml")
    rc = main(
        ["run", "--input", str(inp), "--output", str(tmp_path / "out"), "--state-dir",
         str(tmp_path / "state"), "--base-url", BASE, "--config", str(cfg), "--date",
         "2024-06-01", "--no-progress", "--no-recommendations"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 3, err
    assert "\x1b" not in err and "\x07" not in err and "\r" not in err
    assert not any(line.startswith("reccobeats-etl: error: forged") for line in err.splitlines())
    assert "\\x1b[2J" in err  # shown, escaped: the operator still sees what came back


def test_file_names_in_messages_are_escaped(tmp_path, capsys):
    bad = tmp_path / "evil\x1b[2Jname\nreccobeats-etl: error: forged.parquet"
    bad.write_text("not parquet")
    cfg = fast_config_toml(tmp_path / "settings.toml")
    rc = main(["run", "--input", str(bad), "--output", str(tmp_path / "out"), "--state-dir",
               str(tmp_path / "state"), "--config", str(cfg), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    assert "\x1b" not in err
    assert [line for line in err.splitlines() if line.startswith("reccobeats-etl:")] == [
        line for line in err.splitlines() if line.startswith("reccobeats-etl: error: ") and
        "forged.parquet" in line
    ]  # fmt: skip
    assert Path(bad).exists()
