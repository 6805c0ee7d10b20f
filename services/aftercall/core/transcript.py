"""The transcript schema shared by the CLI, the summariser and (later) the Triton model:
`{"turns": [{"speaker": "agent"|"customer"|"unattributed", "text": "...", "start": s, "end": s}, ...]}`.
"unattributed": a mono recording's turn whose speaker could not be told with confidence (never guessed)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

from aftercall.core.errors import TranscriptFormatError

UNATTRIBUTED = "unattributed"
SPEAKERS = ("agent", "customer", UNATTRIBUTED)


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
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise TranscriptFormatError(f"turns[{index}].{key} must be a non-negative number of seconds")
    return float(value)


def transcript_from_json(document: Any) -> Transcript:
    if not isinstance(document, dict) or not isinstance(document.get("turns"), list):
        raise TranscriptFormatError('transcript JSON must be an object with a "turns" list')
    turns = []
    for index, raw in enumerate(document["turns"]):
        if not isinstance(raw, dict):
            raise TranscriptFormatError(f"turns[{index}] must be an object")
        speaker = raw.get("speaker")
        if speaker not in SPEAKERS:
            raise TranscriptFormatError(f'turns[{index}].speaker must be "agent", "customer" or "unattributed", '
                                        f'not {speaker!r}')
        text = raw.get("text")
        if not isinstance(text, str):
            raise TranscriptFormatError(f"turns[{index}].text must be a string")
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


def parse_transcript(data: bytes) -> Transcript:
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise TranscriptFormatError("transcript is not UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise TranscriptFormatError(f"transcript is not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    return transcript_from_json(document)
