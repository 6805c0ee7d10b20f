"""Hostile files given to the console script: every command that reads JSON or TOML answers with one line and exit 2,
never a traceback (exit 1) or a hang, and a transcript over a transcript.max_* limit is refused before any model runs.
The real entry point, in a subprocess."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from aftercall.core.documents import parse_json
from aftercall.core.errors import UserError
from conftest import DEMO_JSON, run_cli

NESTED = "[" * 100_000 + "]" * 100_000
HOSTILE_JSON = {  # a whole transcript file each
    "nested": ('{"turns": ' + NESTED + "}", "not valid JSON: nested too deeply"),
    "digits": ('{"turns": [{"speaker": "agent", "text": "hi", "start": ' + "9" * 5000 + "}]}",
               "not valid JSON: a number has more than 4300 digits"),
    "surrogate": ('{"turns": [{"speaker": "customer", "text": "my card \\ud800 is blocked"}]}',
                  "not valid JSON: a string holds a lone UTF-16 surrogate"),
}
HOSTILE_TOML = {
    "nested": ("x = " + NESTED, "not valid TOML (nested too deeply)"),
    "digits": ("x = " + "9" * 5000, "not valid TOML (a number has more than 4300 digits)"),
}
# Every command that reads a config file the user names (`bench` reads none).
CONFIG_COMMANDS = (["summarise", DEMO_JSON], ["eval", DEMO_JSON], ["serve", "--listen", "127.0.0.1:0"],
                   ["keys", "list"], ["audit", "verify"], ["erase", "--call-id", "c-1"], ["retention", "run"],
                   ["tokens", "issue", "someone"])


def _refused(result, *fragments: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert all(fragment in lines[0] for fragment in fragments), lines[0]
    return lines[0]


@pytest.mark.parametrize("kind", HOSTILE_JSON)
def test_a_hostile_transcript_is_one_line_and_exit_2(tmp_path: Path, kind):
    text, message = HOSTILE_JSON[kind]
    path = tmp_path / "call.json"
    path.write_text(text)
    _refused(run_cli("summarise", path), f"transcript {path}: {message}")


@pytest.mark.parametrize("kind", HOSTILE_JSON)
def test_a_hostile_gold_case_is_one_line_and_exit_2(tmp_path: Path, kind):
    text, message = HOSTILE_JSON[kind]
    (tmp_path / "gold.jsonl").write_text(json.dumps({"turns": [{"speaker": "agent", "text": "hi"}]}) + "\n" + text)
    _refused(run_cli("eval", tmp_path / "gold.jsonl", "--out", tmp_path / "report"), "gold.jsonl:2", message)


@pytest.mark.parametrize("kind", HOSTILE_TOML)
def test_a_hostile_taxonomy_is_one_line_and_exit_2(tmp_path: Path, kind):
    text, message = HOSTILE_TOML[kind]
    path = tmp_path / "taxonomy.toml"
    path.write_text("[[disposition]]\ncode = 'A'\nlabel = 'a'\ndescription = 'a'\n" + text)
    _refused(run_cli("summarise", DEMO_JSON, "--taxonomy", path), f"{path}: {message}")
    _refused(run_cli("eval", DEMO_JSON, "--taxonomy", path, "--out", tmp_path / "report"), f"{path}: {message}")
    path.write_text("disposition = [1, 2]\n")  # well-formed TOML, not a taxonomy
    _refused(run_cli("summarise", DEMO_JSON, "--taxonomy", path), "disposition[0] must be a table")


@pytest.mark.parametrize("kind", HOSTILE_TOML)
def test_a_hostile_config_file_is_one_line_and_exit_2_for_every_command(tmp_path: Path, kind):
    text, message = HOSTILE_TOML[kind]
    path = tmp_path / "aftercall.toml"
    path.write_text(text)
    for command in CONFIG_COMMANDS:
        _refused(run_cli(*command, "--config", path), f"config {path}: {message}")


def test_a_huge_transcript_is_refused_at_once_naming_the_limit(tmp_path: Path):
    path = tmp_path / "huge.json"
    path.write_text(json.dumps({"turns": [{"speaker": "customer", "text": "and then " * 1_200_000}]}))
    assert path.stat().st_size > 10_000_000  # 10.8 MB in one turn: it used to hold the CPU for hours
    started = time.monotonic()
    result = run_cli("summarise", path, timeout=60)
    assert time.monotonic() - started < 20
    _refused(result, f"transcript {path} is 10.3 MB, more than transcript.max_mb = 1")


@pytest.mark.parametrize("turns, environ, message", [
    ([{"speaker": "agent", "text": "hello"}] * 3, {"AFTERCALL_TRANSCRIPT__MAX_TURNS": "2"},
     "transcript has 3 turns, more than transcript.max_turns = 2"),
    ([{"speaker": "agent", "text": "hello"}] * 5001, {}, "transcript has 5001 turns, more than transcript.max_turns = "
                                                         "5000"),
    ([{"speaker": "agent", "text": "hi"}, {"speaker": "customer", "text": "x" * 150}],
     {"AFTERCALL_TRANSCRIPT__MAX_TURN_CHARS": "100"},
     "turns[1].text is 150 characters, more than transcript.max_turn_chars = 100"),
    ([{"speaker": "customer", "text": "y" * 20_001}], {},
     "turns[0].text is 20001 characters, more than transcript.max_turn_chars = 20000"),
])
def test_transcript_limits_are_configured_and_named(tmp_path: Path, turns, environ, message):
    path = tmp_path / "call.json"
    path.write_text(json.dumps({"turns": turns}))
    _refused(run_cli("summarise", path, env=environ), message)
    (tmp_path / "gold").mkdir()
    (tmp_path / "gold" / "case.json").write_text(json.dumps({"id": "long", "turns": turns}))
    _refused(run_cli("eval", tmp_path / "gold", "--out", tmp_path / "report", env=environ), "case.json (long)",
             message)


def test_a_transcript_at_the_limits_is_summarised(tmp_path: Path):
    path = tmp_path / "call.json"
    path.write_text(json.dumps({"turns": [{"speaker": "customer", "text": "I need to cancel my direct debit."}] * 2}))
    result = run_cli("summarise", path, "--quiet", env={"AFTERCALL_TRANSCRIPT__MAX_TURNS": "2",
                                                       "AFTERCALL_TRANSCRIPT__MAX_TURN_CHARS": "100"})
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["transcript"]) == 2


def test_surrogate_pairs_are_text_and_lone_surrogates_are_not():
    assert parse_json('"\\ud83d\\ude00 and \\\\ud800"', "x") == "\U0001F600 and \\ud800"
    for text in ('"\\ud800"', '["\\udfff"]', '{"\\ud800": 1}', '"\\ude00\\ud83d"'):
        with pytest.raises(UserError, match="lone UTF-16 surrogate"):
            parse_json(text, "x")
