"""What the audio front end (VAD, recogniser, mono speaker attribution) did to a call whose reference turns carry
their times: synthesised calls know when each party spoke.

- dropped: a reference turn with under half of it recognised (near its time, on its speaker's channel), counted
  in letters and digits so that a misheard turn ("LS6 for VQ" for "L S six, four B Q") is a recognition error
  (WER has it) and only a turn the recogniser did not hear is dropped;
- wer per party: each channel against what that party said;
- hallucinated: recognised words where the channel's party was silent (the other side's turn, or the gaps);
- attribution (mono mixes): the share of recognised words given to the party who said them.
"""

from __future__ import annotations

from typing import Any, Sequence

from aftercall.core.transcript import UNATTRIBUTED, Transcript
from aftercall.evaluation.metrics import common_subsequence, normalised_tokens, word_errors
from aftercall.redact.numbers import TEENS, TENS, UNITS

_LONE_NUMBERS = {**UNITS, **TEENS, **TENS}
# Whisper's word times are rough: a word this close to a reference turn belongs to it.
_SLACK_S = 0.5


def _timed_words(transcript: Transcript) -> list[tuple[str, str, float]]:
    """(speaker, word, midpoint) of every recognised word."""
    return [(turn.speaker, word.text, (word.start + word.end) / 2) for turn in transcript.turns
            for word in turn.words]


def _letters_and_digits(text: str) -> str:
    """What was said, as one string: spoken numbers as digits, a lone one too ("Fourteen." is heard as "14")."""
    return "".join(str(_LONE_NUMBERS.get(token, token)) for token in normalised_tokens(text))


def _within(midpoint: float, turn: dict, slack: float = _SLACK_S) -> bool:
    return turn["start"] - slack <= midpoint <= turn["end"] + slack


def front_end_scores(reference: Sequence[dict], transcript: Transcript, mono: bool) -> dict[str, Any]:
    """`reference`: turns with speaker, text, start, end. `mono`: the call was recognised from a mix of both
    parties, so a word's channel says nothing and its attributed speaker is what is scored."""
    words = _timed_words(transcript)

    def heard_for(speaker: str) -> list[tuple[str, str, float]]:
        return words if mono else [w for w in words if w[0] == speaker]

    score: dict[str, Any] = {}
    for speaker in ("agent", "customer"):
        said = [t for t in reference if t["speaker"] == speaker]
        candidates = heard_for(speaker)
        dropped = 0
        for turn in said:
            wanted = _letters_and_digits(turn["text"])
            near = _letters_and_digits(" ".join(text for _, text, middle in candidates if _within(middle, turn)))
            dropped += common_subsequence(wanted, near) * 2 < len(wanted)
        score[f"dropped_{speaker}"] = (dropped, len(said))
        if not mono:
            recognised = " ".join(text for _, text, _ in candidates)
            score[f"wer_{speaker}"] = word_errors(recognised, " ".join(t["text"] for t in said))
    if mono:
        score["hallucinated"] = sum(1 for _, _, middle in words if not any(_within(middle, t) for t in reference))
        right = unattributed = judged = 0
        for speaker, _, middle in words:
            owners = [t for t in reference if _within(middle, t, 0.0)] or [t for t in reference if _within(middle, t)]
            if not owners:
                continue
            truth = min(owners, key=lambda t: abs((t["start"] + t["end"]) / 2 - middle))["speaker"]
            judged += 1
            right += speaker == truth
            unattributed += speaker == UNATTRIBUTED
        score["attribution"] = (right, judged)
        score["unattributed"] = (unattributed, judged)
    else:
        score["hallucinated"] = sum(
            1 for speaker, _, middle in words
            if not any(_within(middle, t) for t in reference if t["speaker"] == speaker))
    return score
