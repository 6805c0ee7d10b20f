"""Quality measures shared by the tests and `scripts/quality_report.py`: ROUGE, redaction recall, leak checks."""

from __future__ import annotations

import random
import re
from typing import Iterable

_TOKEN = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _lcs(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def _f1(overlap: int, candidate: int, reference: int) -> float:
    if not overlap or not candidate or not reference:
        return 0.0
    precision, recall = overlap / candidate, overlap / reference
    return 2 * precision * recall / (precision + recall)


def rouge_l(candidate: str, reference: str) -> float:
    c, r = tokens(candidate), tokens(reference)
    return _f1(_lcs(c, r), len(c), len(r))


def rouge_1(candidate: str, reference: str) -> float:
    from collections import Counter

    c, r = Counter(tokens(candidate)), Counter(tokens(reference))
    return _f1(sum((c & r).values()), sum(c.values()), sum(r.values()))


def best_of(metric, candidate: str, references: Iterable[str]) -> float:
    return max((metric(candidate, r) for r in references), default=0.0)


def digit_leak(value: str, text: str, window: int = 6) -> bool:
    """True when any `window`-digit slice of the digits of `value` appears among the digits of a run in `text`."""
    digits = re.sub(r"\D", "", value)
    if len(digits) < window:
        return bool(digits) and digits in re.sub(r"\D", " ", text).split()
    runs = [re.sub(r"\D", "", run) for run in re.findall(r"\d(?:[\s\-.,]{0,3}\d)*", text)]
    return any(digits[i : i + window] in run for run in runs for i in range(len(digits) - window + 1))


_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_TENS = {2: "twenty", 3: "thirty", 4: "forty", 5: "fifty", 6: "sixty", 7: "seventy", 8: "eighty", 9: "ninety"}
_TEENS = ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]


def luhn_complete(prefix: str) -> str:
    from aftercall.redact.redactor import luhn_valid

    return next(prefix + check for check in "0123456789" if luhn_valid(prefix + check))


def _pair_words(pair: str) -> str:
    tens, unit = int(pair[0]), int(pair[1])
    if tens == 0:
        return f"oh {_WORDS[unit]}"
    if tens == 1:
        return _TEENS[unit]
    return _TENS[tens] + ("" if unit == 0 else f" {_WORDS[unit]}")


def speak_digits(digits: str, rng: random.Random) -> str:
    """One of the ways people read a number out: digit by digit, in pairs, with 'oh', 'double', or as digits."""
    style = rng.choice(["words", "pairs", "oh", "double", "digits_grouped", "mixed"])
    groups = [digits[i : i + 4] for i in range(0, len(digits), 4)]
    spoken = []
    for group in groups:
        if style == "pairs" and len(group) % 2 == 0:
            spoken.append(" ".join(_pair_words(group[i : i + 2]) for i in range(0, len(group), 2)))
        elif style == "digits_grouped" or (style == "mixed" and rng.random() < 0.5):
            spoken.append(group)
        else:
            words, index = [], 0
            while index < len(group):
                if style == "double" and index + 1 < len(group) and group[index] == group[index + 1]:
                    words.append(f"double {_WORDS[int(group[index])]}")
                    index += 2
                    continue
                zero = "oh" if style == "oh" else "zero"
                words.append(zero if group[index] == "0" else _WORDS[int(group[index])])
                index += 1
            spoken.append(" ".join(words))
    return ", ".join(spoken)


# presidio-research entity types -> what aftercall claims to redact for them.
PRESIDIO_CLAIMED = ("CREDIT_CARD", "US_SSN", "EMAIL_ADDRESS", "PHONE_NUMBER", "IBAN_CODE", "STREET_ADDRESS",
                    "PERSON")
_DIGIT_KINDS = {"CREDIT_CARD", "US_SSN", "PHONE_NUMBER", "IBAN_CODE"}


def span_removed(kind: str, value: str, redacted: str) -> bool:
    """A span counts as redacted when its identifying content is gone from the output: no 6-digit window of its
    digits (numbers), or at most half of its words surviving (e-mails, addresses, names)."""
    if kind in _DIGIT_KINDS:
        return not digit_leak(value, redacted, window=min(6, len(re.sub(r"\D", "", value)) or 6))
    words = [w for w in re.findall(r"[A-Za-z0-9]+", value) if len(w) >= 2]
    if not words:
        return True
    surviving = sum(1 for w in words if re.search(rf"\b{re.escape(w)}\b", redacted, re.IGNORECASE))
    return surviving <= len(words) / 2


def presidio_recall(records: list[dict]) -> dict[str, dict[str, float]]:
    from aftercall.core.transcript import Transcript, Turn
    from aftercall.redact import Redactor

    redactor = Redactor()
    found: dict[str, list[int]] = {kind: [0, 0] for kind in PRESIDIO_CLAIMED}
    clean_sentences, false_alarms = 0, 0
    for record in records:
        text = record["full_text"]
        result = redactor.redact_transcript(Transcript((Turn("customer", text),)))
        redacted = result.transcript.turns[0].text
        spans = [s for s in record["spans"] if s["entity_type"] in found]
        for span in spans:
            found[span["entity_type"]][1] += 1
            found[span["entity_type"]][0] += span_removed(span["entity_type"], span["entity_value"], redacted)
        if not record["spans"]:
            clean_sentences += 1
            false_alarms += bool(sum(result.counts.values()))
    report = {kind: {"recall": hit / total if total else 0.0, "spans": total} for kind, (hit, total) in found.items()}
    report["_clean_sentences"] = {"recall": false_alarms / clean_sentences if clean_sentences else 0.0,
                                  "spans": clean_sentences}
    return report
