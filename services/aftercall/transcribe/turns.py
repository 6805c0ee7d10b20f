"""From recognised words to a conversation: every backend (embedded, Riva) produces per-channel word lists, and
these rules turn them into speaker turns merged by time."""

from __future__ import annotations

from typing import Sequence

from aftercall.core.audio import Audio
from aftercall.core.transcript import UNATTRIBUTED, Transcript, Turn, Word

# Segments of one speaker closer than this are one turn.
_TURN_JOIN_GAP_S = 1.2
# A pause this long inside one channel's segment is where the other party may have spoken.
_SPLIT_PAUSE_S = 0.7


def split_on_pauses(speaker: str, words: list[Word]) -> list[Turn]:
    """A recogniser's segment can span a long pause in which the other party spoke; split it at word gaps so the
    merged conversation keeps its order."""
    groups: list[list[Word]] = []
    for word in words:
        if groups and word.start - groups[-1][-1].end <= _SPLIT_PAUSE_S:
            groups[-1].append(word)
        else:
            groups.append([word])
    turns = []
    for group in groups:
        text = " ".join(w.text for w in group if w.text).strip()
        if text:
            turns.append(Turn(speaker, text, group[0].start, group[-1].end, tuple(group)))
    return turns


def merge_channels(per_channel: list[list[Turn]]) -> list[Turn]:
    """All channels' turns in time order, consecutive close turns of one speaker joined."""
    ordered = sorted((t for channel in per_channel for t in channel), key=lambda t: (t.start, t.speaker))
    joined: list[Turn] = []
    for turn in ordered:
        last = joined[-1] if joined else None
        if last is not None and last.speaker == turn.speaker and turn.start - last.end <= _TURN_JOIN_GAP_S:
            joined[-1] = Turn(last.speaker, f"{last.text} {turn.text}", last.start, turn.end, last.words + turn.words)
        else:
            joined.append(turn)
    return joined


def conversation(audio: Audio | None, per_channel: Sequence[list[list[Word]]], roles: tuple[str, ...], mono: str,
                 mono_min_confidence: float, live: bool = False) -> Transcript:
    """Each channel's recognised segments -> the call's turns. Stereo: a channel is a party (`roles`). Mono: by
    voice (`asr.mono = diarise`, see transcribe.speakers), or every turn to the one party named. A `live` stretch
    of a mono call is too little to tell two voices apart reliably, and a guess could flip between stretches: its
    turns stay unattributed until the whole call is attributed after hang-up."""
    if len(per_channel) > 1:
        turns = [[turn for words in segments for turn in split_on_pauses(speaker, words)]
                 for speaker, segments in zip(roles, per_channel)]
    elif mono == "diarise" and live:
        turns = [[turn for words in per_channel[0] for turn in split_on_pauses(UNATTRIBUTED, words)]]
    elif mono == "diarise":
        from aftercall.transcribe.speakers import attribute_speakers

        turns = [attribute_speakers(per_channel[0], audio.channel_float(0), audio.sample_rate, mono_min_confidence)]
    else:
        turns = [[turn for words in per_channel[0] for turn in split_on_pauses(mono, words)]]
    return Transcript(tuple(merge_channels(turns)))
