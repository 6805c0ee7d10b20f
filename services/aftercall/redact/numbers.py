"""Spoken numbers to digits, so that detectors see "4532 0151" whether the caller said digits or words.

Deliberately conservative: a lone number word ("one of them", "three times") is left alone; runs of two or more
number words ("four five three two", "nineteen eighty four", "double oh seven") become digits, and so do ordinals
next to a month ("the twelfth of March" -> "the 12th of March").
"""

from __future__ import annotations

import re

UNITS = {"zero": 0, "oh": 0, "o": 0, "nought": 0, "nil": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
         "six": 6, "seven": 7, "eight": 8, "nine": 9}
TEENS = {"ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
         "seventeen": 17, "eighteen": 18, "nineteen": 19}
TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
REPEATS = {"double": 2, "triple": 3}
ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
            "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13, "fourteenth": 14,
            "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18, "nineteenth": 19,
            "twentieth": 20, "thirtieth": 30}
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec")
# Words that never start a digit run on their own (interjections, pronoun "one").
_WEAK = {"oh", "o", "one", "nil", "nought"}
_NUMBER_WORDS = set(UNITS) | set(TEENS) | set(TENS) | set(SCALES) | set(REPEATS) | set(ORDINALS)

_WORD = re.compile(r"[A-Za-z]+")
_SEPARATOR = re.compile(r"^(?:\s*[,.\-]?\s*|\s+and\s+)$", re.IGNORECASE)
_MONTH_NEAR = re.compile(r"\b(?:%s)\b" % "|".join(MONTHS), re.IGNORECASE)
# Words a recogniser writes for a digit said between digits ("six won three", "two ate"), or after one at the end
# ("two thousand and won").
_HOMOPHONES = {"won": "one", "ate": "eight", "tree": "three", "free": "three", "fife": "five", "niner": "nine"}
# "For" and "to" join numbers as often as they stand for them ("two for one", "nine to five"): a digit only inside a
# run of digits said one by one ("five one for five three"), before a scale ("to thousand"), or in a turn of nothing
# but digits and their homophones, one of them unmistakable ("to ate for"; not "nine to five").
_WEAK_HOMOPHONES = {"to": "two", "too": "two", "for": "four", "fore": "four"}
_MIN_DIGITS_BESIDE = 2
_MIN_DIGIT_TURN_WORDS = 3
# "double 7", "triple-4": a repeat word before a digit the recogniser wrote as a digit.
_REPEATED_DIGIT = re.compile(r"\b(double|triple)[\s-]+(\d)(?![\d.,]\d)(?!\d)", re.IGNORECASE)


def _suffix(value: int) -> str:
    if value % 100 in (11, 12, 13):
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(value % 10, "th")


def _render_cardinal(words: list[str]) -> str:
    total, current = 0, 0
    for word in words:
        if word in SCALES:
            scale = SCALES[word]
            if scale == 100:
                current = max(current, 1) * 100
            else:
                total += max(current, 1) * scale
                current = 0
        else:
            current += UNITS.get(word, TEENS.get(word, TENS.get(word, 0)))
    return str(total + current)


def _render_sequence(words: list[str]) -> str:
    """Digit-by-digit or pair-by-pair speech: 'four five' -> 45, 'forty five thirty two' -> 4532."""
    out: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word in REPEATS and index + 1 < len(words) and words[index + 1] in UNITS:
            out.append(str(UNITS[words[index + 1]]) * REPEATS[word])
            index += 2
            continue
        if word in TENS:
            following = words[index + 1] if index + 1 < len(words) else None
            if following in UNITS and UNITS[following] > 0:
                out.append(str(TENS[word] + UNITS[following]))
                index += 2
                continue
            out.append(str(TENS[word]))
        elif word in TEENS:
            out.append(str(TEENS[word]))
        elif word in UNITS:
            out.append(str(UNITS[word]))
        index += 1
    return "".join(out)


def _render(words: list[str]) -> str:
    ordinal = ""
    if words[-1] in ORDINALS:
        value = ORDINALS[words[-1]]
        if len(words) >= 2 and words[-2] in TENS:
            value += TENS[words[-2]]
            words = words[:-2]
        else:
            words = words[:-1]
        ordinal = f"{value}{_suffix(value)}"
    words = [w for w in words if w != "and"]
    if not words:
        return ordinal
    body = _render_cardinal(words) if any(w in SCALES for w in words) else _render_sequence(words)
    return body + (" " + ordinal if ordinal else "")


def _is_number_word(token: str) -> bool:
    return token.lower() in _NUMBER_WORDS


_DIGIT_WORDS = {*UNITS, *_HOMOPHONES, *_WEAK_HOMOPHONES}


def _joined(text: str, left: re.Match, right: re.Match) -> bool:
    return bool(_SEPARATOR.match(text[left.end():right.start()]))


def _between_numbers(text: str, words: list[re.Match], index: int) -> bool:
    return 0 < index < len(words) - 1 and _is_number_word(words[index - 1].group()) and _is_number_word(
        words[index + 1].group()) and _joined(text, words[index - 1], words[index]) and _joined(
        text, words[index], words[index + 1])


def _ends_number(text: str, words: list[re.Match], index: int) -> bool:
    """Last in its sentence, after a number ("two thousand and won.")."""
    if index == 0 or not re.fullmatch(r"\W*|[.,!?;].*", text[words[index].end():], re.DOTALL):
        return False
    before = words[index - 1]
    if before.group().lower() == "and" and index >= 2:
        before = words[index - 2]
    return _is_number_word(before.group()) and _joined(text, before, words[index - 1]) and _joined(
        text, words[index - 1], words[index])


def _before_scale(text: str, words: list[re.Match], index: int) -> bool:
    """ "To thousand": nobody says that but for "two thousand"."""
    return index + 1 < len(words) and words[index + 1].group().lower() in SCALES and _joined(
        text, words[index], words[index + 1])


def _digits_beside(text: str, words: list[re.Match], index: int, step: int) -> int:
    """How many digits (or their homophones) are said one by one next to `index`, in the direction of `step`."""
    count, at = 0, index
    while 0 <= at + step < len(words):
        near = words[at + step]
        if near.group().lower() not in UNITS and near.group().lower() not in _HOMOPHONES:
            break
        if not _joined(text, *sorted((near, words[at]), key=lambda m: m.start())):
            break
        count, at = count + 1, at + step
    return count


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def normalise_numbers(text: str) -> str:
    """Replace runs of spoken number words with digits; everything else is kept as it is."""
    text = _REPEATED_DIGIT.sub(lambda m: m.group(2) * REPEATS[m.group(1).lower()], text)
    tokens: list[tuple[int, int, list[str]]] = []  # (start, end, lower-case parts) of number-word tokens
    words = list(_WORD.finditer(text))
    said = [w.group().lower() for w in words]
    digit_turn = (len(said) >= _MIN_DIGIT_TURN_WORDS and all(w in _DIGIT_WORDS for w in said)
                  and any(w in _HOMOPHONES for w in said))
    for index, match in enumerate(words):
        start, end = match.span()
        word = match.group().lower()
        # Hyphenated forms ("twenty-three", "four-five-three") arrive as separate words joined by '-'; the "o" of
        # "o'clock" is no zero.
        if _is_number_word(word) and text[end : end + 1] != "'":
            tokens.append((start, end, [word]))
        elif digit_turn or word in _HOMOPHONES and (_between_numbers(text, words, index)
                                                    or _ends_number(text, words, index)):
            tokens.append((start, end, [_HOMOPHONES.get(word) or _WEAK_HOMOPHONES[word]]))
        elif word in _WEAK_HOMOPHONES and (_before_scale(text, words, index) or min(
                _digits_beside(text, words, index, -1), _digits_beside(text, words, index, 1)) >= _MIN_DIGITS_BESIDE):
            tokens.append((start, end, [_WEAK_HOMOPHONES[word]]))
        elif word == "and":
            tokens.append((start, end, ["and"]))
    runs: list[list[tuple[int, int, list[str]]]] = []
    for token in tokens:
        previous = runs[-1][-1] if runs else None
        # "and" joins a run only after a scale ("two hundred and five"); "two and three" stays two numbers. An
        # ordinal ends its run: "the twelfth nineteen sixty eight" is a day, then a year.
        joins_and = token[2] != ["and"] or (previous is not None and previous[2][-1] in SCALES)
        if (previous is not None and joins_and and previous[2][-1] not in ORDINALS
                and _SEPARATOR.match(text[previous[1] : token[0]])):
            runs[-1].append(token)
        else:
            runs.append([token])
    pieces: list[str] = []
    cursor = 0
    for run in runs:
        # "and" only belongs inside a run ("two hundred and five"), never at its edges.
        while run and run[0][2] == ["and"]:
            run = run[1:]
        while run and run[-1][2] == ["and"]:
            run = run[:-1]
        if not run:
            continue
        words = [part for _, _, parts in run for part in parts]
        if len(words) == 1:
            word = words[0]
            start, end = run[0][0], run[0][1]
            near_month = _MONTH_NEAR.search(text[max(0, start - 20) : end + 20])
            if word in _WEAK or word in REPEATS or (word in ORDINALS and not near_month) or word not in ORDINALS:
                continue
        rendered = _render(words)
        if not rendered:
            continue
        pieces.append(text[cursor : run[0][0]])
        pieces.append(rendered)
        cursor = run[-1][1]
    pieces.append(text[cursor:])
    return "".join(pieces)
