"""The LLM summariser behind `call_summariser_llm`: prompt, JSON-schema guided decoding, validation, grounding, and the
embedded summariser as the fallback.

The LLM is any Triton model with the vLLM backend's I/O (`text_input`, `stream`, `sampling_parameters` in;
`text_output` out): vLLM or TensorRT-LLM on a GPU appliance, the llama.cpp stand-in on CPU. It only ever sees the
redacted transcript. Its answer must parse and match the schema (closed sets, turns that exist); then each field is
judged on its own: every number, weekday and month it names was said in the call, most of its content words were said,
every placeholder is one the transcript has, and its disposition is not one the embedding model finds unrelated to the
call. A field that breaks a rule keeps the embedded summary's value (a list item is left out), recorded with the rule
in `generator.rejected`; an answer that does not parse, or whose every sentence breaks a rule, gives way to the
embedded summary whole (`generator.fallback`). No call is ever left without a summary because the LLM was wrong or
down.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import jsonschema

from aftercall.core.transcript import Transcript
from aftercall.redact.numbers import MONTHS, ORDINALS, TEENS, TENS, UNITS, normalise_numbers
from aftercall.summarise.contract import (OWNERS, RESOLUTION_STATUSES, TONES, DispositionChoice, Entity, Escalation,
                                          FollowUp, Resolution, Sentiment, Summary)
from aftercall.summarise.summariser import EmbeddedSummariser
from aftercall.summarise.taxonomy import UNKNOWN, Disposition

logger = logging.getLogger(__name__)

MODEL_ID = "aftercall-llm-0.1"
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

# Generate(prompt, sampling_parameters) -> the model's text; raises LlmUnavailableError when the LLM cannot answer.
Generate = Callable[[str, dict[str, Any]], str]


class LlmRejectedError(Exception):
    """The LLM answered, but the answer cannot be used. The message names the rule, never the offending text."""


class LlmUnavailableError(Exception):
    """The LLM model did not answer (not loaded, timed out, failed)."""


@dataclass(frozen=True)
class LlmSettings:
    llm_model: str = "llm"
    # An LLM that has not answered by then is treated as down: the call gets the embedded summary.
    llm_timeout_s: float = 60.0
    max_tokens: int = 1024
    # Longer transcripts go to the embedded summariser rather than being cut (a cut transcript loses the outcome).
    max_transcript_chars: int = 24000
    temperature: float = 0.0
    # Above 1 discourages the loops small models fall into; 1 = off.
    repetition_penalty: float = 1.0
    seed: int = 0
    # Requests of one Triton batch sent to the LLM at once (it batches them itself).
    concurrent_requests: int = 8

    @classmethod
    def from_parameters(cls, parameters: dict[str, str]) -> "LlmSettings":
        """From a Triton config's `parameters`; unknown keys are an error, not ignored."""
        settings = cls(**typed_parameters(parameters, {f.name: f.type for f in dataclasses.fields(cls)}))
        if (settings.max_tokens < 16 or settings.max_transcript_chars < 100 or not 0 <= settings.temperature <= 2
                or not 1 <= settings.repetition_penalty <= 2 or settings.llm_timeout_s <= 0
                or settings.concurrent_requests < 1):
            raise ValueError("parameters: max_tokens >= 16, max_transcript_chars >= 100, 0 <= temperature <= 2, "
                             "1 <= repetition_penalty <= 2, llm_timeout_s > 0, concurrent_requests >= 1")
        return settings


def typed_parameters(parameters: dict[str, str], known: dict[str, Any]) -> dict[str, Any]:
    """A Triton config's `parameters` (all strings) as the types `known` names (types or their names)."""
    types = {"str": str, "int": int, "float": float}
    values: dict[str, Any] = {}
    for key, raw in parameters.items():
        if key not in known:
            raise ValueError(f"parameters.{key}: unknown (known: {', '.join(sorted(known))})")
        kind = types.get(known[key], known[key])
        try:
            values[key] = kind(raw)
        except ValueError:
            raise ValueError(f"parameters.{key}: {raw!r} is not a {kind.__name__}") from None
    return values


def _text(max_length: int) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_length}


def output_schema(taxonomy: tuple[Disposition, ...], turn_count: int) -> dict[str, Any]:
    """What the LLM must produce: the generated fields of the summary contract, each with the turns it rests on."""
    turns = {"type": "array", "minItems": 1, "maxItems": 4,
             "items": {"type": "integer", "minimum": 0, "maximum": max(turn_count - 1, 0)}}

    def point(optional: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        properties = {**fields, "turns": turns}
        return {"type": "object", "properties": {**properties, **(optional or {})}, "required": list(properties),
                "additionalProperties": False}

    named = {"anyOf": [_text(80), {"type": "null"}]}

    tone = {"enum": list(TONES)}
    return {
        "type": "object",
        "properties": {
            "reason_for_contact": point(text=_text(300)),
            "issue": point(text=_text(300)),
            "actions_taken": {"type": "array", "maxItems": 6, "items": point(text=_text(200))},
            "resolution": point(status={"enum": list(RESOLUTION_STATUSES)}, detail=_text(300)),
            "follow_ups": {"type": "array", "maxItems": 6, "items": point(
                {"team": named}, owner={"enum": list(OWNERS)}, action=_text(200),
                due={"anyOf": [_text(60), {"type": "null"}]})},
            "sentiment": {"type": "object", "properties": {"start": tone, "end": tone}, "required": ["start", "end"],
                          "additionalProperties": False},
            "disposition": {"enum": [d.code for d in taxonomy] + [UNKNOWN]},
            "escalation": {"type": "object", "properties": {
                "required": {"type": "boolean"}, "reason": {"anyOf": [_text(200), {"type": "null"}]},
                "target": named, "turns": {**turns, "minItems": 0}},
                "required": ["required", "reason", "turns"], "additionalProperties": False},
            "narrative": _text(900),
        },
        "required": ["reason_for_contact", "issue", "actions_taken", "resolution", "follow_ups", "sentiment",
                     "disposition", "escalation", "narrative"],
        "additionalProperties": False,
    }


_INSTRUCTIONS = """You write the post-call summary of a contact-centre call for the agent's wrap-up.
Use only what was said in the transcript. Never invent numbers, dates, names or references. Sensitive values are
already masked (for example [CARD ****1234], [DOB]); keep them masked exactly as written.
Answer with one JSON object and nothing else:
- reason_for_contact, issue: one sentence each, in the third person ("The customer ...").
- actions_taken: what the agent did during the call, one short sentence each; [] if nothing.
- resolution: status is resolved, pending (something still has to happen), escalated or unresolved; detail says why.
- follow_ups: commitments made in the call: owner (agent, customer or organisation), action, and due exactly as said
  ("by Friday", "within 10 business days") or null if no time was said; team: the team that will do it as named
  in the call, or null.
- sentiment: the customer's tone at the start and at the end.
- disposition: the one code below that fits best, or UNKNOWN.
- escalation: required true only if the call was passed to someone else or a complaint was raised; reason or null;
  target: the team or role it went to as named in the call, or null; turns [] when not required.
- narrative: 2 to 5 sentences: why they called, what was done, what is still open.
- turns: the numbers of the transcript turns (in square brackets) each point rests on.
Disposition codes:
"""


def build_prompt(transcript: Transcript, taxonomy: tuple[Disposition, ...]) -> str:
    """A ChatML prompt (SmolLM2, Qwen and most instruction models served by vLLM/TensorRT-LLM use ChatML)."""
    codes = "\n".join(f"- {d.code}: {d.label}. {d.description}"
                      + (f" Callers say: {'; '.join(d.examples)}." if d.examples else "") for d in taxonomy)
    lines = "\n".join(f"[{index}] {turn.speaker.upper()}: {turn.text}" for index, turn in enumerate(transcript.turns))
    return (f"<|im_start|>system\n{_INSTRUCTIONS}{codes}\n- {UNKNOWN}: none of these fits.<|im_end|>\n"
            f"<|im_start|>user\nTranscript:\n{lines}<|im_end|>\n<|im_start|>assistant\n")


def sampling_parameters(schema: dict[str, Any], settings: LlmSettings) -> dict[str, Any]:
    """vLLM backend `sampling_parameters`. `guided_decoding` goes as a JSON string: the backend's older releases
    json.loads it, newer ones accept the string too and map it to structured outputs."""
    return {"temperature": settings.temperature, "max_tokens": settings.max_tokens, "seed": settings.seed,
            "repetition_penalty": settings.repetition_penalty, "guided_decoding": json.dumps({"json": schema})}


def parse_output(text: str, schema: dict[str, Any]) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LlmRejectedError(f"the LLM output is not JSON ({exc.msg} at character {exc.pos})") from None
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(document), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(top level)"
        raise LlmRejectedError(f"the LLM output does not match the schema at {where} ({errors[0].validator})")
    return document


_NUMBER_WORDS = {**UNITS, **TEENS, **TENS, **ORDINALS}
_NUMBER_WORDS.pop("o")  # "o" is a letter far more often than a zero
_DIGITS = re.compile(r"\d+(?:\.\d+)?")
_WORD = re.compile(r"[a-z]+")


def _facts(text: str) -> set[str]:
    """The numbers (as digits, whether written or spoken), weekdays and months in a text."""
    lowered = normalise_numbers(text).lower()
    facts = {re.sub(r"\.0+$", "", m.group()) for m in _DIGITS.finditer(lowered.replace(",", ""))}
    for word in _WORD.findall(lowered):
        if word in _NUMBER_WORDS:
            facts.add(str(_NUMBER_WORDS[word]))
        elif word in WEEKDAYS or word in MONTHS:
            facts.add(word)
    return facts


def _written(fields: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, text) of what the LLM wrote, not the labels it chose from closed sets."""
    texts = [("reason_for_contact", fields["reason_for_contact"]["text"]), ("issue", fields["issue"]["text"]),
             *((f"actions_taken/{i}", a["text"]) for i, a in enumerate(fields["actions_taken"])),
             ("resolution/detail", fields["resolution"]["detail"]),
             *((f"follow_ups/{i}/action", f["action"]) for i, f in enumerate(fields["follow_ups"])),
             *((f"follow_ups/{i}/due", f["due"]) for i, f in enumerate(fields["follow_ups"])),
             *((f"follow_ups/{i}/team", f.get("team")) for i, f in enumerate(fields["follow_ups"])),
             ("escalation/reason", fields["escalation"]["reason"]),
             ("escalation/target", fields["escalation"].get("target")), ("narrative", fields["narrative"])]
    return [(where, text) for where, text in texts if text]


def unsaid_facts(texts: Iterable[str], transcript: Transcript) -> set[str]:
    """The numbers (as digits), weekdays and months in `texts` that nobody said in the call."""
    said = " ".join(turn.text for turn in transcript.turns)
    return set().union(*(_facts(text) for text in texts)) - _facts(said)


# Words a summary uses that the call need not contain: they describe the call rather than repeat it.
_SUMMARY_WORDS = {
    "customer", "caller", "agent", "call", "calling", "ask", "request", "report", "explain", "confirm", "arrange",
    "advise", "agree", "offer", "provide", "inform", "want", "need", "state", "say", "said", "told", "mention",
    "because", "about", "their", "theirs", "they", "them", "this", "that", "with", "will", "would", "should", "could",
    "have", "been", "were", "from", "into", "also", "then", "than", "after", "before", "during", "which", "what",
    "when", "where", "while", "there", "these", "those", "being", "does", "done", "still", "some", "other", "issue",
    "problem", "reason", "contact", "follow", "update", "detail", "resolve", "pending", "escalate", "unresolved",
    "next", "step", "wait", "await", "outcome", "regard", "within", "without", "further", "again", "able", "unable",
    "complain", "complaint", "assist", "help", "solve", "solution", "suggest", "recommend", "enquire", "enquiry",
    "inquire", "inquiry", "question", "query", "message", "reach", "link", "share", "check", "whether", "feedback",
    "apologise", "apologize", "apology", "happy", "unhappy", "satisfied", "dissatisfied", "frustrated", "upset",
    "better", "here", "very", "even", "through", "since", "client", "concern", "seek", "try", "tried", "attempt",
    "response", "respond", "reply", "direct", "forward", "note", "mean", "given", "give"}
_PLACEHOLDER = re.compile(r"\[[^\]]*\]|\{[^}]*\}")
_CONTENT = re.compile(r"[a-z]+(?:'[a-z]+)?")
_MIN_SUPPORT = 0.5
# The LLM may disagree with the embedding model's pick, but not choose a code that has nothing to do with the call.
# On the 12 regression calls the right code's cosine similarity is never below 0.16; absurd picks score under 0.1.
_MIN_DISPOSITION_SIMILARITY = 0.10


def _stem(word: str) -> str:
    """Crude, but the same on both sides: "issue", "issues", "issued" -> "issu"; "state", "stated" -> "stat"."""
    word = word.removesuffix("'s")
    for suffix in ("ing", "ed", "s", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word.removesuffix("e")[:5]


_SUMMARY_STEMS = {_stem(w) for w in _SUMMARY_WORDS}


def _content_stems(text: str) -> list[str]:
    return [stem for stem in (_stem(w) for w in _CONTENT.findall(text.lower()) if len(w) >= 4)
            if stem not in _SUMMARY_STEMS]


def _field(where: str) -> str:
    """The unit a rule rejects: an item of a list field ("actions_taken/1"), else the whole field ("resolution")."""
    parts = where.split("/")
    return "/".join(parts[:2]) if parts[0] in _LIST_FIELDS else parts[0]


_LIST_FIELDS = ("actions_taken", "follow_ups")


def field_problems(fields: dict[str, Any], transcript: Transcript) -> dict[str, str]:
    """Each field (or list item) the LLM wrote that breaks a rule, with the rule (never the text): a number, weekday
    or month nobody said; a `due` that is not a phrase of the call; a placeholder the transcript does not have; a
    sentence of mostly words that were not said; a reason or issue that is no sentence; a narrative of other than 2
    to 5 sentences."""
    said = " ".join(turn.text for turn in transcript.turns)
    said_facts, known = _facts(said), set(_content_stems(said))
    placeholders = set(_PLACEHOLDER.findall(said))
    flat = re.sub(r"\s+", " ", said.lower())
    problems: dict[str, str] = {}

    def reject(where: str, rule: str) -> None:
        problems.setdefault(_field(where), f"{where} {rule}")

    for where, text in _written(fields):
        unsaid = _facts(text) - said_facts
        if unsaid:
            logger.debug("ungrounded values in the LLM output at %s: %s", where, sorted(unsaid))
            reject(where, f"has {len(unsaid)} number(s) or date word(s) that were not said in the call")
        if set(_PLACEHOLDER.findall(text)) - placeholders:
            reject(where, "has a placeholder that is not in the transcript")
        stems = _content_stems(_PLACEHOLDER.sub(" ", text))
        if stems and sum(stem in known for stem in stems) / len(stems) < _MIN_SUPPORT:
            reject(where, "is mostly words that were not said in the call")
    for index, follow_up in enumerate(fields["follow_ups"]):
        if follow_up["due"] is not None and re.sub(r"\s+", " ", follow_up["due"].lower()) not in flat:
            reject(f"follow_ups/{index}/due", "is not a phrase from the call")
    for key in ("reason_for_contact", "issue"):
        if len(fields[key]["text"].split()) < 3:
            reject(key, "is not a sentence")
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", fields["narrative"].strip()) if s]
    if not 2 <= len(sentences) <= 5:
        reject("narrative", f"has {len(sentences)} sentence(s), the contract asks for 2 to 5")
    return problems


def merge(baseline: dict[str, Any], fields: dict[str, Any], confidence: float,
          taxonomy: tuple[Disposition, ...], rejected: Iterable[str] = ()) -> dict[str, Any]:
    """The embedded summary with the LLM's fields over it: the rest (call id, entities, verification, what the
    caller tried, decisions, the call's details) stays as extracted. A `rejected` field keeps the embedded summary's
    value (and its evidence); a rejected list item ("follow_ups/1") is left out."""
    rejected = set(rejected)
    fields = {**fields, **{key: [item for index, item in enumerate(fields[key]) if f"{key}/{index}" not in rejected]
                           for key in _LIST_FIELDS}}
    labels = {d.code: d.label for d in taxonomy}
    code = fields["disposition"]
    escalation = fields["escalation"]
    summary = Summary(
        call_id=baseline["call_id"],
        reason_for_contact=fields["reason_for_contact"]["text"],
        issue=fields["issue"]["text"],
        actions_taken=[a["text"] for a in fields["actions_taken"]],
        resolution=Resolution(fields["resolution"]["status"], fields["resolution"]["detail"]),
        follow_ups=[FollowUp(f["owner"], f["action"], f["due"], f.get("team")) for f in fields["follow_ups"]],
        sentiment=Sentiment(fields["sentiment"]["start"], fields["sentiment"]["end"]),
        disposition=DispositionChoice(code, confidence, labels.get(code)),
        escalation=Escalation(escalation["required"], escalation["reason"] if escalation["required"] else None,
                              escalation.get("target") if escalation["required"] else None),
        entities=[Entity(**e) for e in baseline["entities"]],
        narrative=fields["narrative"].strip(),
        insufficient_content=None,
        verification=baseline["verification"],
        customer_tried=baseline["customer_tried"],
        decisions=baseline["decisions"],
        call=baseline["call"],
        evidence={
            "reason_for_contact": fields["reason_for_contact"]["turns"],
            "issue": fields["issue"]["turns"],
            "actions_taken": [a["turns"] for a in fields["actions_taken"]],
            "follow_ups": [f["turns"] for f in fields["follow_ups"]],
            "resolution": fields["resolution"]["turns"],
            "escalation": escalation["turns"] if escalation["required"] else [],
            "decisions": baseline["evidence"].get("decisions", []),
        },
        model=MODEL_ID,
    ).to_json()
    for key in rejected & set(summary):
        summary[key] = baseline[key]
        summary["evidence"].pop(key, None)
        if key in baseline["evidence"]:
            summary["evidence"][key] = baseline["evidence"][key]
    return summary


class LlmSummariser:
    """`summarise(transcript, taxonomy)` like the embedded summariser, so the same Triton glue serves both."""

    def __init__(self, generate: Generate, settings: LlmSettings, embedded: EmbeddedSummariser | None = None):
        self._generate = generate
        self._settings = settings
        self._embedded = embedded or EmbeddedSummariser()

    def summarise(self, transcript: Transcript, taxonomy: tuple[Disposition, ...]) -> dict[str, Any]:
        # The embedded summary is cheap next to the LLM: it is the fallback, and it supplies what the LLM does not
        # write (entities). Its embedding model also checks and scores the LLM's disposition.
        baseline = self._embedded.summarise(transcript, taxonomy)
        generator: dict[str, Any] = {"llm": self._settings.llm_model, "fallback": None, "rejected": {}}
        if baseline["insufficient_content"] is not None:  # nothing for the LLM to summarise, nor to invent
            return {**baseline, "generator": generator}
        try:
            fields, confidence, rejected = self._ask(transcript, taxonomy)
        except (LlmRejectedError, LlmUnavailableError) as exc:
            logger.warning("call %s: embedded summary used (%s)", transcript.call_id or "-", exc)
            generator["fallback"] = str(exc)
            return {**baseline, "generator": generator}
        if rejected:
            logger.info("call %s: the embedded summary's %s kept (%s)", transcript.call_id or "-",
                        ", ".join(rejected), "; ".join(rejected.values()))
        generator["rejected"] = rejected
        summary = merge(baseline, fields, confidence, taxonomy, rejected)
        return {**summary, "generator": generator}

    def _ask(self, transcript: Transcript, taxonomy: tuple[Disposition, ...]
             ) -> tuple[dict[str, Any], float, dict[str, str]]:
        """The LLM's fields, the disposition's measured confidence and the fields (or items) to take from the
        embedded summary, each with its rule; LlmRejectedError/LlmUnavailableError when nothing can be used."""
        if not transcript.turns:
            raise LlmRejectedError("the transcript has no turns")
        if sum(len(t.text) for t in transcript.turns) > self._settings.max_transcript_chars:
            raise LlmRejectedError(f"the transcript is longer than max_transcript_chars "
                                   f"({self._settings.max_transcript_chars})")
        schema = output_schema(taxonomy, len(transcript.turns))
        text = self._generate(build_prompt(transcript, taxonomy), sampling_parameters(schema, self._settings))
        fields = parse_output(text, schema)
        rejected = field_problems(fields, transcript)
        if {"reason_for_contact", "issue", "narrative"} <= set(rejected):
            # Nothing it wrote holds: its closed-set choices are not to be trusted either.
            raise LlmRejectedError(f"every sentence of the LLM output broke a rule ({rejected['narrative']})")
        fit = self._embedded.disposition_fit(transcript, taxonomy)
        code = fields["disposition"]
        if code != UNKNOWN and fit[code].similarity < _MIN_DISPOSITION_SIMILARITY:
            rejected["disposition"] = (f"the disposition does not fit the call (embedding similarity below "
                                       f"{_MIN_DISPOSITION_SIMILARITY})")
            return fields, 0.0, rejected
        return fields, fit[code].confidence, rejected
