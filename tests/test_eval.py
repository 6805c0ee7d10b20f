"""`aftercall eval`: the case format, the metrics, the regression calls and public sets scored through it, gates
and exit codes, and audio mode on a synthesised call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aftercall.config import Config
from aftercall.core.errors import UserError
from aftercall.evaluation.cases import CaseFormatError, load_cases
from aftercall.evaluation.datasets import load_public
from aftercall.evaluation.evaluate import Selection, check_gates, evaluate, parse_gate
from aftercall.evaluation.metrics import grounding, match_follow_ups, word_errors
from aftercall.evaluation.scoring import leaked
from aftercall.pipeline import Pipeline
from aftercall.summarise.taxonomy import load_taxonomy
from conftest import ROOT, run_cli

CALLS = ROOT / "tests" / "calls"


@pytest.fixture(scope="module")
def pipeline(summariser):
    return Pipeline(Config(), load_taxonomy(), summariser, transcriber_factory=lambda: None)


@pytest.fixture(scope="module")
def regression(pipeline, tmp_path_factory):
    return evaluate([load_cases(CALLS)], pipeline, Selection(), tmp_path_factory.mktemp("audio"))["calls"]["text"]


# -- metrics ------------------------------------------------------------------------------------------------------
def test_word_errors_treat_spoken_and_written_numbers_alike():
    assert word_errors("my card is 4 5 3 2 please", "my card is four five three two, please") == (0, 5)
    assert word_errors("the bill is wrong", "the gas bill is wrong") == (1, 5)
    assert word_errors("", "two words") == (2, 2)


def test_grounding_finds_invented_numbers_dates_and_ids():
    transcript = "Your reference is FR-208815. The refund of twenty three ninety nine arrives in three days, on the " \
                 "twelfth of March. Card ending [CARD ****0366]."
    assert grounding(["Refund of £23.99 (FR-208815) in 3 days, by 12th March, card ****0366."], transcript) == (5, 5)
    assert grounding(["Refund of £32.99 (FR-208816) in 5 days, by 13th March."], transcript) == (0, 4)


def test_follow_ups_match_on_owner_and_action_and_score_due_exactly():
    predicted = [{"owner": "organisation", "action": "Send a replacement card.", "due": "within 5 days"},
                 {"owner": "customer", "action": "Call back.", "due": None}]
    expected = [{"owner": "organisation", "action": "send the replacement card", "due": "within five days"},
                {"owner": "agent", "action": "call back"}]
    assert match_follow_ups(predicted, expected) == {"matched": 1, "predicted": 2, "expected": 2, "due_exact": 0}
    expected[0]["due"] = "Within 5 days"
    assert match_follow_ups(predicted, expected)["due_exact"] == 1


def test_a_leak_is_any_six_digit_window_however_it_was_said():
    assert leaked("4532 0151 1283 0366", "card 4532015 blocked")
    assert leaked("four five three two zero one five one", "ref 4532015")
    assert not leaked("4532015112830366", "card [CARD ****0366] blocked")
    assert leaked("Crystal Minh", "spoke to crystal minh today") and not leaked("Crystal Minh", "spoke to [NAME]")


def test_a_short_piece_leaks_only_where_it_was_said(tmp_path: Path):
    """An NI pair "three eight" is no leak because "38 pounds" survives elsewhere; left in its own turn, it is."""
    from aftercall.core.transcript import Transcript, Turn
    from aftercall.evaluation.scoring import score_case
    from aftercall.redact.redactor import Redactor

    def leaks(question: str) -> list[str]:
        turns = [{"speaker": "agent", "text": question},
                 {"speaker": "customer", "text": "it starts three eight"},
                 {"speaker": "agent", "text": "i can see two deductions of thirty eight pounds"}]
        path = tmp_path / "case.jsonl"
        path.write_text(json.dumps({"id": "c1", "turns": turns, "expected": {
            "pii": [{"type": "NI", "value": "three eight"}], "pii_complete": True}}) + "\n")
        case = load_cases(path).cases[0]
        redaction = Redactor().redact_transcript(Transcript(tuple(Turn(t["speaker"], t["text"]) for t in turns)))
        return score_case(case, redaction, None)["leaks"]

    assert leaks("what's your national insurance number") == []
    assert leaks("what's your favourite lottery line") == ["NI"]  # no question for it: left as said


def test_numbers_a_summary_carries_as_numbers_are_no_leak(pipeline, tmp_path: Path):
    """A timing or a confidence (0.00293 s) is not text anyone said; the same digits in the narrative are a leak."""
    from aftercall.core.transcript import Transcript, Turn
    from aftercall.evaluation.scoring import score_case
    from aftercall.redact.redactor import Redactor

    turns = [{"speaker": "agent", "text": "your nhs number please"}, {"speaker": "customer", "text": "730 971 0029"}]
    path = tmp_path / "case.jsonl"
    path.write_text(json.dumps({"id": "c1", "turns": turns, "expected": {
        "pii": [{"type": "NHS", "value": "0029"}], "pii_complete": True}}) + "\n")
    case = load_cases(path).cases[0]
    redaction = Redactor().redact_transcript(Transcript(tuple(Turn(t["speaker"], t["text"]) for t in turns)))
    summary = pipeline.summarise(redaction)
    assert score_case(case, redaction, {**summary, "seconds": 12.00293})["leaks"] == []
    assert score_case(case, redaction, {**summary, "narrative": "Number ends 0029."})["leaks"] == ["NHS"]


# -- the case format ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("document, message", [
    ({"expected": {}}, 'needs "turns"'),
    ({"turns": [{"speaker": "caller", "text": "hi"}]}, "speaker must be"),
    ({"turns": [{"speaker": "agent", "text": "hi"}], "expected": {"resolution": "fixed"}}, "resolution: must be one of"),
    ({"turns": [{"speaker": "agent", "text": "hi"}], "expected": {"dispositon": "X"}}, "unknown key(s) dispositon"),
    ({"turns": [{"speaker": "agent", "text": "hi"}], "expected": {"follow_ups": [{"action": "x"}]}},
     "owner is required"),
    ({"turns": [{"speaker": "agent", "text": "hi"}], "audio": "missing.wav"}, "missing.wav does not exist"),
    ({"turns": [{"speaker": "agent", "text": "hi"}], "expected": {"pii": [{"type": "CARD"}]}}, "pii: must be"),
])
def test_bad_cases_are_named_precisely(tmp_path: Path, document: dict, message: str):
    (tmp_path / "gold.jsonl").write_text(json.dumps({"id": "ok", "turns": [{"speaker": "agent", "text": "x"}]})
                                         + "\n" + json.dumps(document) + "\n")
    with pytest.raises(CaseFormatError) as error:
        load_cases(tmp_path / "gold.jsonl")
    assert "gold.jsonl:2" in str(error.value) and message in str(error.value)


def test_an_expected_code_outside_the_taxonomy_is_refused(pipeline, tmp_path: Path):
    (tmp_path / "typo.json").write_text(json.dumps({"turns": [{"speaker": "customer", "text": "I lost my card"}],
                                                    "expected": {"disposition": "CARD_LSOT"}}))
    with pytest.raises(CaseFormatError, match="CARD_LSOT.*not a code of the taxonomy"):
        evaluate([load_cases(tmp_path)], pipeline, Selection(), tmp_path)


def test_splits_are_fixed_halves():
    cases = load_cases(CALLS).cases
    assert {c.split for c in cases} == {"holdout", "tune"}
    assert [c.split for c in cases] == [c.split for c in load_cases(CALLS).cases]


# -- the regression calls and the public sets, scored by the harness ----------------------------------------------
def test_regression_calls_never_leak_and_keep_what_matters(regression):
    leaking = [(s["id"], s["leaks"]) for s in regression["cases"] if s["leaks"]]
    assert not leaking
    assert regression["metrics"]["all"]["must_appear_kept"] == 1.0


def test_regression_calls_field_floors(regression):
    """Floors, not perfection: the calls were written apart from the summariser; docs/quality.md has figures."""
    metrics = regression["metrics"]["all"]
    floors = {"disposition_accuracy": 0.65, "resolution_accuracy": 0.5, "escalation_accuracy": 0.75,
              "follow_up_recall": 0.5, "due_exact": 0.4, "grounding": 0.95}
    assert {k: metrics[k] for k, floor in floors.items() if metrics[k] < floor} == {}
    assert sum(regression["confusion"]["CARD_LOST_STOLEN"].values()) >= 1


def test_tweetsumm_narrative_beats_the_trivial_baseline(pipeline, shared_data, tmp_path: Path):
    results = evaluate(load_public("tweetsumm", shared_data), pipeline, Selection(limit=120), tmp_path)
    metrics = results["tweetsumm"]["text"]["metrics"]["all"]
    assert metrics["rouge_l"] > metrics["rouge_l_baseline"] + 0.02


def test_presidio_recall_and_precision_for_claimed_types(pipeline, shared_data, tmp_path: Path):
    results = evaluate(load_public("presidio", shared_data), pipeline, Selection(), tmp_path)
    metrics = results["presidio"]["text"]["metrics"]["all"]
    recall = metrics["redaction_recall_by_type"]
    floors = {"CREDIT_CARD": 0.95, "US_SSN": 0.9, "EMAIL_ADDRESS": 0.95, "PHONE_NUMBER": 0.6, "IBAN_CODE": 0.9}
    assert {k: recall[k] for k, floor in floors.items() if recall[k] < floor} == {}
    assert metrics["redaction_precision"] >= 0.9
    assert metrics["leaks"] == 0, metrics["leaks_by_type"]


# -- gates and the console script ---------------------------------------------------------------------------------
def test_gates_pass_fail_and_refuse_what_they_cannot_check():
    results = {"calls": {"text": {"metrics": {"all": {"leaks": 0, "disposition_accuracy": 0.8, "wer": None}}}}}
    verdicts = check_gates([parse_gate("leaks<=0"), parse_gate("calls/disposition_accuracy>=0.9"),
                            parse_gate("wer<=0.3")], results)
    assert [(v["gate"], v["passed"]) for v in verdicts] == [("leaks<=0", True),
                                                           ("calls/disposition_accuracy>=0.9", False)]
    assert not check_gates([parse_gate("calls/wer<=0.3")], results)[0]["passed"]  # named but not measured
    # A redaction set scored on name recall: its own id_leaks gate replaces leaks<=0 there, and only there.
    results["spoken"] = {"text": {"metrics": {"all": {"leaks": 4, "id_leaks": 0}}}}
    verdicts = check_gates([parse_gate("leaks<=0"), parse_gate("spoken/id_leaks<=0")], results)
    assert [(v["gate"], v["set"], v["passed"]) for v in verdicts] == [("leaks<=0", "calls", True),
                                                                     ("spoken/id_leaks<=0", "spoken", True)]
    # A gate on one half: the held-out half alone decides (the tuned half would flatter the figure).
    results["calls"]["text"]["metrics"]["holdout"] = {"disposition_accuracy": 0.6}
    verdicts = check_gates([parse_gate("calls/text/holdout/disposition_accuracy>=0.7"),
                            parse_gate("holdout/disposition_accuracy>=0.5")], results)
    assert [(v["set"], v["value"], v["passed"]) for v in verdicts] == [("calls", 0.6, False), ("calls", 0.6, True)]
    with pytest.raises(UserError, match="no metric 'disposition_acc'"):
        parse_gate("disposition_acc>=0.5")
    with pytest.raises(UserError, match="expected"):
        parse_gate("accuracy is high")


def test_cli_writes_reports_and_exits_1_when_a_gate_fails(tmp_path: Path):
    out = tmp_path / "report"
    result = run_cli("eval", str(CALLS), "--tuned-on", "calls", "--limit", "3", "--out", str(out),
                     "--gate", "disposition_accuracy>=1.01")
    assert result.returncode == 1, result.stderr
    assert "gate failed: disposition_accuracy>=1.01 on calls (text)" in result.stderr
    report = json.loads((out / "eval.json").read_text())
    assert report["sets"]["calls"]["tuned_on"] and len(report["sets"]["calls"]["results"]["text"]["cases"]) == 3
    assert [g["passed"] for g in report["gates"]] == [True, False]
    page = (out / "eval.html").read_text()
    assert "data:image/png;base64," in page and "FAIL" in page and "Tuned on" in page
    # Ids and labels only: no transcript text of a gold call in either report.
    assert "purse has been stolen" not in page + (out / "eval.json").read_text()


@pytest.mark.parametrize("args, message", [
    (["no-such-folder"], "no such file or folder"),
    (["tests/calls", "--gate", "leaks<0 please"], "expected [SET/][MODE/][SPLIT/]METRIC"),
    (["tests/calls", "--tuned-on", "tweetsumm"], "--tuned-on tweetsumm: no such set"),
    (["tests/calls", "--gate", "calls/leaks<=0", "--gate", "gold/wer<=0.2"], "no set 'gold' among the inputs"),
    (["tests/calls", "--limit", "0"], "must be a whole number"),
])
def test_cli_bad_input_exits_2_with_one_line(args: list[str], message: str, tmp_path: Path):
    result = run_cli("eval", *args, "--out", str(tmp_path))
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_an_absent_public_set_is_skipped_with_a_note(tmp_path: Path):
    result = run_cli("eval", str(CALLS), "presidio", "--public-data", str(tmp_path / "none"), "--limit", "1",
                     "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "presidio: not found under" in result.stderr
    assert json.loads((tmp_path / "eval.json").read_text())["skipped"]


@pytest.mark.e2e
def test_audio_mode_synthesises_and_scores_recognition(summariser, transcriber, tmp_path: Path):
    """One regression call spoken by two TTS voices, through recognition: WER is measured, and nothing the caller
    said that must not appear does, even after recognition garbled it."""
    pipeline = Pipeline(Config(), load_taxonomy(), summariser, transcriber_factory=lambda: transcriber)
    dataset = load_cases(CALLS)
    dataset.cases = [c for c in dataset.cases if c.case_id == "banking_lost_card"]
    results = evaluate([dataset], pipeline, Selection(modes=("text", "audio", "mono")), tmp_path)["calls"]
    audio, mono = results["audio"]["metrics"]["all"], results["mono"]["metrics"]["all"]
    assert 0 < audio["wer"] < 0.5 and audio["agent_turns"] + audio["customer_turns"] == 15
    assert audio["leaks"] == 0 and results["text"]["metrics"]["all"]["wer"] is None
    assert mono["speaker_attribution"] >= 0.9 and mono["leaks"] == 0
    assert 0 < audio["asr_cpu_s_per_audio_s"] < 1
    assert len(list(tmp_path.glob("*.wav"))) == 2  # the stereo call and its mono mix


def test_a_cards_last_four_alone_is_not_a_leak(pipeline, tmp_path: Path):
    """[CARD ****7291] keeps the last four by design; the rest of the number is what must never survive."""
    turns = [{"speaker": "agent", "text": "I can see the card ending seven two nine one."},
             {"speaker": "customer", "text": "The long number is four five three two, zero one five one, one two "
                                             "eight three, zero three six six."}]
    (tmp_path / "card.json").write_text(json.dumps({"turns": turns, "expected": {"pii": [
        {"type": "CARD", "value": "seven two nine one"}, {"type": "CARD", "value": "4532 0151 1283 0366"}]}}))
    scores = evaluate([load_cases(tmp_path / "card.json")], pipeline, Selection(), tmp_path)
    assert scores["card"]["text"]["cases"][0]["leaks"] == []


def test_the_spoken_redaction_set_is_complete_and_split_in_halves():
    """tests/redaction_calls (written apart from the redactor): at least 200 excerpts, 60 of them negatives, every
    labelled value said in its case, and both halves holding every kind of value."""
    cases = load_cases(ROOT / "tests" / "redaction_calls").cases
    negatives = [c for c in cases if not c.expected.pii]
    assert len(cases) >= 200 and len(negatives) >= 60 and all(c.expected.must_appear for c in negatives)
    for case in cases:
        said = " ".join(turn["text"] for turn in case.turns)
        assert case.expected.pii_complete and all(value in said for _, value in case.expected.pii), case.case_id
    kinds = {split: {kind for c in cases if c.split == split for kind, _ in c.expected.pii}
             for split in ("holdout", "tune")}
    assert kinds["holdout"] == kinds["tune"] >= {"PERSON", "STREET_ADDRESS", "NI", "NHS", "DOB", "EMAIL_ADDRESS", "CVV",
                                                 "CARD", "SSN"}
