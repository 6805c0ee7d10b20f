"""Gold calls for `aftercall eval`: the documented case format (docs/eval.md), read from a folder, a JSON file or a
JSONL file, and validated so that a typo in a site's gold file is an error naming the file, the case and the key,
not a silently unscored field."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aftercall.core.config import TranscriptConfig
from aftercall.core.documents import parse_json, shown
from aftercall.core.errors import UserError
from aftercall.core.transcript import DEFAULT_LIMITS, check_transcript_size, transcript_from_json
from aftercall.summarise.contract import OWNERS, RESOLUTION_STATUSES, TONES
from aftercall.summarise.taxonomy import Disposition

SPLITS = ("tune", "holdout")


class CaseFormatError(UserError):
    """A gold case that does not follow the format; the message names where."""


@dataclass(frozen=True)
class Expected:
    """What a correct summary says. None (or empty) = not labelled for this case, so not scored."""

    disposition: str | None = None
    resolution: str | None = None
    escalation: bool | None = None
    sentiment_start: str | None = None
    sentiment_end: str | None = None
    follow_ups: tuple[dict, ...] | None = None  # [{"owner", "action"?, "due"?}]; [] = "no follow-up was promised"
    narratives: tuple[str, ...] = ()  # reference summaries; ROUGE takes the best
    pii: tuple[tuple[str, str], ...] = ()  # (type, value) said in the call, to be redacted
    pii_complete: bool = False  # every sensitive value is in `pii`, so redaction precision can be scored
    must_not_appear: tuple[str, ...] = ()  # never anywhere in the output (a leak otherwise)
    must_appear: tuple[str, ...] = ()  # ordinary values redaction must keep (amounts, references)
    escalation_target: str | None = None  # the team it went to, in the call's words
    decisions: tuple[str, ...] | None = None  # decisions made in the call; None = not labelled
    customer_tried: tuple[str, ...] | None = None  # what the caller did before calling
    verification: tuple[str, ...] | None = None  # what the agent checked, as kinds ("date of birth")
    error_codes: tuple[str, ...] | None = None
    references: tuple[str, ...] | None = None  # case, order, claim and knowledge-article numbers
    insufficient_content: bool | None = None  # too little said to summarise (wrong number, dropped early)


@dataclass(frozen=True)
class Case:
    case_id: str
    turns: tuple[dict, ...] | None  # the transcript (reference text when audio is given too)
    audio: Path | None = None
    roles: tuple[str, ...] = ("agent", "customer")
    expected: Expected = field(default_factory=Expected)
    split: str = "holdout"


@dataclass
class Dataset:
    """A named set of cases and how to read its figures."""

    name: str
    cases: list[Case]
    source: str  # where it came from, and its licence
    tuned_on: bool  # True when the code was tuned looking at these cases: figures are optimistic
    taxonomy: tuple[Disposition, ...] | None = None  # None: the taxonomy given to `aftercall eval`
    summarise: bool = True  # False: redaction-only sentences (no summary to score)
    speakable: bool = True  # whole dialogues that audio mode may synthesise
    notes: list[str] = field(default_factory=list)


def split_of(dataset: str, case_id: str) -> str:
    """A fixed half of every set is held out: the same cases on every machine and every run, chosen by hash."""
    return "holdout" if hashlib.sha256(f"{dataset}/{case_id}".encode()).digest()[0] < 128 else "tune"


_LISTS = ("decisions", "customer_tried", "verification", "error_codes", "references")
_EXPECTED_KEYS = {"disposition", "resolution", "escalation", "sentiment_start", "sentiment_end", "follow_ups",
                  "narratives", "pii", "pii_complete", "must_not_appear", "must_appear", "escalation_target",
                  "insufficient_content", "insufficient_reason", *_LISTS}
_CASE_KEYS = {"id", "turns", "audio", "roles", "expected", "split", "sector", "call_id", "started_at"}


def _choice(where: str, value: Any, choices: tuple[str, ...]) -> str | None:
    if value is not None and value not in choices:
        raise CaseFormatError(f"{where}: must be one of {', '.join(choices)}, not {shown(value)}")
    return value


def _strings(where: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise CaseFormatError(f"{where}: must be a list of non-empty strings")
    return tuple(value)


def _follow_ups(where: str, value: Any) -> tuple[dict, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise CaseFormatError(f"{where}: must be a list")
    items = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or set(item) - {"owner", "action", "due", "team"}:
            raise CaseFormatError(f"{where}[{index}]: must be an object with owner, action, due (and team)")
        _choice(f"{where}[{index}].owner", item.get("owner"), OWNERS)
        if item.get("owner") is None:
            raise CaseFormatError(f"{where}[{index}].owner is required")
        for key in ("action", "due", "team"):
            if item.get(key) is not None and not isinstance(item[key], str):
                raise CaseFormatError(f"{where}[{index}].{key}: must be a string or null")
        items.append(dict(item))
    return tuple(items)


def parse_expected(where: str, document: Any) -> Expected:
    if document is None:
        return Expected()
    if not isinstance(document, dict):
        raise CaseFormatError(f"{where}: must be an object")
    unknown = set(document) - _EXPECTED_KEYS
    if unknown:
        raise CaseFormatError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    disposition = document.get("disposition")
    if disposition is not None and (not isinstance(disposition, str) or not disposition.strip()):
        raise CaseFormatError(f"{where}.disposition: must be a taxonomy code")
    escalation = document.get("escalation")
    if escalation is not None and not isinstance(escalation, bool):
        raise CaseFormatError(f"{where}.escalation: must be true or false")
    pii = document.get("pii") or []
    if not isinstance(pii, list) or not all(isinstance(p, dict) and isinstance(p.get("type"), str)
                                            and isinstance(p.get("value"), str) and p["value"].strip()
                                            for p in pii):
        raise CaseFormatError(f'{where}.pii: must be a list of {{"type": ..., "value": ...}}')
    for key in ("pii_complete", "insufficient_content"):
        if document.get(key) is not None and not isinstance(document[key], bool):
            raise CaseFormatError(f"{where}.{key}: must be true or false")
    for key in ("escalation_target", "insufficient_reason"):
        if document.get(key) is not None and not isinstance(document[key], str):
            raise CaseFormatError(f"{where}.{key}: must be a string or null")
    return Expected(
        disposition=disposition,
        resolution=_choice(f"{where}.resolution", document.get("resolution"), RESOLUTION_STATUSES),
        escalation=escalation,
        sentiment_start=_choice(f"{where}.sentiment_start", document.get("sentiment_start"), TONES),
        sentiment_end=_choice(f"{where}.sentiment_end", document.get("sentiment_end"), TONES),
        follow_ups=_follow_ups(f"{where}.follow_ups", document.get("follow_ups")),
        narratives=_strings(f"{where}.narratives", document.get("narratives")),
        pii=tuple((p["type"], p["value"]) for p in pii),
        pii_complete=bool(document.get("pii_complete")),
        must_not_appear=_strings(f"{where}.must_not_appear", document.get("must_not_appear")),
        must_appear=_strings(f"{where}.must_appear", document.get("must_appear")),
        escalation_target=document.get("escalation_target"),
        insufficient_content=document.get("insufficient_content"),
        **{key: None if document.get(key) is None else _strings(f"{where}.{key}", document[key]) for key in _LISTS},
    )


def parse_case(where: str, document: Any, base: Path, default_id: str, dataset: str,
               limits: TranscriptConfig = DEFAULT_LIMITS) -> Case:
    if not isinstance(document, dict):
        raise CaseFormatError(f"{where}: a case must be a JSON object")
    unknown = set(document) - _CASE_KEYS
    if unknown:
        raise CaseFormatError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    case_id = document.get("id", default_id)
    if not isinstance(case_id, str) or not case_id.strip():
        raise CaseFormatError(f"{where}.id: must be a non-empty string")
    where = f"{where} ({case_id})"
    turns = None
    if document.get("turns") is not None:
        try:
            transcript_from_json({"turns": document["turns"]}, limits)
        except UserError as exc:
            raise CaseFormatError(f"{where}: {exc}") from None
        turns = tuple(document["turns"])
    audio = None
    if document.get("audio") is not None:
        if not isinstance(document["audio"], str) or "\0" in document["audio"]:
            raise CaseFormatError(f"{where}.audio: must be a path (relative to the case file)")
        audio = (base / document["audio"]).resolve()
        if not audio.is_file():
            raise CaseFormatError(f"{where}.audio: {audio} does not exist")
    if turns is None and audio is None:
        raise CaseFormatError(f'{where}: needs "turns" (a transcript) or "audio" (a recording), or both')
    roles = document.get("roles", ["agent", "customer"])
    if not isinstance(roles, list) or not roles or any(r not in ("agent", "customer") for r in roles):
        raise CaseFormatError(f'{where}.roles: must list "agent"/"customer" per channel')
    split = document.get("split") or split_of(dataset, case_id)
    _choice(f"{where}.split", split, SPLITS)
    return Case(case_id, turns, audio, tuple(roles), parse_expected(f"{where}.expected", document.get("expected")),
                split)


def _read_json(text: str, where: str, limits: TranscriptConfig) -> Any:
    """One case's JSON; its size counts against transcript.max_mb, as a transcript given to `summarise` would."""
    check_transcript_size(len(text.encode("utf-8")), limits, where)
    return parse_json(text, where, CaseFormatError)


def load_cases(path: Path, limits: TranscriptConfig = DEFAULT_LIMITS) -> Dataset:
    """A folder (every *.json and *.jsonl in it, sorted), a .json file (one case) or a .jsonl file (a case per
    line) of gold calls; each case's transcript within `limits` (the [transcript] config)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl"))
        if not files:
            raise CaseFormatError(f"{path}: no .json or .jsonl case files in this folder")
    elif path.is_file():
        files = [path]
    else:
        raise CaseFormatError(f"{path}: no such file or folder (nor a public set name)")
    name = path.stem if path.is_file() else path.name
    cases: list[Case] = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CaseFormatError(f"{file}: cannot read ({exc})") from None
        if file.suffix == ".jsonl":
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    where = f"{file}:{number}"
                    cases.append(parse_case(where, _read_json(line, where, limits), file.parent,
                                            f"{file.stem}-{number}", name, limits))
        else:
            cases.append(parse_case(str(file), _read_json(text, str(file), limits), file.parent, file.stem, name,
                                    limits))
    seen: set[str] = set()
    for case in cases:
        if case.case_id in seen:
            raise CaseFormatError(f"{path}: case id {case.case_id!r} is used twice")
        seen.add(case.case_id)
    return Dataset(name, cases, source=str(path), tuned_on=False)
