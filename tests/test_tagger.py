"""The redaction tagger: the learned second opinion after the rules, its shipped weights and its training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aftercall.config import load_config
from aftercall.core.transcript import Transcript, Turn
from aftercall.pipeline import build_redactor
from aftercall.redact import Redactor
from aftercall.redact.tagger import WEIGHTS, WEIGHTS_SHA256, Tagger, shipped_tagger

SETS = Path(__file__).parent / "redaction_calls"


def redacted(redactor: Redactor, *turns: tuple[str, str]) -> list[str]:
    transcript = Transcript(tuple(Turn(speaker, text) for speaker, text in turns))
    return [t.text for t in redactor.redact_transcript(transcript).transcript.turns]


# Values the rules leave (in part) in the clear: digits misheard as words, a month corrected after a read-back; with
# the words that must not survive in each turn.
GARBLED = [
    ([("agent", "and the three digits on the back please"), ("customer", "it's for to seven")],
     {1: ("for", "to", "seven", "7")}),
    ([("agent", "what is your date of birth"), ("customer", "third of may nineteen sixty"),
      ("agent", "sorry was that may"), ("customer", "no june")], {2: ("may",), 3: ("june",)}),
]


@pytest.mark.parametrize("turns, gone", GARBLED)
def test_the_model_redacts_what_the_rules_leave(turns, gone):
    rules_only = redacted(Redactor(tagger=None), *turns)
    both = redacted(Redactor(), *turns)
    assert any(word in rules_only[turn].split() for turn, words in gone.items() for word in words)
    for turn, words in gone.items():
        assert not set(words) & set(both[turn].replace("?", " ").split()), both


def test_what_the_rules_know_is_no_id_stays():
    turns = [("agent", "and the card number"),
             ("customer", "three seven eight two eight two two four six three one oh oh oh five"),
             ("agent", "and the four digits on the front"), ("customer", "seven seven oh two"),
             ("agent", "got it seven seven oh two the hundred and three dollars is paid your order reference is four "
                       "four oh nine one and it ships on monday the second")]
    last = redacted(Redactor(), *turns)[-1]
    assert "7702" not in last and "103 dollars" in last and "44091" in last and "monday the second" in last


def test_the_summary_recheck_uses_the_rules_only():
    text = "The caller read it's for to seven for the code; order 44091 ships Monday."
    assert Redactor().redact_text(text) == Redactor(tagger=None).redact_text(text)


def test_a_site_turns_the_model_off_with_threshold_one():
    turns = GARBLED[0][0]
    default = build_redactor(load_config(None, {}))
    off = build_redactor(load_config(None, {"AFTERCALL_REDACT__TAGGER_THRESHOLD": "1.0"}))
    assert redacted(default, *turns) == redacted(Redactor(), *turns)
    assert redacted(off, *turns) == redacted(Redactor(tagger=None), *turns)


def test_changed_weights_are_refused(tmp_path: Path):
    assert shipped_tagger().weights  # the shipped file matches its sha256
    copy = tmp_path / "tagger.json"
    model = json.loads(WEIGHTS.read_text())
    model["weights"]["bias"] = model["weights"].get("bias", 0.0) + 1.0
    copy.write_text(json.dumps(model))
    with pytest.raises(RuntimeError, match="sha256"):
        Tagger.from_file(copy, WEIGHTS_SHA256)


def train(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aftercall.redact.training", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_training_reads_tune_halves_only_and_is_deterministic(tmp_path: Path):
    source = SETS / "spoken_ids.jsonl"
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert train(source, "--out", first).returncode == 0
    assert train(source, "--out", second).returncode == 0
    assert first.read_bytes() == second.read_bytes()
    model = json.loads(first.read_text())
    tune = sum(json.loads(line)["split"] == "tune" for line in source.read_text().splitlines() if line.strip())
    assert model["excerpts"] == tune and model["positives"] > 0 and model["weights"]

    holdout_only = tmp_path / "holdout.jsonl"
    holdout_only.write_text("".join(line + "\n" for line in source.read_text().splitlines()
                                    if line.strip() and json.loads(line)["split"] == "holdout"))
    result = train(holdout_only, "--out", tmp_path / "c.json")
    assert result.returncode == 2 and "no excerpt of split 'tune'" in result.stderr


@pytest.mark.parametrize("content, message", [
    (None, "No such file"),
    ('{"split": "tune", "turns": [{"speaker": "agent"}], "expected": {"pii": []}}\n', "bad.jsonl:1: not an excerpt"),
    ("not json\n", "bad.jsonl:1: not an excerpt"),
])
def test_training_input_errors_exit_2(tmp_path: Path, content, message):
    path = tmp_path / "bad.jsonl"
    if content is not None:
        path.write_text(content)
    result = train(path, "--out", tmp_path / "out.json")
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
