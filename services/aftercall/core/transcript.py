"""The transcript schema shared by the CLI, the summariser and (later) the Triton model:
`{"turns": [{"speaker": "agent"|"customer"|"unattributed", "text": "...", "start": s, "end": s}, ...]}`.
"unattributed": a mono recording's turn whose speaker could not be told with confidence (never guessed)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from aftercall.core.config import TranscriptConfig
from aftercall.core.documents import parse_json, shown
from aftercall.core.errors import TranscriptFormatError

UNATTRIBUTED = "unattributed"
SPEAKERS = ("agent", "customer", UNATTRIBUTED)
DEFAULT_LIMITS = TranscriptConfig()
_MB = 1024 * 1024


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float
    probability: float = 1.0


@dataclass(frozen=True)
class Turn:
    speaker: str
    text: str
    start: float | None = None
    end: float | None = None
    words: tuple[Word, ...] = field(default=(), compare=False)

    def with_text(self, text: str) -> "Turn":
        # Word timings would carry the unredacted words: a redacted turn keeps only its span.
        return replace(self, text=text, words=())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"speaker": self.speaker, "text": self.text}
        out["start"] = None if self.start is None else round(self.start, 2)
        out["end"] = None if self.end is None else round(self.end, 2)
        return out


@dataclass(frozen=True)
class Transcript:
    turns: tuple[Turn, ...]
    call_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"turns": [t.to_json() for t in self.turns]}


def _number_or_none(turn: dict[str, Any], key: str, index: int) -> float | None:
    value = turn.get(key)
    if value is None:
        return None
    try:
        seconds = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an integer of hundreds of digits
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise TranscriptFormatError(f"turns[{index}].{key} must be a non-negative number of seconds")
    return seconds


def check_transcript_size(size: int, limits: TranscriptConfig = DEFAULT_LIMITS, where: str = "transcript") -> None:
    """Refuse a transcript of `size` bytes over transcript.max_mb, before it is even read."""
    if size > limits.max_mb * _MB:
        raise TranscriptFormatError(f"{where} is {size / _MB:.1f} MB, more than transcript.max_mb = {limits.max_mb}")


def transcript_from_json(document: Any, limits: TranscriptConfig = DEFAULT_LIMITS) -> Transcript:
    if not isinstance(document, dict) or not isinstance(document.get("turns"), list):
        raise TranscriptFormatError('transcript JSON must be an object with a "turns" list')
    if len(document["turns"]) > limits.max_turns:
        raise TranscriptFormatError(f"transcript has {len(document['turns'])} turns, more than transcript.max_turns = "
                                    f"{limits.max_turns}")
    turns = []
    for index, raw in enumerate(document["turns"]):
        if not isinstance(raw, dict):
            raise TranscriptFormatError(f"turns[{index}] must be an object")
        speaker = raw.get("speaker")
        if speaker not in SPEAKERS:
            raise TranscriptFormatError(f'turns[{index}].speaker must be "agent", "customer" or "unattributed", '
                                        f'not {shown(speaker)}')
        text = raw.get("text")
        if not isinstance(text, str):
            raise TranscriptFormatError(f"turns[{index}].text must be a string")
        if len(text) > limits.max_turn_chars:
            raise TranscriptFormatError(f"turns[{index}].text is {len(text)} characters, more than "
                                        f"transcript.max_turn_chars = {limits.max_turn_chars}")
        start = _number_or_none(raw, "start", index)
        end = _number_or_none(raw, "end", index)
        if start is not None and end is not None and end < start:
            raise TranscriptFormatError(f"turns[{index}] ends before it starts")
        if text.strip():
            turns.append(Turn(speaker, text.strip(), start, end))
    if not turns:
        raise TranscriptFormatError("transcript has no non-empty turns")
    call_id = document.get("call_id")
    return Transcript(tuple(turns), call_id if isinstance(call_id, str) else None)


def parse_transcript(data: bytes, limits: TranscriptConfig = DEFAULT_LIMITS, where: str = "transcript") -> Transcript:
    """A transcript JSON document, within `limits` (its size is checked before it is parsed)."""
    check_transcript_size(len(data), limits, where)
    return transcript_from_json(parse_json(data, where, TranscriptFormatError), limits)
