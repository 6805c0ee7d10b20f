"""The LLM summariser's prompt, validation, grounding and fallback (no Triton), and the llama.cpp CPU stand-in.
Through Triton: tests/test_triton.py."""

from __future__ import annotations

import json

import jsonschema
import pytest

from aftercall.core.transcript import Transcript, Turn
from aftercall.summarise.llamacpp import BadSamplingParametersError, LlamaCppEngine, completion_request
from aftercall.summarise.llm import (LlmRejectedError, LlmSettings, LlmSummariser, LlmUnavailableError, build_prompt,
                                     field_problems, output_schema, parse_output, sampling_parameters)
from aftercall.summarise.taxonomy import load_taxonomy

CALL = Transcript((
    Turn("agent", "Good morning, Northgate Bank, how can I help?"),
    Turn("customer", "Hi, my debit card was stolen yesterday and there is a payment of two hundred pounds I don't "
                     "recognise."),
    Turn("agent", "I'm sorry to hear that. I've cancelled the card [CARD ****0366] and raised a fraud claim."),
    Turn("agent", "A new card will arrive within five working days, and the fraud team will call you by Friday."),
    Turn("customer", "Thank you, that's a relief."),
), call_id="call-7")

GOOD = {
    "reason_for_contact": {"text": "The customer's debit card was stolen.", "turns": [1]},
    "issue": {"text": "There is a payment of 200 pounds the customer does not recognise.", "turns": [1]},
    "actions_taken": [{"text": "The agent cancelled the card [CARD ****0366].", "turns": [2]},
                      {"text": "The agent raised a fraud claim.", "turns": [2]}],
    "resolution": {"status": "pending", "detail": "The fraud team will call back.", "turns": [3]},
    "follow_ups": [{"owner": "organisation", "action": "Send a new card", "due": "within five working days",
                    "turns": [3]},
                   {"owner": "organisation", "action": "Fraud team calls the customer", "due": "by Friday",
                    "turns": [3]}],
    "sentiment": {"start": "negative", "end": "positive"},
    "disposition": "CARD_LOST_STOLEN",
    "escalation": {"required": True, "reason": "A fraud claim was raised.", "turns": [2]},
    "narrative": "The customer called because their debit card was stolen and a 200 pound payment was not theirs. "
                 "The agent cancelled the card and raised a fraud claim. A new card arrives within 5 working days.",
}


class RecordingLlm:
    """A stand-in `generate` that answers a fixed text and keeps what it was asked."""

    def __init__(self, answer: str | Exception):
        self.answer = answer
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, prompt: str, parameters: dict) -> str:
        self.calls.append((prompt, parameters))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def changed(**fields) -> str:
    return json.dumps({**GOOD, **fields})


def test_prompt_numbers_the_turns_and_lists_the_site_codes():
    taxonomy = load_taxonomy()
    prompt = build_prompt(CALL, taxonomy)
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    assert "[2] AGENT: I'm sorry to hear that." in prompt and "[4] CUSTOMER: Thank you" in prompt
    assert all(f"- {d.code}: {d.label}" in prompt for d in taxonomy)
    schema = output_schema(taxonomy, len(CALL.turns))
    assert schema["properties"]["disposition"]["enum"][-1] == "UNKNOWN"
    parameters = sampling_parameters(schema, LlmSettings())
    assert json.loads(parameters["guided_decoding"]) == {"json": schema}
    jsonschema.Draft202012Validator.check_schema(schema)


def test_a_valid_grounded_answer_becomes_the_summary(summariser):
    llm = RecordingLlm(json.dumps(GOOD))
    summary = LlmSummariser(llm, LlmSettings(), summariser).summarise(CALL, load_taxonomy())
    assert summary["generator"] == {"llm": "llm", "fallback": None, "rejected": {}}
    assert summary["model"] == "aftercall-llm-0.1"
    assert summary["reason_for_contact"] == "The customer's debit card was stolen."
    assert summary["actions_taken"] == ["The agent cancelled the card [CARD ****0366].",
                                        "The agent raised a fraud claim."]
    assert summary["follow_ups"][1] == {"owner": "organisation", "action": "Fraud team calls the customer",
                                        "due": "by Friday", "team": None}
    assert summary["evidence"]["follow_ups"] == [[3], [3]] and summary["evidence"]["escalation"] == [2]
    # The confidence is the embedding model's measure for the LLM's code, not the LLM's say-so.
    fit = summariser.disposition_fit(CALL, load_taxonomy())["CARD_LOST_STOLEN"]
    assert summary["disposition"] == {"code": "CARD_LOST_STOLEN", "confidence": fit.confidence,
                                      "label": "Lost or stolen card / fraud"}
    embedded = summariser.summarise(CALL, load_taxonomy())
    assert summary["entities"] == embedded["entities"] and summary["call_id"] == "call-7"
    prompt, parameters = llm.calls[0]
    assert "[CARD ****0366]" in prompt and parameters["max_tokens"] == 1024


@pytest.mark.parametrize("answer, rule", [
    ("{\"reason_for_contact\": {\"text\": \"The cust", "not JSON"),
    (changed(disposition="PIZZA_ORDER"), "schema at disposition"),
    (changed(issue={"text": "Something.", "turns": [9]}), "schema at issue/turns/0"),
    (changed(extra="field"), "schema at (top level)"),
    (changed(reason_for_contact={"text": "Lawns", "turns": [1]}, issue={"text": "Tax", "turns": [1]},
             narrative="Just one sentence."), "every sentence of the LLM output broke a rule"),
])
def test_an_unusable_answer_falls_back_to_the_embedded_summary(summariser, answer, rule):
    summary = LlmSummariser(RecordingLlm(answer), LlmSettings(), summariser).summarise(CALL, load_taxonomy())
    fallback = summary.pop("generator")["fallback"]
    assert rule in fallback
    assert summary == summariser.summarise(CALL, load_taxonomy())


@pytest.mark.parametrize("answer, field, rule", [
    (changed(narrative="The debit card was stolen."), "narrative", "narrative has 1 sentence"),
    (changed(issue={"text": "A payment of 350 pounds.", "turns": [1]}), "issue", "were not said in the call"),
    (changed(resolution={"status": "pending", "detail": "Call back on Tuesday.", "turns": [3]}), "resolution",
     "resolution/detail has 1 number(s) or date word(s) that were not said"),
    (changed(issue={"text": "Stolen card.", "turns": [1]}), "issue", "issue is not a sentence"),
    (changed(resolution={"status": "resolved", "detail": "{CARDLOST}", "turns": [3]}), "resolution",
     "resolution/detail has a placeholder that is not"),
    (changed(narrative="The customer decided on the health insurance company's matter. It is not an emergency."),
     "narrative", "narrative is mostly words that were not said"),
    (changed(disposition="MEDICAL_QUERY"), "disposition", "the disposition does not fit the call"),
])
def test_a_field_that_breaks_a_rule_keeps_the_embedded_value_and_the_rest_stays(summariser, answer, field, rule):
    summary = LlmSummariser(RecordingLlm(answer), LlmSettings(), summariser).summarise(CALL, load_taxonomy())
    embedded = summariser.summarise(CALL, load_taxonomy())
    generator = summary.pop("generator")
    assert generator["fallback"] is None and list(generator["rejected"]) == [field]
    assert rule in generator["rejected"][field]
    assert "350" not in generator["rejected"][field] and "Tuesday" not in generator["rejected"][field]
    assert summary[field] == embedded[field]
    assert summary["evidence"].get(field) == embedded["evidence"].get(field)
    # The fields that held are the LLM's.
    assert summary["model"] == "aftercall-llm-0.1"
    assert summary["reason_for_contact"] == GOOD["reason_for_contact"]["text"]
    assert summary["actions_taken"] == [a["text"] for a in GOOD["actions_taken"]]


@pytest.mark.parametrize("due", ["by Thursday at the latest", "later this week"])
def test_a_follow_up_that_breaks_a_rule_is_left_out(summariser, due):
    follow_ups = [{"owner": "agent", "action": "Call back", "due": due, "turns": [3]}, GOOD["follow_ups"][1]]
    summary = LlmSummariser(RecordingLlm(changed(follow_ups=follow_ups)), LlmSettings(),
                            summariser).summarise(CALL, load_taxonomy())
    assert list(summary["generator"]["rejected"]) == ["follow_ups/0"]
    assert [f["action"] for f in summary["follow_ups"]] == ["Fraud team calls the customer"]
    assert summary["evidence"]["follow_ups"] == [[3]]


def test_an_llm_that_is_down_or_a_transcript_too_long_falls_back(summariser):
    down = LlmSummariser(RecordingLlm(LlmUnavailableError("model llm: not loaded")), LlmSettings(), summariser)
    assert down.summarise(CALL, load_taxonomy())["generator"]["fallback"] == "model llm: not loaded"
    llm = RecordingLlm(json.dumps(GOOD))
    short = LlmSummariser(llm, LlmSettings(max_transcript_chars=100), summariser).summarise(CALL, load_taxonomy())
    assert "max_transcript_chars" in short["generator"]["fallback"] and llm.calls == []


def test_numbers_are_grounded_whether_written_or_spoken():
    assert field_problems(json.loads(changed(issue={"text": "A payment of £200.00 within 5 days.", "turns": [1]})),
                          CALL) == {}
    assert list(field_problems(json.loads(changed(issue={"text": "Card ending 0367.", "turns": [1]})), CALL)) == [
        "issue"]
    with pytest.raises(LlmRejectedError):
        parse_output("[]", output_schema(load_taxonomy(), 5))


def test_settings_come_from_model_parameters_and_are_checked():
    settings = LlmSettings.from_parameters({"max_tokens": "700", "repetition_penalty": "1.15", "llm_model": "x"})
    assert (settings.max_tokens, settings.repetition_penalty, settings.llm_model) == (700, 1.15, "x")
    with pytest.raises(ValueError, match="parameters.max_token: unknown"):
        LlmSettings.from_parameters({"max_token": "700"})
    with pytest.raises(ValueError, match="parameters.temperature: 'hot' is not a float"):
        LlmSettings.from_parameters({"temperature": "hot"})
    with pytest.raises(ValueError, match="max_tokens >= 16"):
        LlmSettings.from_parameters({"max_tokens": "3"})


def test_vllm_sampling_parameters_translate_to_llama_cpp():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    request = completion_request("p", {"max_tokens": 9, "temperature": 0, "repetition_penalty": 1.1,
                                       "guided_decoding": json.dumps({"json": schema})})
    assert request["n_predict"] == 9 and request["repeat_penalty"] == 1.1 and request["prompt"] == "p"
    assert request["json_schema"]["properties"] == schema["properties"]
    with pytest.raises(BadSamplingParametersError, match="sampling_parameters.best_of: not supported"):
        completion_request("p", {"best_of": 2})
    with pytest.raises(BadSamplingParametersError, match="guided_decoding"):
        completion_request("p", {"guided_decoding": {"regex": "a+"}})


@pytest.fixture(scope="module")
def engine():
    return LlamaCppEngine(context_tokens=2048)


def test_the_stand_in_obeys_the_json_schema(engine):
    """Real guided decoding: whatever the 135M model wants to say, the grammar makes it fit the schema."""
    schema = {"type": "object", "properties": {
        "mood": {"enum": ["negative", "neutral", "positive"]},
        "turns": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "integer", "minimum": 0,
                                                                           "maximum": 3}}},
        "required": ["mood", "turns"], "additionalProperties": False}
    prompt = "<|im_start|>user\nHow does the customer feel in 'I am furious'?<|im_end|>\n<|im_start|>assistant\n"
    text = engine.generate(prompt, {"max_tokens": 60, "guided_decoding": json.dumps({"json": schema})})
    jsonschema.validate(json.loads(text), schema)
    again = engine.generate(prompt, {"max_tokens": 60, "guided_decoding": json.dumps({"json": schema})})
    assert again == text  # temperature 0: the same answer, so a test or an audit can reproduce it


def test_a_bad_request_to_llama_cpp_is_refused_by_name(engine):
    with pytest.raises(BadSamplingParametersError, match="n_predict"):
        engine.generate("hi", {"max_tokens": "many"})
