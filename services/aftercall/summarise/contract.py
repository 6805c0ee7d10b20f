"""The summary contract: the one description of a post-call summary that the summarisers write, the LLM's schema,
a person's edits, the evaluation and `aftercall schema` (the JSON Schema a site's CRM can check against) all read.

The dataclasses are the definition; the closed sets, the JSON Schema and the checks are derived from their type
hints, so a field added here is added everywhere. The summarisers write `Summary`; the pipeline adds the transcript,
the redaction counts and the timings (`StoredSummary` documents those), and keys beyond these are welcome.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from aftercall.core.documents import shown
from aftercall.core.errors import UserError

Status = Literal["resolved", "pending", "escalated", "unresolved"]
Owner = Literal["agent", "customer", "organisation"]
Tone = Literal["negative", "neutral", "positive"]
Speaker = Literal["agent", "customer", "unattributed"]
EntityType = Literal["organisation", "reference", "amount", "date", "card_last4", "error_code", "article"]

RESOLUTION_STATUSES: tuple[str, ...] = get_args(Status)
OWNERS: tuple[str, ...] = get_args(Owner)
TONES: tuple[str, ...] = get_args(Tone)
ENTITY_TYPES: tuple[str, ...] = get_args(EntityType)

# Bounds on what a person may write into a field (a summary's fields are a few kB; these bound a hostile edit).
MAX_TEXT = 4000
MAX_ITEMS = 100
_MAX_KEY = 40


class SummaryContractError(UserError):
    """A summary, or a field of one, that does not meet the contract; the message names the field."""


@dataclass(frozen=True)
class Resolution:
    status: Status
    detail: str  # why: the sentence of the call it rests on


@dataclass(frozen=True)
class FollowUp:
    owner: Owner
    action: str
    due: str | None  # the phrase said ("by Friday"), never a computed date; null when nothing was said
    team: str | None = None  # the team that will do it, as named in the call ("the claims team"); null when none was


@dataclass(frozen=True)
class Sentiment:
    start: Tone  # the customer's tone in their first turns
    end: Tone  # ... and in their last ones


@dataclass(frozen=True)
class DispositionChoice:
    code: str  # a code of the site's taxonomy, or UNKNOWN
    confidence: float
    label: str | None = None  # the code's label; null for UNKNOWN


@dataclass(frozen=True)
class Escalation:
    required: bool
    reason: str | None
    target: str | None = None  # the team or role it went to, in the call's words ("the complaints team")


@dataclass(frozen=True)
class Entity:
    type: EntityType
    value: str


@dataclass(frozen=True)
class InsufficientContent:
    reason: str  # why there is nothing to summarise: "wrong number", "the call ended before a reason was given"


@dataclass(frozen=True)
class Participant:
    role: Speaker
    turns: int  # how many turns they spoke
    speaking_s: float | None  # seconds of speech; null for a transcript given as text
    # Whom a caller speaks for, as a relation to the caller ("the caller's father"); null when they speak for
    # themselves or did not say.
    on_behalf_of: str | None = None


@dataclass(frozen=True)
class CallDetails:
    started_at: str | None  # ISO 8601 (UTC); null when unknown (a recording with no start time, a text transcript)
    duration_s: float | None  # the audio's length; null for a transcript given as text
    participants: list[Participant]


@dataclass(frozen=True)
class Summary:
    """What a summariser writes (the embedded one and the LLM alike)."""

    call_id: str
    reason_for_contact: str
    issue: str
    actions_taken: list[str]
    resolution: Resolution
    follow_ups: list[FollowUp]
    sentiment: Sentiment
    disposition: DispositionChoice
    escalation: Escalation
    entities: list[Entity]
    narrative: str  # 2 to 5 sentences
    # Set when too little was said to summarise: then the fields say so rather than summarise nothing confidently.
    insufficient_content: InsufficientContent | None
    # The identity checks the agent made, as kinds ("date of birth", "postcode"), never their values.
    verification: list[str] = field(default_factory=list)
    # What the caller says they did before calling ("Restarted the router twice").
    customer_tried: list[str] = field(default_factory=list)
    # What the organisation decided in the call: granted, changed, refused ("Waived the £35 late fee", "Cannot add
    # her to the account").
    decisions: list[str] = field(default_factory=list)
    # When the call was and who spoke in it (the pipeline adds when it started and how long the audio was).
    call: CallDetails | None = None
    # The sections a site's template adds for the call's queue (section name -> sentences of the call).
    sections: dict[str, list[str]] = field(default_factory=dict)
    # For each point, the indices of the transcript turns it rests on (a list per item for the list fields).
    evidence: dict[str, list[Any]] = field(default_factory=dict)
    model: str = ""  # which summariser wrote it

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TranscriptTurn:
    speaker: Speaker
    text: str  # redacted
    start: float | None  # seconds into the call; null for a transcript given as text
    end: float | None


@dataclass(frozen=True)
class RedactionCount:
    type: str
    count: int


@dataclass(frozen=True)
class StoredSummary(Summary):
    """The summary JSON as `aftercall summarise`, the gRPC API and the vault give it."""

    transcript: list[TranscriptTurn] = field(default_factory=list)
    redactions: list[RedactionCount] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


def _has_default(field_: dataclasses.Field) -> bool:
    """A field added to the contract later has a default, so that summaries stored before it still meet it."""
    return field_.default is not dataclasses.MISSING or field_.default_factory is not dataclasses.MISSING


def _default(field_: dataclasses.Field) -> Any:
    return field_.default if field_.default is not dataclasses.MISSING else field_.default_factory()


# The keys every summary carries, whoever wrote it.
REQUIRED_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Summary)
                                       if not _has_default(f)) + ("transcript", "redactions")
# The fields a person may change in review; the rest is the record of the call.
EDITABLE: tuple[str, ...] = ("reason_for_contact", "issue", "actions_taken", "resolution", "follow_ups", "sentiment",
                             "disposition", "escalation", "entities", "narrative", "insufficient_content",
                             "verification", "customer_tried", "decisions", "sections")
_FIELD_TYPES = get_type_hints(StoredSummary)


def _optional(hint: Any) -> Any | None:
    """X for `X | None`, else None."""
    if get_origin(hint) in (Union, types.UnionType):
        rest = [a for a in get_args(hint) if a is not type(None)]
        return rest[0] if len(rest) == 1 else None
    return None


def json_schema(hint: Any = StoredSummary) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a contract type; of the whole stored summary by default."""
    inner = _optional(hint)
    if inner is not None:
        return {"anyOf": [json_schema(inner), {"type": "null"}]}
    if get_origin(hint) is Literal:
        return {"enum": list(get_args(hint))}
    if get_origin(hint) is list:
        return {"type": "array", "items": json_schema(get_args(hint)[0])}
    if get_origin(hint) is dict:
        return {"type": "object", "additionalProperties": json_schema(get_args(hint)[1])}
    if dataclasses.is_dataclass(hint):
        hints = get_type_hints(hint)
        properties = {f.name: json_schema(hints[f.name]) for f in dataclasses.fields(hint)}
        schema = {"type": "object", "properties": properties}
        if hint is StoredSummary:
            return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "aftercall summary",
                    **schema, "required": list(REQUIRED_KEYS)}
        return {**schema, "required": [f.name for f in dataclasses.fields(hint) if not _has_default(f)],
                "additionalProperties": False}
    return {str: {"type": "string"}, bool: {"type": "boolean"}, int: {"type": "integer"},
            float: {"type": "number"}, Any: {}}[hint]


def _check(value: Any, hint: Any, where: str) -> Any:
    """`value` as `hint` describes it, or SummaryContractError naming `where`."""
    inner = _optional(hint)
    if inner is not None:
        return None if value is None else _check(value, inner, where)
    if get_origin(hint) is Literal:
        if value not in get_args(hint):
            raise SummaryContractError(f"{where} must be one of {', '.join(get_args(hint))}, got {shown(value)}")
        return value
    if get_origin(hint) is list:
        if not isinstance(value, list) or len(value) > MAX_ITEMS:
            raise SummaryContractError(f"{where} must be a list of at most {MAX_ITEMS} items")
        return [_check(item, get_args(hint)[0], f"{where}[{index}]") for index, item in enumerate(value)]
    if get_origin(hint) is dict:
        if not isinstance(value, dict) or len(value) > MAX_ITEMS or not all(
                isinstance(key, str) and 0 < len(key) <= _MAX_KEY for key in value):
            raise SummaryContractError(f"{where} must be an object of at most {MAX_ITEMS} named items")
        return {key: _check(item, get_args(hint)[1], f"{where}.{key}") for key, item in value.items()}
    if dataclasses.is_dataclass(hint):
        hints = get_type_hints(hint)
        fields = dataclasses.fields(hint)
        needed = [f.name for f in fields if not _has_default(f)]
        if not isinstance(value, dict) or not set(needed) <= set(value):
            raise SummaryContractError(f"{where} must be an object with {', '.join(needed)}")
        unknown = sorted(set(value) - {f.name for f in fields})
        if unknown:
            raise SummaryContractError(f"{where} has unknown key(s) {', '.join(unknown)}")
        return {f.name: _check(value[f.name], hints[f.name], f"{where}.{f.name}") if f.name in value else _default(f)
                for f in fields}
    if hint is str:
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise SummaryContractError(f"{where} must be a string of at most {MAX_TEXT} characters")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise SummaryContractError(f"{where} must be true or false")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SummaryContractError(f"{where} must be a number")
        return float(value)
    raise SummaryContractError(f"{where} cannot be checked")  # a type only the pipeline writes


def check_field(key: str, value: Any) -> Any:
    """An editable field's new value, checked against the contract."""
    if key not in EDITABLE:
        raise SummaryContractError(f"{key} cannot be edited (editable: {', '.join(EDITABLE)})")
    return _check(value, _FIELD_TYPES[key], key)


def check_summary(summary: dict[str, Any]) -> None:
    """Every required key present and every editable field as the contract says: what a summariser wrote before
    it is stored (a generator that breaks the contract is a bug, caught here rather than in a CRM)."""
    missing = [key for key in REQUIRED_KEYS if key not in summary]
    if missing:
        raise SummaryContractError(f"the summary lacks {', '.join(missing)}")
    for key in EDITABLE:
        if key in summary:  # the required ones are there; a later addition may be absent
            _check(summary[key], _FIELD_TYPES[key], key)
