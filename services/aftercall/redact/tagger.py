"""A learned second opinion on the numbers and letters the rules left: a logistic model over each unclaimed piece's
shape and its context (the words around it, the question before it, the cues and IDs the rules found nearby).

The rules are precise but each one was written from excerpts that had been read; garbled values they never saw
survive. The model generalises from the same excerpts instead of matching them. It runs after the rules, on what
they left in the clear, and only adds redactions.

Trained by `make tagger` (aftercall.redact.training) from the tune halves of tests/redaction_calls, never the held-out
halves; the weights ship in tagger.json, checked against their sha256 at load.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from aftercall.redact import rules
from aftercall.redact.numbers import MONTHS, ORDINALS, SCALES, TEENS, TENS, UNITS, luhn_valid

if TYPE_CHECKING:
    from aftercall.redact.redactor import _Conversation

WEIGHTS = Path(__file__).with_name("tagger.json")
# The sha256 of tagger.json as trained; a changed file is refused, not silently used.
WEIGHTS_SHA256 = "3066288f2d0ff70c6a51b06a0987c0f6cdf19ca6bc44592b8d569214305aba24"
# As config's redact.tagger_threshold: chosen on sets the model was not trained on (docs/quality.md).
DEFAULT_THRESHOLD = 0.7

_TOKEN = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")
# Written text pasted into a transcript or a chat: a link or a handle is no value said.
_LINK = re.compile(r"\S*://\S*|\bwww\.\S*|@\w+")
_MONTH_WORDS = {*MONTHS, *(m[:3] for m in MONTHS), "sept"}
# How recognisers write letters said alone ("queue queue", "see", "zed").
_LETTER_NAMES = {"ay", "queue", "cue", "bee", "see", "sea", "dee", "gee", "jay", "kay", "el", "em", "en", "pea", "pee",
                 "tea", "vee", "ex", "zed", "zee", "aitch", "hay"}
# Digits as recognisers mishear them ("to ate for"); one alone is everyday talk, no piece.
_HOMOPHONES = {"won", "ate", "tree", "free", "for", "fore", "to", "too", "fife", "niner"}
# Number words the normaliser left as words ("july ninety", "to thousand and won").
_NUMBER_WORDS = {*UNITS, *TEENS, *TENS, *SCALES, *ORDINALS} - {"o"}
# Said inside a value without ending it.
_FILLERS = {"um", "uh", "er", "erm", "ah", "and", "double", "triple", "treble", "then", "dash", "hyphen", "space"}
_CONTEXT_WORDS = 4
_PREVIOUS_TURN_WORDS = 24
_ID_KINDS = {rules.CARD, rules.CVV, rules.NI, rules.NHS, rules.SSN, rules.DOB}


@dataclass(frozen=True)
class Piece:
    """Neighbouring tokens of a turn that could be (part of) a value: digits, letters, months, misheard digits."""

    turn: int
    start: int
    end: int
    tokens: tuple[str, ...]
    classes: tuple[str, ...]


def _token_class(token: str) -> str | None:
    lower = token.lower()
    if any(c.isdigit() for c in token):
        return "D"
    if len(token) == 1:
        return None if lower == "i" else "L"  # "i" is the caller, never an NI letter
    if lower in _MONTH_WORDS:
        return "M"
    if len(token) == 2 and token.isupper() and lower not in rules.TWO_LETTER_WORDS:
        return "P"  # "QQ", "JT": an NI number's first letters as one word
    if lower in _LETTER_NAMES:
        return "N"
    if lower in _HOMOPHONES:
        return "H"
    if lower in _NUMBER_WORDS:
        return "W"
    return None


def pieces(texts: list[str], taken: Callable[[int, int, int], bool] = lambda turn, start, end: False) -> list[Piece]:
    """Each turn's candidate pieces. Fillers join candidates; a piece of only weak tokens (a lone "to", "see", "a")
    is no candidate. A token `taken` (already redacted) ends a piece: what is left around it is judged apart."""
    found = []
    for turn, text in enumerate(texts):
        links = [m.span() for m in _LINK.finditer(text)]
        tokens = [(m, None if taken(turn, m.start(), m.end()) or any(a <= m.start() < b for a, b in links)
                   else _token_class(m.group())) for m in _TOKEN.finditer(text)]
        index = 0
        while index < len(tokens):
            if tokens[index][1] is None:
                index += 1
                continue
            members = [index]
            probe = index + 1
            while probe < len(tokens):
                if tokens[probe][1] is not None:
                    members.append(probe)
                    probe += 1
                elif tokens[probe][0].group().lower() in _FILLERS and probe + 1 < len(tokens) \
                        and tokens[probe + 1][1] is not None:
                    probe += 1
                else:
                    break
            index = probe
            classes = tuple(tokens[i][1] for i in members)
            # A lone weak token ("to", "see", "a", "one", "JT") is everyday talk.
            if any(c in "DM" for c in classes) or len(classes) >= 2:
                first, last = tokens[members[0]][0], tokens[members[-1]][0]
                found.append(Piece(turn, first.start(), last.end(), tuple(tokens[i][0].group() for i in members),
                                   classes))
    return found


def _bucket(n: int) -> str:
    return str(n) if n <= 4 else "5-6" if n <= 6 else "7-9" if n <= 9 else "10-12" if n <= 12 else "13+"


def words(text: str) -> list[str]:
    return [w.lower() for w in _TOKEN.findall(text)]


def features(conversation: _Conversation, piece: Piece, asked: list) -> list[str]:
    """The piece's shape, its turn and the two turns before it, the ID exchange open there (`asked`: the rules'
    exchange states, one list per turn) and what the rules found around it."""
    text = conversation.texts[piece.turn]
    said = text[piece.start:piece.end]
    digits = re.sub(r"\D", "", said)
    groups = [len(g) for g in re.findall(r"\d+", said)]
    size, kinds = f"digits:{_bucket(len(digits))}", "".join(sorted(set(piece.classes)))
    out = ["bias", size, f"speaker:{conversation.speakers[piece.turn]}",
           f"shape:{''.join(piece.classes)[:8]}", f"groups:{'.'.join(map(str, groups[:5]))}",
           f"tokens:{_bucket(len(piece.tokens))}"]
    out += [f"class:{c}" for c in set(piece.classes)]
    if re.search(r"\d[:.]\d\d\b", said):
        out.append("clock_or_price")
    if re.search(r"\d/\d", said):
        out.append("slash")
    if re.search(r"(?:19|20)\d\d", digits) and len(digits) == 4:
        out.append("year_like")
    if len(digits) >= 13 and luhn_valid(digits):
        out.append("luhn")
    before, after = words(text[:piece.start]), words(text[piece.end:])
    out += [f"before1:{w}" for w in before[-1:]] + [f"before:{w}" for w in before[-_CONTEXT_WORDS:]]
    out += [f"after1:{w}" for w in after[:1]] + [f"after:{w}" for w in after[:_CONTEXT_WORDS]]
    if re.search(r"[£$€]\s*$", text[:piece.start]):
        out.append("currency_before")
    out.append("alone" if len(before) + len(after) <= 3 else "in_sentence")
    for back in (1, 2):
        if piece.turn - back >= 0:
            previous = conversation.texts[piece.turn - back]
            same = conversation.speakers[piece.turn - back] == conversation.speakers[piece.turn]
            out += [f"prev{back}:{w}" for w in set(words(previous)[-_PREVIOUS_TURN_WORDS:])]
            out.append(f"prev{back}_speaker:{'same' if same else 'other'}")
    for turn in range(max(0, piece.turn - 2), piece.turn + 1):
        distance = piece.turn - turn
        for start, _, kind in conversation.cues[turn]:
            if distance or start < piece.start:
                out.append(f"cue{distance}:{kind}")
    state = next(a for a in reversed(asked[piece.turn]) if a.position <= piece.start)
    if state.kind is not None:
        out += [f"asked:{state.kind}", f"asked:{state.kind}|{size}", f"asked:{state.kind}|{kinds}",
                f"asked_complete:{state.complete}", f"asked_turns:{_bucket(piece.turn - state.since)}"]
        if state.read_back:
            out.append("moved_on")
    for span in conversation.spans:
        distance = span.turn - piece.turn
        if abs(distance) <= 2 and span.kind in rules.DIGIT_TYPES:
            out += [f"found{distance:+d}:{span.kind}", f"found:{span.kind}|{size}", f"found:{span.kind}|{kinds}"]
    # Said again, or a piece of an ID found elsewhere in the call.
    out += [f"echo:{kind}" for kind in echoed(conversation, piece)]
    return out


def echoed(conversation: _Conversation, piece: Piece) -> list[str]:
    """The kinds of the IDs found in other turns that the piece repeats (part of): their digits, or their words
    where it has no digits ("QQ?", "October?" read back)."""
    said = conversation.texts[piece.turn][piece.start:piece.end]
    digits = re.sub(r"\D", "", said)
    kinds = []
    for span in conversation.spans:
        if span.kind not in _ID_KINDS or span.turn == piece.turn:
            continue
        found = conversation.texts[span.turn][span.start:span.end]
        found_digits = re.sub(r"\D", "", found)
        if len(digits) >= 2 and found_digits and (digits in found_digits or found_digits in digits) or (
                not digits and set(words(said)) & set(words(found))):
            kinds.append(span.kind)
    return kinds


class Tagger:
    """The trained weights; `probability` of a piece being part of an ID, redacted from `threshold` on."""

    def __init__(self, weights: dict[str, float], threshold: float = DEFAULT_THRESHOLD):
        self.weights = weights
        self.threshold = threshold

    def probability(self, names: Iterable[str]) -> float:
        z = sum(self.weights.get(name, 0.0) for name in names)
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    @classmethod
    def from_file(cls, path: Path, sha256: str, threshold: float = DEFAULT_THRESHOLD) -> Tagger:
        raw = path.read_bytes()
        if hashlib.sha256(raw).hexdigest() != sha256:
            raise RuntimeError(f"{path}: sha256 is not that of the trained weights ({sha256}); retrain with "
                               "`make tagger` and set WEIGHTS_SHA256 to what it prints")
        return cls(json.loads(raw)["weights"], threshold)


@lru_cache(maxsize=4)
def shipped_tagger(threshold: float = DEFAULT_THRESHOLD) -> Tagger:
    """The weights that ship with the package, loaded once per threshold."""
    return Tagger.from_file(WEIGHTS, WEIGHTS_SHA256, threshold)
