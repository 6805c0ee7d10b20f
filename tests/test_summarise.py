"""The summary contract, honesty rules and taxonomies (the regression calls in tests/calls/ are scored in
test_eval.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jsonschema
import pytest

from aftercall.config import Config, load_config
from aftercall.core.errors import ConfigError
from aftercall.core.transcript import Transcript, Turn, transcript_from_json
from aftercall.evaluation.metrics import digit_leak
from aftercall.pipeline import Pipeline
from aftercall.summarise.contract import REQUIRED_KEYS, SummaryContractError, check_field, check_summary, json_schema
from aftercall.summarise.taxonomy import load_taxonomy, parse_taxonomy, taxonomy_to_toml
from conftest import DEMO_JSON, run_cli


@pytest.fixture(scope="module")
def pipeline(summariser):
    return Pipeline(Config(), load_taxonomy(), summariser, transcriber_factory=lambda: None)


def _run(pipeline, document: dict) -> dict:
    return pipeline.run(transcript_from_json(document), ("agent", "customer"))


def _run_turns(pipeline, turns: list[tuple[str, str]]) -> dict:
    return _run(pipeline, {"turns": [{"speaker": speaker, "text": text} for speaker, text in turns]})


def test_demo_transcript_meets_the_contract(pipeline):
    summary = _run(pipeline, json.loads(DEMO_JSON.read_text()))
    assert set(REQUIRED_KEYS) <= set(summary)
    assert summary["resolution"]["status"] in ("resolved", "pending", "escalated", "unresolved")
    assert summary["sentiment"]["start"] in ("negative", "neutral", "positive")
    assert all(f["owner"] in ("agent", "customer", "organisation") for f in summary["follow_ups"])
    assert 2 <= summary["narrative"].count(". ") + 1 <= 5
    assert summary["disposition"]["code"] == "CARD_LOST_STOLEN"
    assert 0.0 <= summary["disposition"]["confidence"] <= 1.0
    everything = json.dumps(summary)
    assert not digit_leak("4532015112830366", everything)
    assert "1986" not in everything and "Harper" not in everything
    assert {"type": "card_last4", "value": "****0366"} in summary["entities"]
    dues = {f["due"] for f in summary["follow_ups"]}
    assert "within five working days" in dues and "by Friday" in dues


def test_the_json_schema_describes_what_is_produced(pipeline):
    """`aftercall schema` is what a CRM integration checks against: every summary the pipeline writes meets it, and
    it catches a summary that breaks it."""
    schema = json.loads(run_cli("schema").stdout)
    assert schema["required"] == list(REQUIRED_KEYS) and schema == json_schema()
    validator = jsonschema.Draft202012Validator(schema)
    for document in (json.loads(DEMO_JSON.read_text()), {"turns": [{"speaker": "customer", "text": "Hello?"}]}):
        summary = _run(pipeline, document)
        assert not list(validator.iter_errors(summary))
    broken = {**summary, "sentiment": {"start": "angry", "end": "neutral"}}
    assert [e.json_path for e in validator.iter_errors(broken)] == ["$.sentiment.start"]


def test_a_summariser_that_breaks_the_contract_is_caught_before_anything_is_stored():
    class Careless:
        def summarise(self, transcript, taxonomy):
            return {key: "" for key in REQUIRED_KEYS}

    pipeline = Pipeline(Config(), load_taxonomy(), Careless(), transcriber_factory=lambda: None)
    with pytest.raises(RuntimeError, match="broke the summary contract: actions_taken must be a list"):
        _run(pipeline, {"turns": [{"speaker": "customer", "text": "Hello?"}]})


@pytest.mark.parametrize("key, value, message", [
    ("follow_ups", [{"owner": "team", "action": "Call back.", "due": None}],
     "follow_ups[0].owner must be one of agent, customer, organisation, got 'team'"),
    ("follow_ups", [{"owner": "agent", "action": "Call back."}], "follow_ups[0] must be an object with owner"),
    ("resolution", {"status": "resolved", "detail": "Done.", "extra": 1}, "resolution has unknown key(s) extra"),
    ("escalation", {"required": "yes", "reason": None}, "escalation.required must be true or false"),
    ("entities", [{"type": "planet", "value": "Mars"}], "entities[0].type must be one of organisation"),
    ("narrative", "x" * 4001, "narrative must be a string of at most 4000 characters"),
    ("model", "mine", "model cannot be edited"),
])
def test_the_contract_names_the_field_a_value_breaks(key, value, message):
    with pytest.raises(SummaryContractError) as caught:
        check_field(key, value)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("turns, reason", [
    ([("agent", "Good afternoon, Kestrel Bank, Marcus speaking."), ("customer", "Oh, is that the Golden Wok?"),
      ("agent", "No, this is Kestrel Bank."), ("customer", "Sorry, love, wrong number. Bye.")], "wrong number"),
    ([("agent", "Northway Water, how can I help?"), ("customer", "Hi, yes, I'm..."), ("agent", "Hello? Hello?")],
     "the call ended before the caller said why they called"),
    ([("agent", "Hello, you're through to the council.")], "the caller said nothing"),
])
def test_a_call_with_nothing_in_it_says_so_rather_than_summarising_nothing(pipeline, turns, reason):
    summary = _run_turns(pipeline, turns)
    assert summary["insufficient_content"] == {"reason": reason}
    assert summary["disposition"]["code"] == "UNKNOWN" and summary["resolution"]["status"] == "unresolved"
    assert summary["follow_ups"] == [] and reason in summary["narrative"]


def test_a_short_call_with_a_reason_is_summarised(pipeline):
    summary = _run(pipeline, {"turns": [
        {"speaker": "customer", "text": "I want to cancel my broadband contract, I'm moving abroad."},
        {"speaker": "agent", "text": "I've cancelled it from the end of the month."}]})
    assert summary["insufficient_content"] is None and summary["disposition"]["code"] == "CANCELLATION"


def test_every_point_is_traceable_to_a_turn(pipeline):
    summary = _run(pipeline, json.loads(DEMO_JSON.read_text()))
    turns = summary["transcript"]
    evidence = summary["evidence"]
    assert evidence["reason_for_contact"] and len(evidence["actions_taken"]) == len(summary["actions_taken"])
    for index_list in [evidence["reason_for_contact"], *evidence["actions_taken"], *evidence["follow_ups"]]:
        assert all(0 <= i < len(turns) for i in index_list)
    first_action_turn = turns[evidence["actions_taken"][0][0]]
    assert first_action_turn["speaker"] == "agent"


def test_due_is_never_invented(pipeline):
    summary = _run(pipeline, {"turns": [
        {"speaker": "customer", "text": "My boiler has stopped working and there's no hot water."},
        {"speaker": "agent", "text": "I'm sorry about that. I've logged a repair job. An engineer will call you to arrange a visit."},
        {"speaker": "customer", "text": "Okay, thanks."},
    ]})
    assert summary["follow_ups"] and all(f["due"] is None for f in summary["follow_ups"])
    assert summary["follow_ups"][0]["owner"] == "organisation"


def test_two_commitments_in_one_sentence_are_two_follow_ups(pipeline):
    summary = _run(pipeline, {"turns": [
        {"speaker": "customer", "text": "I want to complain about these overdraft fees."},
        {"speaker": "agent", "text": "You'll get an acknowledgement by email within five working days, and a "
                                     "complaints handler will call you within ten working days."},
    ]})
    assert [(f["owner"], f["due"]) for f in summary["follow_ups"]] == [
        ("organisation", "within five working days"), ("organisation", "within ten working days")]
    assert "handler will call" in summary["follow_ups"][1]["action"]


def test_custom_taxonomy_codes_only_or_unknown(pipeline, tmp_path: Path):
    taxonomy = parse_taxonomy("""
[[disposition]]
code = "PARKING_PERMIT"
label = "Parking permit"
description = "Apply for or renew a residents parking permit, visitor permits"
[[disposition]]
code = "BIN_COLLECTION"
label = "Missed bin collection"
description = "My bins or recycling were not collected, missed bin collection"
""")
    local = Pipeline(Config(), taxonomy, pipeline.summariser, transcriber_factory=lambda: None)
    bins = local.run(Transcript((Turn("customer", "Hi, my recycling bin wasn't collected again this week."),)),
                     ("agent", "customer"))
    assert bins["disposition"]["code"] == "BIN_COLLECTION"
    other = local.run(Transcript((Turn("customer", "I'd like to know what time the swimming pool opens."),)),
                      ("agent", "customer"))
    assert other["disposition"]["code"] in ("PARKING_PERMIT", "BIN_COLLECTION", "UNKNOWN")


def test_a_sites_example_phrases_decide_a_code_its_description_alone_does_not(pipeline):
    taxonomy = """
[[disposition]]
code = "WASTE"
label = "Waste and recycling"
description = "Bins, recycling, bulky items"
[[disposition]]
code = "HIGHWAYS"
label = "Roads and pavements"
description = "Potholes, street lights, road repairs"
"""
    examples = ('examples = ["there is an old mattress dumped in the lane behind my house"]\n'
                '[[disposition]]\ncode = "HIGH')
    call = Transcript((Turn("customer", "A mattress has been left in the alley behind our road for a week."),))
    chosen = [pipeline.summariser.summarise(call, parse_taxonomy(text))["disposition"]["code"]
              for text in (taxonomy, taxonomy.replace('[[disposition]]\ncode = "HIGH', examples))]
    assert chosen == ["HIGHWAYS", "WASTE"]
    with_examples = parse_taxonomy(taxonomy.replace('[[disposition]]\ncode = "HIGH', examples))
    assert parse_taxonomy(taxonomy_to_toml(with_examples)) == with_examples


@pytest.mark.parametrize("text, message", [
    ("not toml [", "not valid TOML"),
    ("[[disposition]]\ncode = 'A'\nlabel = 'x'\n", "disposition[0].description"),
    ("[[disposition]]\ncode='A'\nlabel='a'\ndescription='a'\n[[disposition]]\ncode='A'\nlabel='b'\ndescription='b'",
     "duplicated"),
    ("title = 'no dispositions'", "at least one"),
    ("[[disposition]]\ncode='A'\nlabel='a'\ndescription='a'\nexamples='one'", "disposition[0].examples"),
    ("[[disposition]]\ncode='A'\nlabel='a'\ndescription='a'\nexamples=['']", "disposition[0].examples"),
])
def test_bad_taxonomy_names_the_problem(text: str, message: str):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_taxonomy(text)




def test_unattributed_turns_are_summarised_without_guessing_who_said_them(pipeline):
    """A mono call whose speakers could not be told apart: a valid summary, and no follow-up owned by a guess."""
    document = json.loads(DEMO_JSON.read_text())
    for turn in document["turns"]:
        turn["speaker"] = "unattributed"
    summary = _run(pipeline, document)
    assert set(REQUIRED_KEYS) <= set(summary) and summary["follow_ups"] == []
    assert {turn["speaker"] for turn in summary["transcript"]} == {"unattributed"}
    assert not digit_leak("4532015112830366", json.dumps(summary))


def _sentiment(pipeline, *lines: str) -> dict:
    """The sentiment arc of a call given as alternating agent and customer lines, the agent first."""
    turns = tuple(Turn("agent" if index % 2 == 0 else "customer", text) for index, text in enumerate(lines))
    return pipeline.run(Transcript(turns), ("agent", "customer"))["sentiment"]


def test_greeting_small_talk_is_not_a_positive_start_and_sarcasm_is_not_a_positive_end(pipeline):
    sentiment = _sentiment(
        pipeline,
        "Good morning, Fernbrook Deliveries, how can I help?",
        "Morning! Lovely day, isn't it.",
        "It is. What can I do for you?",
        "I'm ringing about my parcel. The tracking hasn't updated since Monday and I need it for the weekend.",
        "I've checked, and it's been held at the depot. It'll be another two weeks, I'm afraid.",
        "Another two weeks? Brilliant. So there's nothing you can do.",
        "Not from here, no. I'm sorry.",
        "Fine. Thanks.",
    )
    assert sentiment == {"start": "neutral", "end": "negative"}


def test_grudging_thanks_is_negative_and_flat_thanks_is_neutral(pipeline):
    grudging = _sentiment(
        pipeline,
        "Northgate Water, how can I help?",
        "Hi, I'm calling about my bill. It's higher than usual and I'd like to know why.",
        "It's based on an estimated reading, so it can't be changed until we have a real one.",
        "So I have to pay it anyway? I was told last time this wouldn't happen again.",
        "I'm afraid so, until we get a reading.",
        "Right. Thanks, I suppose.",
    )
    flat = _sentiment(
        pipeline,
        "Northgate Water, how can I help?",
        "Hi, I'd like to give you a meter reading please.",
        "Of course, go ahead.",
        "It's four five six one two.",
        "Thanks, that's on your account now.",
        "Okay, thanks.",
    )
    assert grudging == {"start": "neutral", "end": "negative"}
    assert flat == {"start": "neutral", "end": "neutral"}


def test_worry_answered_with_thanks_is_a_positive_end_after_an_anxious_start(pipeline):
    sentiment = _sentiment(
        pipeline,
        "Brightside Bank, you're speaking to Sam.",
        "Hello, yes.",
        "How can I help today?",
        "I've had a text saying my account's been frozen and I'm panicking, my rent goes out tomorrow.",
        "Let me look. It was a security check. I've lifted it, so your rent will go out as normal.",
        "Oh, thank goodness. I was so worried.",
        "Is there anything else?",
        "No, that's it. Honestly, thank you, you've been a great help. Bye.",
    )
    assert sentiment == {"start": "negative", "end": "positive"}


def test_the_disposition_is_read_past_the_security_questions(pipeline):
    """Callers answer the security questions before they say why they called: the reason is in the first half of
    the call, not always in the caller's first turns."""
    turns = [("agent", "Good morning, Northway Energy, can I take your name?"), ("customer", "Yes, it's Mrs Green."),
             ("agent", "And the first line of your address?"), ("customer", "Twelve Mill Lane."),
             ("agent", "And your date of birth?"), ("customer", "Third of May, nineteen sixty."),
             ("agent", "Thank you, you're through security. How can I help?"),
             ("customer", "I've fallen behind with my gas bill and I can't afford to pay it all at once."),
             ("customer", "Can I pay it off in smaller amounts each month?"),
             ("agent", "Yes, I've set up a plan of forty pounds a month from the first."), ("customer", "Thank you."),
             ("agent", "You're welcome."), ("customer", "Bye.")]
    summary = _run_turns(pipeline, turns)
    assert summary["disposition"]["code"] == "PAYMENT_ARRANGEMENT"


@pytest.mark.parametrize("last_turns, status", [
    # Routine delivery after the business was done: resolved.
    ([("agent", "I've processed the refund, it should be back on your card within five working days."),
      ("customer", "Lovely, thank you.")], "resolved"),
    # Waiting on something the caller must send: pending.
    ([("agent", "I've started the claim, but we'll need a copy of the receipt before we can pay it."),
      ("customer", "Okay, I'll find it.")], "pending"),
    # The line went: unresolved, whatever was said before.
    ([("agent", "I've processed the refund and it should be back on your card within five working days."),
      ("customer", "Hello? Are you still there?")], "unresolved"),
])
def test_routine_delivery_is_resolved_a_wait_is_pending_and_a_dropped_line_is_unresolved(pipeline, last_turns, status):
    turns = [("agent", "Hello, Oakfield Home, how can I help?"),
             ("customer", "I returned a lamp two weeks ago and I still haven't had my money back."),
             ("agent", "Let me look at that for you."), *last_turns]
    summary = _run_turns(pipeline, turns)
    assert summary["resolution"]["status"] == status


def test_what_the_organisation_needs_is_the_callers_task_and_talk_is_no_commitment(pipeline):
    turns = [("customer", "I've been made redundant and I can't pay my mortgage this month."),
             ("agent", "I'm sorry to hear that. I'll explain how a reduced payment arrangement works."),
             ("agent", "We'll need your last three months' bank statements and the redundancy letter by Friday."),
             ("customer", "Okay, I'll write it down.")]
    summary = _run_turns(pipeline, turns)
    assert [(f["owner"], f["due"]) for f in summary["follow_ups"]] == [("customer", "by Friday")]
    assert "bank statements" in summary["follow_ups"][0]["action"]


def test_a_request_the_agent_agrees_to_is_the_agents_follow_up_and_it_names_the_thing(pipeline):
    turns = [("customer", "I want to appeal the decision about my housing band."),
             ("agent", "You'll need to fill in the medical assessment form with evidence from your GP."),
             ("customer", "Can you send me the form by email?"),
             ("agent", "Yes, of course."),
             ("agent", "Please send it back within 28 days.")]
    summary = _run_turns(pipeline, turns)
    owners = [(f["owner"], f["action"]) for f in summary["follow_ups"]]
    assert ("agent", "The agent will send the customer the form by email.") in owners
    assert any(owner == "customer" and "send the form back" in action for owner, action in owners), owners
    # Refused, or a question the agent answers with information: no commitment.
    refused = _run_turns(pipeline, [("customer", "I'd like to close my account."),
                                    ("customer", "Can you send me the closure form?"),
                                    ("agent", "I'm afraid that's only done in branch.")])
    assert all(f["owner"] != "agent" for f in refused["follow_ups"])


def test_the_team_a_call_or_a_task_goes_to_is_named_as_in_the_call(pipeline):
    summary = _run_turns(pipeline, [
        ("customer", "My claim for the flood damage was turned down and I want to make a formal complaint."),
        ("agent", "I understand. I'll put you through to our complaints team now."),
        ("agent", "Complaints, hello. The claims team will call you back by Friday with the review.")])
    assert summary["escalation"]["required"] and summary["escalation"]["target"] == "our complaints team"
    assert [(f["owner"], f["team"]) for f in summary["follow_ups"]] == [("organisation", "The claims team")]
    quiet = _run_turns(pipeline, [("customer", "What time do you close today?"), ("agent", "We close at six.")])
    assert quiet["escalation"] == {"required": False, "reason": None, "target": None}


def test_identity_checks_what_the_caller_tried_and_error_codes_are_kept(pipeline):
    summary = _run_turns(pipeline, [
        ("agent", "Service desk. Can I take your full name?"), ("customer", "Priya Shah."),
        ("agent", "And your date of birth?"), ("customer", "Fourth of May, ninety one."),
        ("customer", "The VPN won't connect. It shows error VPN-812. I've restarted the laptop twice already."),
        ("agent", "Thanks. There's a known fix in article KB-40417, I'll send you the link.")])
    assert summary["verification"] == ["full name", "date of birth"]
    assert summary["customer_tried"] == ["They have restarted the laptop twice already."]
    found = {(e["type"], e["value"]) for e in summary["entities"]}
    assert {("error_code", "VPN-812"), ("article", "KB-40417")} <= found


def test_decisions_are_what_was_granted_changed_or_refused_with_their_turns(pipeline):
    summary = _run_turns(pipeline, [
        ("customer", "I missed the payment because I was in hospital. Can you take the late fee off?"),
        ("agent", "I'm sorry to hear that. I've waived the £35 late fee as a one off."),
        ("customer", "Thank you. And can my daughter manage the account for me?"),
        ("agent", "I can't add her to the account, she'd need a power of attorney."),
        ("agent", "If you send that in, we could add her. I've moved your payment date to the 20th."),
        ("agent", "Can I help with anything else? I can't see any other payments missed.")])
    assert summary["decisions"] == ["The £35 late fee waived as a one off.",
                                    "Request to add her to the account refused.",
                                    "The customer's payment date moved to the 20th."]
    assert summary["evidence"]["decisions"] == [[1], [3], [4]]


def test_the_call_says_who_spoke_and_for_whom(pipeline):
    summary = _run_turns(pipeline, [
        ("agent", "Good morning, Riverside Surgery."),
        ("customer", "Hello, I'm calling on behalf of my father, he can't get to the phone."),
        ("agent", "That's fine. What does he need?"), ("customer", "His repeat prescription for the inhaler.")])
    assert summary["call"] == {"started_at": None, "duration_s": None, "participants": [
        {"role": "agent", "turns": 2, "speaking_s": None, "on_behalf_of": None},
        {"role": "customer", "turns": 2, "speaking_s": None, "on_behalf_of": "the caller's father"}]}
    turns = (Turn("agent", "Hello, how can I help?", 0.0, 2.5), Turn("customer", "I want to pay my bill.", 3.0, 5.0))
    timed = pipeline.summariser.summarise(Transcript(turns), pipeline.taxonomy)
    assert timed["call"]["duration_s"] == 5.0
    assert [p["speaking_s"] for p in timed["call"]["participants"]] == [2.5, 2.0]


def test_a_queue_template_leaves_fields_out_and_adds_its_sections(summariser):
    config = load_config(None, {})
    config = dataclasses.replace(config, summarise=dataclasses.replace(config.summarise, templates={
        "pharmacy": {"omit": ("customer_tried", "decisions", "call"), "medication": ("dose", "tablet", "mg")}}))
    pipeline = Pipeline(config, load_taxonomy(), summariser, transcriber_factory=lambda: None)
    turns = Transcript((Turn("customer", "I've already tried the app. My repeat prescription hasn't come."),
                        Turn("agent", "I've waived the delivery fee. Is that the omeprazole 20 mg?"),
                        Turn("customer", "Yes, one tablet a day.")), "pharm-1")
    shaped = pipeline.summarise(pipeline.redact(turns, "pharm-1"), audio_seconds=9.0, queue="pharmacy")
    assert shaped["customer_tried"] == [] and shaped["decisions"] == [] and "decisions" not in shaped["evidence"]
    assert shaped["call"] is None
    assert shaped["sections"] == {"medication": ["Is that the omeprazole 20 mg?", "One tablet a day."]}
    assert shaped["evidence"]["sections/medication"] == [[1], [2]]
    check_summary(shaped)
    plain = pipeline.summarise(pipeline.redact(turns, "pharm-1"), queue="billing")  # a queue with no template
    assert plain["sections"] == {} and plain["customer_tried"] and plain["decisions"]


def test_an_edit_may_leave_out_a_field_the_contract_gained_later():
    assert check_field("escalation", {"required": True, "reason": "Complaint raised."}) == {
        "required": True, "reason": "Complaint raised.", "target": None}
    assert check_field("follow_ups", [{"owner": "agent", "action": "Call back.", "due": None}]) == [
        {"owner": "agent", "action": "Call back.", "due": None, "team": None}]
