"""Redact a whole conversation (numbers may be spread over several turns) or a single text (the summary re-check).

Order of work: spoken numbers -> digits; self-evident patterns (e-mail, IBAN, formatted SSN, postcode, address);
names, places and buildings by spaCy's recogniser (redact.entities) and names introduced by a cue, each name then
redacted at every mention in the call; an address's pieces joined ("14 Rosewood Avenue, Leeds LS6 4BQ" is one
[ADDRESS]); digit runs classified by the cue said before them; runs that continue across turns ("4532" / "mm-hm" /
"0151 1283 0366") are chained and judged as one number; then the exchange around each ID question: every number
said from the question until the talk moves on is the value asked for (pieces, corrections, read-backs); last, an ID
found once is redacted wherever it is said again. Card numbers keep their last four digits.
"""

from __future__ import annotations

import datetime
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Literal, NamedTuple

from aftercall.core.transcript import Transcript
from aftercall.redact import rules
from aftercall.redact.entities import EntityFinder, could_be_name, shared_finder
from aftercall.redact.numbers import MONTHS, ORDINALS, TEENS, TENS, UNITS, luhn_valid, normalise_numbers
from aftercall.redact.tagger import Tagger, echoed, features, pieces, shipped_tagger

_PLACEHOLDER = re.compile(r"\[[A-Z_]+(?: \*{4}\d{4})?\]")
# A hyphenated run is one word: recognisers write "mm-hm" as "M-M-H-M", which is still a short acknowledgement.
# A word starts with a letter, not inside a number ("30th", "'82").
_WORDS = re.compile(r"(?<![\w'])[A-Za-z][A-Za-z']*(?:-[A-Za-z']+)*")
# What may stand between two pieces of one address: "14 Rosewood Avenue, Leeds", "Flat 2 in Leeds LS6 4BQ".
_ADDRESS_GLUE = re.compile(r"[\s,>?]*(?:in\s+)?")
_ADDRESS_PIECES = {rules.ADDRESS, rules.LOCATION, rules.POSTCODE}
# Letters glued to digits: a reference or an order number ("FR-208815", "PM661377").
_IDENTIFIER = re.compile(r"[A-Za-z]-?\d|\d-?[A-Za-z]{2}")
# An answer to a name question longer than this is not just the name.
_MAX_NAME_ANSWER_WORDS = 6
# A turn that only acknowledges ("yes", "mm-hm", "go on") does not break a number read out in pieces.
_MAX_ACK_WORDS = 5
_MAX_CHAIN_TURN_GAP = 3
# A cue reaches this many turns ahead when the turns between are pauses of at most this many words, no digits.
_MAX_CUE_TURNS = 5
_MAX_PAUSE_WORDS = 8
_CARD_TALK_TURNS = 4
# The NI number's last letter is said in a turn of at most this many words ("it's got a c at the end").
_MAX_LETTER_TURN_WORDS = 8
# A whole date at least this many years back is a date of birth.
_ADULT_YEARS = 16
# The values whose question opens an exchange (every number said in it is the value asked for), and the most digits
# each has: a longer number is none of it ("a product code on the back of the box" / "445 512").
_MOST_DIGITS = {rules.CARD: 19, rules.CVV: 4, rules.NI: 6, rules.NHS: 10, rules.SSN: 9, rules.DOB: 8}
_EXCHANGE_KINDS = tuple(_MOST_DIGITS)
# The agent may read these from the record to be confirmed (not a card or its code: its last four are kept).
_ON_RECORD_KINDS = (rules.NI, rules.NHS, rules.SSN, rules.DOB)
# Once this many digits were given, the value is complete: a longer turn after it is about something else.
_FEWEST_DIGITS = {rules.CARD: 15, rules.CVV: 3, rules.NI: 6, rules.NHS: 10, rules.SSN: 9, rules.DOB: 4}
# ... unless it asks for the value again or for its last piece ("and the letter at the end?", "and the year?").
_ASKS_AGAIN = (rules.SAY_AGAIN, rules.NI_SUFFIX_QUESTION, rules.YEAR_QUESTION)
# A read-back of an ID given in pieces is found by at least this many of its digits in a row.
_JOINED_DIGITS = 5
# Once part of a value was given, more of it in a longer turn follows within this many words.
_MAX_GAP_WORDS = 4
_MONTH_NUMBER = {name[:3]: number for number, name in enumerate(MONTHS[:12], 1)}
# An exchange lasts while numbers keep coming: it ends this many longer turns after its question or its last number
# (twice as many short ones).
_MAX_QUIET_TURNS = 5


@dataclass(frozen=True)
class Secret:
    kind: str
    value: str


@dataclass
class Redaction:
    transcript: Transcript
    counts: Counter = field(default_factory=Counter)
    # Kept in memory only, for the leak check of the finished summary; never serialised.
    secrets: list[Secret] = field(default_factory=list, repr=False)


@dataclass
class _Span:
    turn: int
    start: int
    end: int
    kind: str
    label: str


@dataclass
class _Run:
    turn: int
    start: int
    end: int
    text: str
    digits: str
    context: str | None
    amount: bool = False
    day: bool = False  # "the 20th"


class _Asked(NamedTuple):
    """From `position` of a turn on, the ID asked for (None: none), whether all of it was given by then, the turn
    its exchange opened, and whether the talk has moved on in this turn (only a read-back is the value still)."""

    position: int
    kind: str | None
    complete: bool
    since: int
    read_back: bool = False


def _street_name(words: str) -> bool:
    """Words between two numbers name a street when the first is capitalised and none is a month or a weekday."""
    return words[:1].isupper() and not any(w.lower() in _CALENDAR_WORDS for w in words.split())


_CALENDAR_WORDS = {*MONTHS, *(m[:3] for m in MONTHS), "monday", "tuesday", "wednesday", "thursday", "friday",
                   "saturday", "sunday", "the", "of", "and", "or", "to", "at", "on", "in", "for", "from"}


def nhs_valid(digits: str) -> bool:
    if len(digits) != 10:
        return False
    check = 11 - sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1))) % 11
    return (0 if check == 11 else check) == int(digits[9]) and check != 10


class _Conversation:
    """Working state for one redaction: normalised texts, cue positions, spans found so far."""

    def __init__(self, texts: list[str], speakers: list[str], table: rules.RuleTable):
        self.texts = texts
        self.speakers = speakers
        self.table = table
        self.cues = [[(m.start(), m.end(), rules.cue_kind(m)) for m in table.cue_pattern.finditer(t)] for t in texts]
        self.spans: list[_Span] = []
        self.counts: Counter = Counter()
        self.secrets: list[Secret] = []

    # -- bookkeeping ---------------------------------------------------------------------------------
    def taken(self, turn: int, start: int, end: int) -> bool:
        return any(s.turn == turn and s.start < end and start < s.end for s in self.spans)

    def add(self, turn: int, start: int, end: int, kind: str, label: str | None = None, count: bool = True) -> None:
        if self.taken(turn, start, end):
            return
        value = self.texts[turn][start:end]
        if not self.table.enabled(kind):
            # Turned off by the site: left as said, but still claimed, so its digits are not read as another type.
            self.spans.append(_Span(turn, start, end, kind, value))
            return
        self.spans.append(_Span(turn, start, end, kind, label or _placeholder(kind)))
        if kind in rules.DIGIT_TYPES:
            value = re.sub(r"\D", "", value)
        if value:
            self.secrets.append(Secret(kind, value))
        if count:
            self.counts[kind] += 1

    def context(self, turn: int, position: int, enabled_only: bool = False, same_turn: bool = False) -> str | None:
        """The kind of the last cue said before `position`: same turn, else up to two turns back, or further back
        across pauses while the caller finds the number ("hang on" / "let me get my card out"), never past a turn
        that answered an ID question. `enabled_only`: the last cue of a type the site has not turned off;
        `same_turn`: a cue in this turn only."""
        for index in range(turn, turn - 1 if same_turn else max(-1, turn - _MAX_CUE_TURNS - 1), -1):
            if index < turn - 2 and not all(self.is_pause(t) or self.is_aside(t) for t in range(index + 1, turn)):
                return None
            if index < turn and any(s.turn == index + 1 < turn and s.kind in _EXCHANGE_KINDS for s in self.spans):
                return None  # the question was answered in between ("22.11.1958" / "the nurse on 12.12")
            candidates = [c for c in self.cues[index] if (index < turn or c[1] <= position)
                          and not (enabled_only and c[2] in self.table.off)
                          and (c[2] != rules.CVV_IF_CARD or self.card_near(index))]
            if candidates:
                specific = [c for c in candidates if c[2] != rules.CARD_WORD]
                kind = (specific or candidates)[-1][2]
                if kind == rules.CARD_WORD and index == turn and turn > 0 and not same_turn:
                    # "is that the blue card? it's 932...": the word names the card the question was about
                    earlier = self.context(turn - 1, len(self.texts[turn - 1]), enabled_only, same_turn=True)
                    return earlier if earlier in _EXCHANGE_KINDS else rules.CARD
                if kind == rules.CARD_WORD:
                    return rules.CARD
                if kind == rules.CVV_IF_CARD:
                    return rules.CVV
                return None if kind == rules.NEUTRAL else kind
        return None

    def cues_between(self, turn: int, after: int, last_turn: int, before: int) -> Iterator[str]:
        """The kinds of the cues said after position `after` of `turn` and before position `before` of
        `last_turn`."""
        for index in range(turn, last_turn + 1):
            low = after if index == turn else 0
            high = before if index == last_turn else len(self.texts[index])
            yield from (kind for start, end, kind in self.cues[index] if low <= start and end <= high)

    def cue_between(self, a: _Run, b: _Run) -> bool:
        return any(self.cues_between(a.turn, a.end, b.turn, b.start))

    def cued_near(self, turn: int, kinds: tuple[str, ...], turns_back: int = 2) -> bool:
        """A cue of one of `kinds` in this turn or the `turns_back` before."""
        return any(cue[2] in kinds for index in range(max(0, turn - turns_back), turn + 1) for cue in self.cues[index])

    def card_near(self, turn: int) -> bool:
        """A card is being read: said in this turn or the four before, a card number redacted there, or a payment
        talked of."""
        recent = range(max(0, turn - _CARD_TALK_TURNS), turn + 1)
        return (self.cued_near(turn, (rules.CARD, rules.CARD_WORD, rules.CVV), _CARD_TALK_TURNS)
                or any(span.kind == rules.CARD and span.turn in recent for span in self.spans)
                or any(rules.PAYMENT_TALK.search(self.texts[t]) for t in recent))

    def is_pause(self, turn: int) -> bool:
        """An acknowledgement, or a turn of the caller finding the number ("hang on, it's in my other bag")."""
        text = self.texts[turn]
        return self.is_ack(turn) or (not re.search(r"\d", text) and bool(rules.HOLD_ON.search(text))
                                     and len(_WORDS.findall(text)) <= _MAX_PAUSE_WORDS)

    def is_aside(self, turn: int) -> bool:
        """A question about the question, or its answer ("is it safe to give that over the phone?"): no number and
        no cue of any type."""
        return not re.search(r"\d", self.texts[turn]) and not self.cues[turn]

    def is_short(self, turn: int) -> bool:
        text = self.texts[turn]
        return not re.search(r"\d", text) and len(_WORDS.findall(text)) <= _MAX_PAUSE_WORDS

    def is_ack(self, turn: int) -> bool:
        text = self.texts[turn]
        return not re.search(r"\d", text) and len(_WORDS.findall(text)) <= _MAX_ACK_WORDS

    # -- detection passes ----------------------------------------------------------------------------
    def protect_placeholders(self) -> None:
        for turn, text in enumerate(self.texts):
            for m in _PLACEHOLDER.finditer(text):
                self.spans.append(_Span(turn, m.start(), m.end(), "", m.group()))

    def patterns(self) -> None:
        for turn, text in enumerate(self.texts):
            for pattern, kind in ((rules.EMAIL_WRITTEN, rules.EMAIL), (rules.EMAIL_SPOKEN, rules.EMAIL),
                                  (rules.SSN_FORMATTED, rules.SSN), (rules.IBAN, rules.ACCOUNT),
                                  (rules.NI_SHAPE, rules.NI), (rules.POSTCODE_UK, rules.POSTCODE),
                                  (rules.MILITARY_ADDRESS, rules.ADDRESS), (rules.CORNER, rules.ADDRESS),
                                  (rules.ADDRESS_PATTERN, rules.ADDRESS), (rules.STREET_NUMBER_AFTER, rules.ADDRESS)):
                for m in pattern.finditer(text):
                    if kind == rules.ACCOUNT and not re.search(r"\d{6}", re.sub(r"\s", "", m.group())):
                        continue
                    if pattern is rules.NI_SHAPE and m.group("prefix").lower() in rules.TWO_LETTER_WORDS:
                        continue
                    if pattern is rules.STREET_NUMBER_AFTER and not _street_name(m.group("street")):
                        continue
                    self.add(turn, m.start(), m.end(), kind)
            if turn > 0 and rules.ADDRESS_QUESTION.search(self.texts[turn - 1]):
                for m in rules.STREET_ALONE.finditer(text):
                    self.add(turn, m.start(), m.end(), rules.ADDRESS)
            asked_here = self.speakers[turn] == "agent"  # see digit_runs
            for m in rules.DATE.finditer(text):
                if self.context(turn, m.start(), same_turn=asked_here) == rules.DOB or _birth_date(m.group()):
                    self.add(turn, m.start(), m.end(), rules.DOB)
            for m in rules.YEAR_OF_BIRTH.finditer(text):
                if self.context(turn, m.start(), same_turn=asked_here) == rules.DOB:
                    self.add(turn, m.start(), m.end(), rules.DOB)
            for pattern, kind in ((rules.NI_LOOSE, rules.NI), (rules.POSTCODE_LOOSE, rules.POSTCODE)):
                for m in pattern.finditer(text):
                    if self.context(turn, m.start()) == kind and re.search(r"\d", m.group()):
                        self.add(turn, m.start(), m.end(), kind)
            prefix = rules.NI_PREFIX_ALONE.fullmatch(text)
            if (prefix and self.context(turn, 0) == rules.NI
                    and re.sub(r"\W", "", prefix.group("prefix")).lower() not in rules.TWO_LETTER_WORDS):
                self.add(turn, prefix.start("prefix"), prefix.end("prefix"), rules.NI, count=False)

    def _ni_suffix(self, turn: int) -> None:
        """The NI number's last letter in a turn of its exchange: asked for on its own ("and the letter at the end?" /
        "d", "it's got a c at the end"), confirmed ("and that's A for alpha at the end?"), said after the number
        ("... and then c") or as the whole turn ("C.", "see"); in a longer turn only spelt ("was that D for dog?",
        "the letter's see") or right after the number."""
        text = self.texts[turn]
        if len(_WORDS.findall(text)) > _MAX_LETTER_TURN_WORDS:
            letters = [*rules.NI_SUFFIX_SPELT.finditer(text),
                       *(m for m in rules.NI_SUFFIX.finditer(text) if self._just_after_ni(turn, m.start()))]
            for m in letters:
                self._add_letters(turn, m.start(), m.end())
            return
        asked = (any(rules.NI_SUFFIX_QUESTION.search(self.texts[t]) for t in range(max(0, turn - 2), turn + 1))
                 or bool(rules.NI_SUFFIX_ALONE.fullmatch(text)))
        letters = [m for m in rules.NI_SUFFIX.finditer(text) if asked or self._just_after_ni(turn, m.start())]
        if letters:  # "it's got a c at the end": the last one
            self._add_letters(turn, letters[-1].start(), letters[-1].end())

    def _ni_prefix(self, turn: int) -> None:
        """The NI number's letters in a turn of its exchange: two said just before its digits ("j m [NI_NUMBER]",
        "Sierra Echo, ..."), said as words anywhere ("here we are, queue queue", "em tea"), any letter spelt ("no, m
        for mother"), and two ending a turn with no digits ("hang on, q q", "it starts Y S...")."""
        for span in [s for s in self.spans if s.turn == turn and s.kind == rules.NI]:
            prefix = rules.NI_PREFIX_BEFORE.search(self.texts[turn][:span.start])
            if prefix and re.sub(r"\W", "", prefix.group().split()[0]).lower() not in rules.TWO_LETTER_WORDS:
                self._add_letters(turn, prefix.start(), span.start)
        text = self.texts[turn]
        for m in [*rules.NI_PREFIX_SPOKEN.finditer(text), *rules.NI_LETTER_SPELT.finditer(text)]:
            self._add_letters(turn, m.start(), m.end())
        last = rules.NI_PREFIX_LAST.search(text)
        letters = re.sub(r"\W", "", last.group("prefix")).lower() if last else ""
        # Not a word ("is", "no"), nor "i" or a lower-case "a" (the pronoun, the article: "a b" is an ordinary "a").
        if (letters and letters not in rules.TWO_LETTER_WORDS and "i" not in letters and not re.search(r"\d", text)
                and not last.group("prefix").startswith("a")):
            self._add_letters(turn, last.start("prefix"), last.end("prefix"))

    def _add_letters(self, turn: int, start: int, end: int) -> None:
        """NI letters, over a name the recogniser saw in them ("C for Charlie")."""
        for span in [s for s in self.spans if s.turn == turn and s.kind == rules.NAME and start <= s.start < end]:
            self.spans.remove(span)
        self.add(turn, start, end, rules.NI, count=False)

    def _just_after_ni(self, turn: int, position: int) -> bool:
        """An NI number ends at most three words before `position` in this turn ("QQ 12 34 56, and then c")."""
        return any(s.turn == turn and s.kind == rules.NI and s.end <= position
                   and len(_WORDS.findall(self.texts[turn][s.end:position])) <= 3 for s in self.spans)

    def cued_names(self) -> set[str]:
        """Words of the names said after a cue ("my name is", "this is", "Mr")."""
        found: set[str] = set()
        for text in self.texts:
            for m in rules.NAME_CUE.finditer(text):
                parts = [p for p in m.group(1).split() if p not in rules.NOT_NAMES]
                if parts and m.group(1).split()[0] not in rules.NOT_NAMES:
                    found.update(parts)
        return found

    def entities(self, finder: EntityFinder) -> set[str]:
        """Names, places and buildings the recogniser finds; returns the words of the names."""
        found: set[str] = set()
        for turn, entities in enumerate(finder.find(self.texts)):
            for entity in entities:
                # What a pattern took already stays (the recogniser reads "Leeds LS6 4BQ" as one place): the
                # entity keeps the part before it.
                end = min([s.start for s in self.spans if s.turn == turn and entity.start <= s.start < entity.end]
                          + [entity.end])
                end = len(self.texts[turn][:end].rstrip(" ,"))
                if end <= entity.start or self.taken(turn, entity.start, end):
                    continue
                # A name or a place has no digits, and no address has an identifier in it: the recogniser reads
                # case references ("FR-208815") as places.
                piece = self.texts[turn][entity.start:end]
                if _IDENTIFIER.search(piece) or (entity.kind != rules.ADDRESS and re.search(r"\d", piece)):
                    continue
                if entity.kind != rules.NAME and rules.SPELT_LETTERS.search(piece):
                    continue  # a name spelt out ("w-h-i-t-f-i-e-l-d"), never a place: answered_names takes it
                if entity.kind == rules.NAME:
                    words = set(re.findall(r"[A-Za-z][A-Za-z'\-]*", self.texts[turn][entity.start:end]))
                    words = {re.sub(r"'s$", "", w) for w in words} - rules.TITLES - rules.NOT_NAMES
                    found.update(w for w in words if len(w) > 1)
                    # Counted per name word, with the cued names, when they are propagated.
                    self.add(turn, entity.start, end, rules.NAME, count=False)
                else:
                    self.add(turn, entity.start, end, entity.kind)
        return found

    def answered_names(self) -> set[str]:
        """A short answer to a name question is a name ("and your first name" / "rose"), spelt out or not; a name
        spelt out after it is said ("Jamal, J A M A L") is one too. Returns the name words."""
        found: set[str] = set()
        for turn, text in enumerate(self.texts):
            answer = turn > 0 and bool(rules.NAME_QUESTION.search(self.texts[turn - 1]))
            named = any(s.turn == turn and s.kind == rules.NAME for s in self.spans)
            if answer or named or rules.NAME_QUESTION.search(text):
                for m in rules.SPELT_LETTERS.finditer(text):
                    self.add(turn, m.start(), m.end(), rules.NAME, count=False)
            words = list(_WORDS.finditer(text))
            if not answer or len(words) > _MAX_NAME_ANSWER_WORDS:
                continue
            for m in words:
                word = m.group()
                if (could_be_name(word) and word.lower() not in rules.NOT_NAME_ANSWERS
                        and word.capitalize() not in rules.NOT_NAMES | rules.TITLES
                        and not self.taken(turn, m.start(), m.end())):
                    self.add(turn, m.start(), m.end(), rules.NAME, count=False)
                    found.add(word)
        return found

    def propagate_names(self, found: set[str]) -> None:
        """A name found once is redacted wherever it is said again, in either channel; a name on the site's list
        wherever it is said, in any case."""
        known = {name.lower() for name in found}  # one name, however it was written
        listed = {name.lower() for name in self.table.names} - known
        patterns = [re.compile(rf"\b{re.escape(name)}\b") for name in found]
        patterns += [re.compile(rf"\b{re.escape(name)}\b", re.IGNORECASE) for name in listed]
        said = set()
        for pattern in sorted(patterns, key=lambda p: len(p.pattern), reverse=True):
            for turn, text in enumerate(self.texts):
                for m in pattern.finditer(text):
                    self.add(turn, m.start(), m.end(), rules.NAME, count=False)
                    said.add(m.group().lower())
        if self.table.enabled(rules.NAME):
            self.counts[rules.NAME] += len(known) + len(said & listed)

    def extend_addresses(self) -> None:
        """An address runs on past its street: the house or postal number before it, and after a comma or a line
        break its flat, town, postal code and country ("935 69 Gordon Terrace / Suite 828 / BASHALL TOWN")."""
        if not self.table.enabled(rules.ADDRESS):
            return
        for span in [s for s in self.spans if s.kind == rules.ADDRESS]:
            text = self.texts[span.turn]
            before = rules.NUMBERS_BEFORE_ADDRESS.search(text[:span.start])
            if before and not self.taken(span.turn, before.start(), span.start):
                span.start = before.start()
            while (after := rules.ADDRESS_CONTINUES.match(text, span.end)) and after.end() > span.end \
                    and not self.taken(span.turn, span.end, after.end()):
                span.end = after.end()
            self.secrets.append(Secret(rules.ADDRESS, text[span.start:span.end]))

    def join_addresses(self) -> None:
        """Neighbouring pieces of one address (street, town, postcode) become one [ADDRESS]: a street alone says
        less, and the town left between two placeholders says where the caller lives."""
        if not self.table.enabled(rules.ADDRESS):
            return  # a town or a postcode is then redacted on its own, if at all
        for turn, text in enumerate(self.texts):
            pieces = sorted((s for s in self.spans if s.turn == turn and s.kind in _ADDRESS_PIECES
                             and self.table.enabled(s.kind)),
                            key=lambda s: s.start)
            for first, second in zip(pieces, pieces[1:]):
                if not _ADDRESS_GLUE.fullmatch(text[first.end:second.start]):
                    continue
                if rules.ADDRESS not in (first.kind, second.kind) and rules.POSTCODE not in (first.kind, second.kind):
                    continue  # two places side by side ("Leeds, Yorkshire") are not yet an address
                # One address, counted once.
                self.spans.remove(first)
                self.counts[first.kind] -= 1
                self.counts[second.kind] -= 1
                self.counts[rules.ADDRESS] += 1
                second.start, second.kind, second.label = first.start, rules.ADDRESS, _placeholder(rules.ADDRESS)
        self.counts += Counter()  # drops the kinds whose count fell to zero

    def digit_runs(self, days: bool = False) -> list[_Run]:
        """The digit runs no pass has claimed, but clock times and identifiers; `days`: "the 20th" too."""
        runs = []
        for turn, text in enumerate(self.texts):
            for start, end in (piece for m in rules.DIGIT_RUN.finditer(text) for piece in _after_a_card(text, m)):
                # Trailing separators belong to the sentence, not the number.
                while end > start and not text[end - 1].isdigit():
                    end -= 1
                # Glued to letters ("ZC-30552", "PM661377") it is an identifier the patterns did not claim:
                # an order or permit number, never a card, code or date.
                if self.taken(turn, start, end) or re.search(r"[A-Za-z]-?$", text[:start]):
                    continue
                # "the 20th", "at 11:30": a day or a clock time, never part of an identifier.
                day = bool(rules.ORDINAL_SUFFIX.match(text[end:]))
                if (day and not days) or rules.CLOCK_TIME.search(text[:start] + "#" + text[end:]):
                    continue
                digits = re.sub(r"\D", "", text[start:end])
                # The agent says a value in the turn that asks for it ("can I confirm your date of birth is 3/5/80?");
                # a number in a later agent turn is a read-back (the exchange finds it) or other business.
                context = self.context(turn, start, same_turn=self.speakers[turn] == "agent")
                amount = _not_an_id(text, start, end, context)
                runs.append(_Run(turn, start, end, text[start:end], digits, context, amount, day))
        return runs

    def chains(self, runs: list[_Run]) -> list[list[_Run]]:
        chains: list[list[_Run]] = []
        for run in runs:
            previous = chains[-1][-1] if chains else None
            joined = "".join(r.digits for r in chains[-1]) if chains else ""
            context = chains[-1][0].context if chains else None
            # A chain holds one value: a whole card number, or as many digits as its type has, ends it ("260" /
            # "260" read back / "that's 44.99").
            full = _whole_card_number(joined) or (context in _MOST_DIGITS and context != rules.CARD
                                                  and len(joined) + len(run.digits) > _MOST_DIGITS[context])
            if previous is not None and not full and self._continues(previous, run, context):
                chains[-1].append(run)
            else:
                chains.append([run])
        return chains

    def _continues(self, previous: _Run, run: _Run, context: str | None) -> bool:
        # A continuation said turns later has lost the cue's reach, so it may carry no context of its own.
        if previous.amount or run.amount or run.context not in (None, context) or self.cue_between(previous, run):
            return False
        if run.turn == previous.turn:
            return len(_WORDS.findall(self.texts[run.turn][previous.end : run.start])) <= 3
        if run.turn - previous.turn > _MAX_CHAIN_TURN_GAP:
            return False
        between = range(previous.turn + 1, run.turn)
        tail_words = len(_WORDS.findall(self.texts[previous.turn][previous.end :]))
        lead_words = len(_WORDS.findall(self.texts[run.turn][: run.start]))
        return tail_words <= 3 and lead_words <= 3 and all(self.is_ack(t) for t in between)

    def classify(self, chain: list[_Run]) -> None:
        if chain[0].amount:
            return
        context = chain[0].context
        digits = "".join(r.digits for r in chain)
        count = len(digits)
        if context == rules.CARD and count in (3, 4) and self.cued_near(chain[0].turn, (rules.CVV,)):
            context = rules.CVV  # "the four-digit code on the front, above the card number": a code, not the card
        if context == rules.CVV and any(len(run.digits) > 4 and not _said_twice(run.digits) for run in chain):
            context = None  # a security code has 3 or 4 digits (said twice, read back): a longer number is not one
        if context is not None and not self.table.enabled(context):
            # A type the site turned off never hides a card or its code: each piece is judged by the last cue of a
            # type still on ("the long number and the expiry" / "4532 0151 1283 0366, 04 27" is a card).
            for run in chain:
                self.classify([replace(run, context=self.context(run.turn, run.start, enabled_only=True))])
            return
        # Luhn alone (no card asked for) judges one speaker's number: asked for another ID, a number that happens to
        # pass is that ID; a number and its read-back are no card together.
        one_speaker = len({self.speakers[run.turn] for run in chain}) == 1
        if context == rules.CARD or (context not in _EXCHANGE_KINDS and one_speaker and 13 <= count <= 19
                                     and luhn_valid(digits)):
            if count >= 12:
                self._mark_card(chain, digits)
            elif count >= 5:
                for run in chain:
                    self.add(run.turn, run.start, run.end, rules.CARD, count=run is chain[0])
            return
        minimum = {rules.CVV: 3, rules.EXPIRY: 3, rules.DOB: 2, rules.SSN: 4, rules.NI: 6, rules.NHS: 6,
                   rules.PHONE: 6, rules.ACCOUNT: 6, rules.SORT_CODE: 6, rules.PIN: 4, rules.POSTCODE: 3}
        if context in minimum:
            if count >= minimum[context]:
                for run in chain:
                    self.add(run.turn, run.start, run.end, context, count=run is chain[0])
            return
        for run in chain:
            self._classify_alone(run)

    def _mark_card(self, chain: list[_Run], digits: str) -> None:
        for run in chain:
            last = run is chain[-1]
            label = f"[CARD ****{digits[-4:]}]" if last else _placeholder(rules.CARD)
            self.add(run.turn, run.start, run.end, rules.CARD, label=label, count=last)

    def _classify_alone(self, run: _Run) -> None:
        digits, count = run.digits, len(run.digits)
        if 13 <= count <= 19:
            kind = rules.CARD if luhn_valid(digits) else rules.NUMBER
            if kind == rules.CARD:
                self._mark_card([run], digits)
            else:
                self.add(run.turn, run.start, run.end, kind)
        elif count == 10 and nhs_valid(digits) and (re.fullmatch(r"\d{3}\s\d{3}\s\d{4}", run.text) or any(
                kind == rules.NHS for cues in self.cues for _, _, kind in cues)):  # "and hers is 3374514413"
            self.add(run.turn, run.start, run.end, rules.NHS)
        elif rules.PHONE_FORMATTED.fullmatch(run.text) or (count in (10, 11) and digits[0] == "0") or (
            run.text.startswith("+") and count >= 8
        ):
            self.add(run.turn, run.start, run.end, rules.PHONE)
        elif re.fullmatch(r"\d{2}-\d{2}-\d{2}", run.text):
            self.add(run.turn, run.start, run.end, rules.SORT_CODE)

    def exchanges(self) -> None:
        """Every number said while an ID is asked for is that ID, whatever its length or shape: the caller's answer
        in pieces, across pauses and asides, corrected, and the agent's read-back; not a number that describes the
        value ("two letters, six numbers"), is part of the question ("the last three") or names something else
        ("option 2"), an amount, a time, or a number longer than the value. A day ("the 2nd") only in a date of
        birth. An exchange opens at a cue of an ID type and closes at a cue of any other type (a reference, a
        declined question), at a longer turn once the value is complete (the talk moved on, unless to ask for it
        again or for its last piece; only a read-back still counts in that turn), or `_MAX_QUIET_TURNS` turns after
        its question or its last number."""
        states = self.exchange_states()
        # (turn, start, end, a piece only of a date of birth): dates ("30th of September"), digit runs and days
        # ("the 30th", "the fourth"), digits left as words ("one" only as the whole turn), a year alone ("'76. 1976":
        # each, not one run), and a month said alone while a date of birth is still being given ("of September...").
        pieces = [(turn, m.start(), m.end(), True) for turn, text in enumerate(self.texts)
                  for m in rules.DATE.finditer(text)]
        pieces += [(run.turn, run.start, rules.ORDINAL_SUFFIX.match(self.texts[run.turn], run.end).end() if run.day
                   else run.end, run.day) for run in self.digit_runs(days=True)]
        pieces += [(turn, m.start(), m.end(), False) for turn, text in enumerate(self.texts)
                   for m in rules.LONE_NUMBER_WORD.finditer(text)]
        pieces += [(turn, m.start("digit"), m.end("digit"), False) for turn, text in enumerate(self.texts)
                   if (m := rules.WEAK_DIGIT_ALONE.fullmatch(text))]
        pieces += [(turn, m.start(), m.end(), True) for turn, text in enumerate(self.texts)
                   for m in rules.DAY_WORD.finditer(text)]
        pieces += [(turn, m.start(), m.end(), True) for turn, text in enumerate(self.texts)
                   for pattern in (rules.SHORT_YEAR, rules.YEAR_OF_BIRTH) for m in pattern.finditer(text)]
        pieces += [(turn, m.start(), m.end(), True) for turn, text in enumerate(self.texts)
                   if len(_WORDS.findall(text)) <= _MAX_ACK_WORDS
                   and any(asked.kind == rules.DOB and not asked.complete for asked in states[turn])
                   for m in rules.MONTH_WORD.finditer(text)]
        for turn, start, end, dob_only in sorted(pieces, key=lambda p: (p[0], p[1], -p[2])):  # in order, longest first
            text = self.texts[turn]
            asked = next(a for a in reversed(states[turn]) if a.position <= start)
            kind, digits = asked.kind, re.sub(r"\D", "", text[start:end])
            in_cue = any(cue_start < end and start < cue_end for cue_start, cue_end, _ in self.cues[turn])
            if (kind is None or in_cue or _not_an_id(text, start, end, kind) or (dob_only and kind != rules.DOB)
                    or (len(digits) > _MOST_DIGITS[kind] and not _said_twice(digits))):
                continue
            given = [s for s in self.spans if s.kind == kind and asked.since <= s.turn <= turn
                     and (s.turn < turn or s.end <= start)]
            if not given and self.speakers[turn] == "agent" and not (
                    kind in _ON_RECORD_KINDS and rules.ON_RECORD.search(text[:start])):
                # the agent's own numbers before any answer describe the value or are other business, but for the
                # value on record ("I've got an NHS number ending 2 8 0")
                continue
            if given and not self._answers(turn, start, end, given, asked) or asked.read_back and not given:
                continue
            # Counted once per exchange: the value the other passes missed, not each piece of it.
            self.add(turn, start, end, kind, count=not given)

    def ni_letters(self) -> None:
        """The NI number's letters in the turns of its exchange (opened by a question, or by its digits wherever
        they were said again) and wherever its digits were said; the letter read back at the opening of the turn
        that moves on ("sorry, see, got it, so your tax code ...")."""
        for turn, points in enumerate(self.exchange_states()):
            if any(asked.kind == rules.NI and not asked.read_back for asked in points) or any(
                    s.turn == turn and s.kind == rules.NI for s in self.spans):
                self._ni_prefix(turn)
                self._ni_suffix(turn)
            if any(asked.kind == rules.NI and asked.read_back for asked in points):
                self._ni_letter_read_back(turn)

    def _ni_letter_read_back(self, turn: int) -> None:
        """Within the turn's first few words, a letter said alone earlier in the exchange, never the article "a"; and
        letters spelt or paired anywhere in it ("it's m h not m n, h for hotel")."""
        given = {self.texts[s.turn][s.start:s.end].lower() for s in self.spans if s.kind == rules.NI} - {"a"}
        text = self.texts[turn]
        pairs = [m for m in rules.NI_LETTER_PAIR.finditer(text) if not rules.AMOUNT_BEFORE.search(text[:m.start()])]
        for m in [*rules.NI_LETTER_SPELT.finditer(text), *pairs]:
            self._add_letters(turn, m.start(), m.end())
        words = list(_WORDS.finditer(text))[:_MAX_GAP_WORDS]
        for word in words:
            if word.group().lower() in given and rules.NI_SUFFIX.fullmatch(word.group()):
                self._add_letters(turn, word.start(), word.end())

    def _answers(self, turn: int, start: int, end: int, given: list[_Span], asked: _Asked) -> bool:
        """Once part of the value was given, a number in a longer turn is more of it only when it repeats what was given
        (a read-back) or follows closely the value in the same turn ("25/01/1955, no, sorry, the 21st"); while the
        value is not complete, anything the caller says, and what the agent says close to a cue or the start of the
        turn ("sorry, was that 91...?"). Further on the talk has moved to other business ("thank you, so QQ 15 84 70
        D; your pension started on the 1st of March")."""
        text = self.texts[turn]
        said = re.findall(r"\d+", text[start:end])
        pieces = self._numbers_said(given)
        if asked.kind == rules.DOB and self._year_said_again(text[start:end]):
            return True  # its year said again another way ("it's ninety, not ninety one" / "1990")
        if said and (set(said) <= set(pieces) or (len("".join(said)) >= 3 and "".join(said) in "".join(pieces))):
            # read back as given, or regrouped ("eighty one" / "oh seven" / "fifty five" -> "810755"); once the talk
            # moved on, not a lone digit that happens to be one of the value's ("that's 2 pounds")
            return not asked.read_back or len("".join(said)) >= 3
        if said and _misread("".join(said), "".join(pieces)):
            return True  # read back wrong ("i've got 436540 for the first part" for 436450...)
        if asked.read_back:
            return False
        if len(_WORDS.findall(text)) <= _MAX_ACK_WORDS:
            return True
        in_turn = [s.end for s in given if s.turn == turn]
        if not in_turn and asked.complete:
            return False
        if self.speakers[turn] != "agent" and len("".join(pieces)) < _FEWEST_DIGITS[asked.kind]:
            return True  # the caller giving the rest after a pause ("sorry, the dog, right, where was I, 4 0 2")
        anchor = max(in_turn + [asked.position if asked.since == turn else 0])
        return len(_WORDS.findall(text[anchor:start])) <= _MAX_GAP_WORDS

    def _reads_back(self, turn: int, kind: str, since: int) -> bool:
        """This turn says the value given since turn `since` again, right or wrong ("i've got 436540 for the first
        part" / "no, it's 450, not 540"): the exchange goes on."""
        value = "".join(self._numbers_said([s for s in self.spans if s.kind == kind and since <= s.turn < turn]))
        text = self.texts[turn]
        return any(said == value or (len(said) >= 4 and (said in value or _misread(said, value)))
                   for m in rules.DIGIT_RUN.finditer(text)
                   if not _not_an_id(text, m.start(), m.end(), kind) and (said := re.sub(r"\D", "", m.group())))

    def _year_said_again(self, piece: str) -> bool:
        """`piece` says the year of a date of birth given in the call ("ninety" / "1990", "'76" / "1976")."""
        years = {y for s in self.spans if s.kind == rules.DOB
                 for kind, year in _date_pieces(self.texts[s.turn][s.start:s.end]) if kind == "year"
                 for y in (year, year % 100)}
        said = re.findall(r"\d+", _as_digits(piece))
        return bool(said) and {int(n) for n in said} <= years

    def _numbers_said(self, spans: list[_Span]) -> list[str]:
        """The numbers in `spans`, in the order they were said."""
        return [n for s in sorted(spans, key=lambda s: (s.turn, s.start))
                for n in re.findall(r"\d+", self.texts[s.turn][s.start:s.end])]

    def propagate_ids(self) -> None:
        """An ID found once is redacted wherever it is said again in the call, in either channel: read back later,
        confirmed at the end, grouped another way ("4532 0151" / "45 32 01 51"). A number of 3 digits only as
        itself; from 4 digits on, a number inside the ID or holding it. An ID given in pieces counts as their digits
        joined in the order said ("eighty one" / "oh seven" / "fifty five" read back as "810755")."""
        found = {(secret.kind, secret.value) for secret in self.secrets
                 if secret.kind in _EXCHANGE_KINDS and len(secret.value) >= 3}
        joins = set()
        for kind in _EXCHANGE_KINDS:
            spans = [s for s in self.spans if s.kind == kind]
            joined = "".join(self._numbers_said(spans))
            if len(spans) > 1 and len(joined) >= _JOINED_DIGITS:
                joins.add((kind, joined))
        runs = self.digit_runs()
        for run in runs:
            said = run.digits
            for kind, digits in found | joins:
                if (kind, digits) in joins:
                    same = len(said) >= _JOINED_DIGITS and said in digits
                else:
                    same = said == digits or (min(len(said), len(digits)) >= 4 and (said in digits or digits in said))
                if same and not run.amount:
                    self.add(run.turn, run.start, run.end, kind, count=False)
                    break
                # Only a whole value of its kind (a 3-digit "card" taken in a card's exchange is no card).
                whole = _FEWEST_DIGITS[kind] <= len(digits) <= _MOST_DIGITS[kind]
                group = (_groups_holding(run.text, digits) if whole and not same and (kind, digits) not in joins
                         else None)
                if group is not None and not run.amount:
                    self.add(run.turn, run.start + group[0], run.start + group[1], kind, count=False)
                    break
        self._pieces_before_read_back(found, runs)

    def _pieces_before_read_back(self, found: set[tuple[str, str]], runs: list[_Run]) -> None:
        """Pieces of an ID of 6+ digits said in short turns in the few turns before it was found whole, before
        anyone asked ("my number it is q q" / "oh five two" / "seven eight four c" / "q q oh five two seven eight
        four c")."""
        for kind, digits in found:
            if len(digits) < 6:
                continue
            turns = {s.turn for s in self.spans
                     if s.kind == kind and digits in re.sub(r"\D", "", self.texts[s.turn][s.start:s.end])}
            for run in runs:  # a run taken meanwhile by another ID is refused by `add`
                if (3 <= len(run.digits) < len(digits) and run.digits in digits and not run.amount
                        and len(_WORDS.findall(self.texts[run.turn])) <= _MAX_ACK_WORDS
                        and any(0 < turn - run.turn <= _MAX_QUIET_TURNS for turn in turns)):
                    self.add(run.turn, run.start, run.end, kind, count=False)

    def propagate_dates_of_birth(self) -> None:
        """A date of birth found once is redacted wherever it is said again in another form: "03/04/91" asked back
        as "the 3rd of April or March the 4th?", "the tenth of October" / "2008" read back as "ten ten oh eight"
        (101008), "23rd of September, '87" as "23/09/87". Its day, month and year are read from every piece of it
        said in the call; a date with its day and month, or a run of 4+ digits that writes them (with a year or
        not, either order, zero-padded or not), is it."""
        days, months, years = set(), set(), set()
        for span in (s for s in self.spans if s.kind == rules.DOB):
            said = self.texts[span.turn][span.start:span.end]
            for kind, value in _date_pieces(said):
                {"day": days, "month": months, "year": years}[kind].add(value)
        if not (days and months):
            return
        for turn, text in enumerate(self.texts):
            for m in rules.DATE.finditer(text):
                pieces = set(_date_pieces(m.group()))
                other_year = any(kind == "year" and value % 100 not in {y % 100 for y in years}
                                 for kind, value in pieces)
                if rules.WEEKDAY_BEFORE.search(text[:m.start()]) or other_year:
                    continue  # "Tuesday 1st April", "the 9th of November 2026": a booking on the day
                if any(("day", d) in pieces and ("month", mo) in pieces for d in days for mo in months):
                    self._whole_date(turn, m.start(), m.end())
            for m in rules.ORDINAL_DATE.finditer(text):  # "yes, fifth of the eleventh, forty"
                year = m.group("year") and int(_as_digits(m.group("year"))) % 100 in {y % 100 for y in years}
                if _ordinal(m.group("day")) in days and _ordinal(m.group("month")) in months:
                    self._whole_date(turn, m.start(), m.end() if year else m.end("month"))
        year_forms = {""} | {str(y) for y in years} | {f"{y % 100:02}" for y in years}
        written = {f"{a}{b}{y}" for d in days for mo in months for y in year_forms
                   for a, b in ((d, mo), (mo, d), (f"{d:02}", f"{mo:02}"), (f"{mo:02}", f"{d:02}"))}
        for run in self.digit_runs():
            if len(run.digits) >= 4 and run.digits in written and not run.amount:
                self.add(run.turn, run.start, run.end, rules.DOB, count=False)

    def _whole_date(self, turn: int, start: int, end: int) -> None:
        """A date of birth said again, as one span over the pieces of it the exchange took ("19th of july [DOB]",
        "fifth of the eleventh [DOB]"); not over anything else."""
        overlapping = [s for s in self.spans if s.turn == turn and s.start < end and start < s.end]
        if any(s.kind != rules.DOB or s.start < start or s.end > end for s in overlapping):
            return
        for span in overlapping:
            self.spans.remove(span)
        self.add(turn, start, end, rules.DOB, count=False)

    def exchange_states(self) -> list[list[_Asked]]:
        """Per turn, where the ID asked for changes. A cue asks; an ID found without one (a whole NI number) opens
        its exchange as given."""
        states: list[list[_Asked]] = []
        kind, since, last, given = None, 0, 0, 0
        moved_on_from: tuple[str, int] | None = None  # the exchange the talk just moved on from, and where
        short = [self.is_short(turn) for turn in range(len(self.texts))]
        for turn, text in enumerate(self.texts):
            if (kind is None and moved_on_from is not None and moved_on_from[1] == turn - 1
                    and rules.CORRECTION.search(text)):
                kind, since, last, given = moved_on_from[0], turn, turn, 0
            moved_on_from = None
            complete = kind is not None and given >= _FEWEST_DIGITS[kind]
            # A longer turn once the value was given: only a read-back of it is the value still; the exchange ends
            # there unless the turn reads it back (right or wrong: "i've got 436540 for the first part", a correction
            # may follow).
            moved_on = (complete and len(_WORDS.findall(text)) > _MAX_ACK_WORDS
                        and not any(asks.search(text) for asks in _ASKS_AGAIN))
            between = range(last + 1, turn)
            # Short turns while the caller finds the card ("ok" / "take your time" / "it's not easy to read") wait
            # for the value; longer ones are other talk.
            if kind is not None and (len(between) >= 2 * _MAX_QUIET_TURNS
                                     or sum(not short[t] for t in between) >= _MAX_QUIET_TURNS):
                kind = None
            points = [_Asked(0, kind, complete, since, read_back=moved_on)]
            if moved_on and not self._reads_back(turn, kind, since):
                moved_on_from = (kind, turn)
                kind = None  # "sorry, 2 6 0, thank you, that's 44.99": read back, then other business
            # Not a card: what follows a whole card number is its expiry or its code, not more of it.
            found = [(s.start, s.end, s.kind) for s in self.spans
                     if s.turn == turn and s.kind in _EXCHANGE_KINDS and s.kind != rules.CARD]
            for start, end, event in sorted(self.cues[turn] + found):
                if (event == rules.CARD_WORD or (event == rules.CVV_IF_CARD and not self.card_near(turn))
                        or (event == rules.NEUTRAL and rules.MONEY_WORDS.fullmatch(text[start:end]))):
                    continue  # "is this card in your own name?", "... to process the charge": no new question
                if event == rules.NEUTRAL and rules.RELUCTANT.fullmatch(text[start:end]) and kind is not None:
                    points.append(_Asked(end, None, False, since))  # open again from the next turn
                    continue
                event = rules.CVV if event == rules.CVV_IF_CARD else event
                if (start, end, event) in found:
                    if event != kind:
                        kind, since, given = event, turn, 0
                    given += _digits_given(event, text[start:end])
                else:
                    kind = event if event in _EXCHANGE_KINDS and self.table.enabled(event) else None
                    since, given = turn, 0
                last = turn
                points.append(_Asked(end, kind, kind is not None and given >= _FEWEST_DIGITS[kind], since))
            digits = _digits_given(points[-1].kind, text[points[-1].position:])
            if points[-1].kind is not None and digits:
                last, given = turn, given + digits
            states.append(points)
        return states

    def tagged(self, tagger: Tagger) -> None:
        """The model's second opinion on every piece the rules left in the clear."""
        asked = self.exchange_states()
        for piece in pieces(self.texts, self.taken):
            kind, text = self.context(piece.turn, piece.start), self.texts[piece.turn]
            cues_before = [cue_kind for _, cue_end, cue_kind in self.cues[piece.turn] if cue_end <= piece.start]
            # What the rules know is no ID (an amount, a time, a price, a weekday's date, a number named as a
            # reference) stays, whatever the model thinks.
            if (_not_an_id(text, piece.start, piece.end, kind) or rules.WEEKDAY_BEFORE.search(text[:piece.start])
                    or cues_before and cues_before[-1] == rules.NEUTRAL):
                continue
            if tagger.probability(features(self, piece, asked)) >= tagger.threshold:
                kind = kind if kind in _EXCHANGE_KINDS else next(iter(echoed(self, piece)), rules.NUMBER)
                self.add(piece.turn, piece.start, piece.end, kind)

    # -- output --------------------------------------------------------------------------------------
    def rendered(self) -> list[str]:
        out = []
        for turn, text in enumerate(self.texts):
            spans = sorted((s for s in self.spans if s.turn == turn), key=lambda s: s.start, reverse=True)
            for span in spans:
                text = text[: span.start] + span.label + text[span.end :]
            out.append(text)
        return out


def _after_a_card(text: str, run: re.Match) -> list[tuple[int, int]]:
    """A run of digits said in one breath, split after a whole card number ("5105 1051 0510 5100, 11/28, 215": the
    card, its expiry, its code); any other run whole."""
    for comma in re.finditer(r",\s", run.group()):
        if _whole_card_number(re.sub(r"\D", "", run.group()[:comma.start()])):
            card_end = run.start() + comma.start()
            return [(run.start(), card_end)] + [(card_end + m.start(), card_end + m.end())
                                                for m in rules.DIGIT_PIECE.finditer(text[card_end:run.end()])]
    return [run.span()]


def _groups_holding(said: str, digits: str) -> tuple[int, int] | None:
    """Where, in a run said in groups, some groups in a row are exactly `digits`: a code read back with the expiry
    after it ("362, 08/27"); None when no groups in a row are."""
    groups = list(re.finditer(r"\d+", said))
    for first in range(len(groups)):
        joined = ""
        for last in range(first, len(groups)):
            joined += groups[last].group()
            if joined == digits and (first, last) != (0, len(groups) - 1):
                return groups[first].start(), groups[last].end()
            if len(joined) >= len(digits):
                break
    return None


def _whole_card_number(digits: str) -> bool:
    """A card number is complete at 15 or 16 digits that pass Luhn: what follows ("and the code" / "521") is no
    more of it, and its last four stay its own."""
    return len(digits) in (15, 16) and luhn_valid(digits)


def _misread(said: str, value: str) -> bool:
    """`said` is `value`, or a stretch of it, read back wrong: a slip in one digit of a 3-4 digit value ("919" for
    "909") or of five digits, at most two in six or more ("436540" for "436450", two digits swapped)."""
    if len(said) < 3 or len(said) > len(value) or (len(said) < 5 and len(said) != len(value)):
        return False
    slips = 1 if len(said) < 6 else 2
    return any(sum(a != b for a, b in zip(said, value[i:i + len(said)])) <= slips
               for i in range(len(value) - len(said) + 1))


def _digits_given(kind: str | None, piece: str) -> int:
    """How much of a value `piece` gives, in digits; a month named in a date of birth counts as its two ("1st April
    86" is a whole date)."""
    digits = len(re.findall(r"\d", piece))
    return digits + 2 * len(rules.MONTH_WORD.findall(piece)) if kind == rules.DOB else digits


def _ordinal(said: str) -> int:
    """ "5th" or "fifth" -> 5."""
    return int(said[:-2]) if said[:1].isdigit() else ORDINALS[said.lower()]


def _as_digits(piece: str) -> str:
    """A number word the normaliser left alone ("ninety", "six") as its digits; anything else as it is."""
    word = piece.lower()
    return str(UNITS.get(word, TEENS.get(word, TENS.get(word, piece))))


def _date_pieces(said: str) -> Iterator[tuple[str, int]]:
    """The day, month and year a piece of a date says ("the 4th of March", "03/04/91": both orders, "August 63",
    "'87", "1987", "the nineteenth"), as ("day" | "month" | "year", value); a 2-digit year as itself (87)."""
    numeric = re.fullmatch(r"\D*(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{2}|\d{4})\D*", said)
    if numeric:
        first, second, year = (int(n) for n in numeric.groups())
        for day, month in ((first, second), (second, first)):
            if 1 <= day <= 31 and 1 <= month <= 12:
                yield "day", day
                yield "month", month
        yield "year", year
        return
    for m in rules.MONTH_WORD.finditer(said):
        yield "month", _MONTH_NUMBER[m.group().lower()[:3]]
    for m in rules.DAY_WORD.finditer(said):  # "the nineteenth" said alone stays a word
        yield "day", ORDINALS[m.group().lower()]
    for m in re.finditer(r"(?<![\d'])(\d{1,2})(st|nd|rd|th)?(?!\d)|'(\d{2})\b|\b((?:19|20)\d{2})\b", said):
        day, ordinal, short_year, year = m.groups()
        if year or short_year:
            yield "year", int(year or short_year)
        elif ordinal or int(day) > 31:
            yield ("day", int(day)) if ordinal else ("year", int(day))
        elif rules.MONTH_WORD.search(said):
            yield "day" if int(day) <= 31 else "year", int(day)


def _birth_date(date: str) -> bool:
    """A whole date (day, month and year) at least `_ADULT_YEARS` back is somebody's date of birth, cue or not
    ("is it still the 9th of November 1974 we have?"): appointments, deliveries and bills are recent."""
    year = re.search(r"\b(?:19|20)\d\d\b", date)
    return bool(year) and int(year.group()) <= datetime.date.today().year - _ADULT_YEARS


def _not_an_id(text: str, start: int, end: int, kind: str | None) -> bool:
    """The number at `start:end` is an amount, an estimate, a time, an hour, a count, an age, a thing's number, a
    card's last four named as such, a tax year or (asked for anything but a date of birth) the year something
    happened: never a piece of an ID."""
    before, after = text[:start], text[end:]
    digits = re.sub(r"\D", "", text[start:end])
    year = re.fullmatch(r"(?:19|20)\d\d", digits)
    return bool(rules.AMOUNT_BEFORE.search(before) or rules.AMOUNT_AFTER.match(after)
                or (len(digits) <= 2 and rules.HOUR_BEFORE.search(before))
                or rules.YEAR_RANGE.fullmatch(text[start:end].strip())
                or (year and (kind != rules.DOB and rules.EVENT_YEAR.search(before) or rules.A_THING.search(before)))
                or (kind in (rules.CVV, rules.CARD) and rules.CARD_TAIL.search(before))
                or bool(re.fullmatch(r"\d{1,4}\.\d{2}", text[start:end])))  # a price: "44.99"


def _said_twice(digits: str) -> bool:
    """A short code said twice in one breath ("909. 909."), not a longer number."""
    half = len(digits) // 2
    return len(digits) in (6, 8) and digits[:half] == digits[half:]


def _placeholder(kind: str) -> str:
    return rules.RULE_BY_KIND[kind].placeholder


def run_rules(texts: list[str], speakers: list[str], table: rules.RuleTable = rules.DEFAULT_TABLE,
              finder: EntityFinder | None = None) -> _Conversation:
    """Every rule, in order, over one call's turns; the tagger (and its training) reads the state they leave."""
    finder = finder or shared_finder()
    conversation = _Conversation([normalise_numbers(t) for t in texts], speakers, table)
    conversation.protect_placeholders()
    conversation.patterns()
    names = conversation.cued_names() | conversation.entities(finder)
    names |= conversation.answered_names()
    conversation.propagate_names(names)
    conversation.extend_addresses()
    conversation.join_addresses()
    for chain in conversation.chains(conversation.digit_runs()):
        conversation.classify(chain)
    conversation.exchanges()
    conversation.propagate_ids()
    conversation.propagate_dates_of_birth()
    conversation.ni_letters()
    return conversation


def _run_all(texts: list[str], speakers: list[str], finder: EntityFinder, table: rules.RuleTable,
             tagger: Tagger | None) -> _Conversation:
    conversation = run_rules(texts, speakers, table, finder)
    if tagger is not None:
        conversation.tagged(tagger)
    return conversation


class Redactor:
    """Stateless; one instance can serve every call. `table`: the rules as the site configured them (default: as
    shipped); `finder`: the named-entity recogniser (by default the one the process shares)."""

    def __init__(self, table: rules.RuleTable = rules.DEFAULT_TABLE, finder: EntityFinder | None = None,
                 tagger: Tagger | None | Literal["shipped"] = "shipped"):
        self.table = table
        self._finder = finder or shared_finder()
        self._tagger = shipped_tagger() if tagger == "shipped" else tagger

    def redact_transcript(self, transcript: Transcript) -> Redaction:
        conversation = _run_all([t.text for t in transcript.turns], [t.speaker for t in transcript.turns],
                                self._finder, self.table, self._tagger)
        turns = tuple(turn.with_text(text) for turn, text in zip(transcript.turns, conversation.rendered()))
        return Redaction(Transcript(turns, transcript.call_id), conversation.counts, conversation.secrets)

    def redact_text(self, text: str, secrets: list[Secret] | tuple[Secret, ...] = ()) -> tuple[str, Counter]:
        """Second pass over one finished text (a summary field): detectors, then the leak check against the
        values redacted from the transcript."""
        # Rules only: the model learnt from turns of a conversation, and a summary's references must survive.
        conversation = _run_all([text], ["agent"], self._finder, self.table, tagger=None)
        redacted = conversation.rendered()[0]
        redacted, leaks = _remove_leaks(redacted, secrets)
        return redacted, conversation.counts + leaks


def _remove_leaks(text: str, secrets: list[Secret] | tuple[Secret, ...]) -> tuple[str, Counter]:
    """Any 6-digit window of a redacted number (or a short secret in full, or a redacted word) is a leak."""
    leaks: Counter = Counter()
    for secret in secrets:
        if secret.kind in rules.DIGIT_TYPES:
            windows = {secret.value[i : i + 6] for i in range(max(1, len(secret.value) - 5))}

            def replace(match: re.Match, secret: Secret = secret, windows: set[str] = windows) -> str:
                digits = re.sub(r"\D", "", match.group())
                hit = digits == secret.value if len(secret.value) < 6 else any(w in digits for w in windows)
                if hit:
                    leaks[secret.kind] += 1
                    return _placeholder(secret.kind)
                return match.group()

            text = _replace_outside_placeholders(rules.DIGIT_RUN, text, replace)
        elif len(secret.value) >= 3:
            pattern = re.compile(rf"\b{re.escape(secret.value)}\b", re.IGNORECASE)
            text, hits = pattern.subn(_placeholder(secret.kind), text)
            leaks[secret.kind] += hits
    return text, leaks


def _replace_outside_placeholders(pattern: re.Pattern, text: str, replace) -> str:
    pieces, cursor = [], 0
    for placeholder in _PLACEHOLDER.finditer(text):
        pieces.append(pattern.sub(replace, text[cursor : placeholder.start()]))
        pieces.append(placeholder.group())
        cursor = placeholder.end()
    pieces.append(pattern.sub(replace, text[cursor:]))
    return "".join(pieces)

