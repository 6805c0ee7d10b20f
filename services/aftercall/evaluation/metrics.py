"""Quality measures behind `aftercall eval` and the tests: ROUGE, WER, grounding, follow-up matching, redaction
recall and precision, leak checks."""

from __future__ import annotations

import random
import re
from typing import Iterable, Sequence

_TOKEN = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def common_subsequence(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (of words, or of a string's characters)."""
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
    return _f1(common_subsequence(c, r), len(c), len(r))


def rouge_1(candidate: str, reference: str) -> float:
    from collections import Counter

    c, r = Counter(tokens(candidate)), Counter(tokens(reference))
    return _f1(sum((c & r).values()), sum(c.values()), sum(r.values()))


def best_of(metric, candidate: str, references: Iterable[str]) -> float:
    return max((metric(candidate, r) for r in references), default=0.0)


# "4 5 3 2" and "4532" are one number however the recogniser spaced it.
_DIGIT_GAP = re.compile(r"(?<=\d)[\s,-]+(?=\d)")


def normalised_tokens(text: str) -> list[str]:
    """Lower-case words with spoken numbers as digits, so "four five" and "45" are the same word."""
    from aftercall.redact.numbers import normalise_numbers

    return tokens(_DIGIT_GAP.sub("", normalise_numbers(text)))


def word_errors(hypothesis: str, reference: str) -> tuple[int, int]:
    """(edit distance in words, reference words), compared as `normalised_tokens`."""
    hyp, ref = normalised_tokens(hypothesis), normalised_tokens(reference)
    previous = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        current = [i]
        for j, other in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != other)))
        previous = current
    return previous[-1], len(ref)


# What a summary may state that must come from the call: amounts, counts, dates, times, references and IDs.
_MONTHS = ("january|february|march|april|may|june|july|august|september|october|november|december")
_CHECKABLE = re.compile(
    rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:{_MONTHS})\b"  # 22nd of September
    rf"|\b(?:{_MONTHS})\s+\d{{1,2}}(?:st|nd|rd|th)?\b"  # September 22nd
    r"|\b[A-Z]{1,5}-?\d[\dA-Z-]*\b"  # FR-208815, AB12345
    r"|\d+(?:[.,:/]\d+)*",  # 23.99, 11:14, 3, 10/12
    re.IGNORECASE)
_SPACED_DIGITS = re.compile(r"(?<=\d) +(?=\d)")
_PLACEHOLDER_TEXT = re.compile(r"\[[A-Z_]+(?: \*{4}\d{4})?\]")


def checkable_facts(text: str) -> list[str]:
    """Numbers, dates and IDs in `text`, placeholders left out (they are the redactor's, not the model's)."""
    return _CHECKABLE.findall(_PLACEHOLDER_TEXT.sub(" ", text))


def _fact_key(fact: str) -> str:
    return re.sub(r"(?<=\d)(?:st|nd|rd|th)\b|\bof\b|[^a-z0-9]", "", fact.lower())


def _fact_keys(text: str) -> list[str]:
    from aftercall.redact.numbers import normalise_numbers

    # Spaces inside a number are how it was read out ("55458 00231"); commas may separate two numbers ("7:59, 9:18").
    return [_fact_key(fact) for fact in checkable_facts(_SPACED_DIGITS.sub("", normalise_numbers(text)))]


def grounding(summary_texts: Iterable[str], transcript_text: str) -> tuple[int, int]:
    """(facts found in the transcript, facts stated): a fact is grounded when the transcript states the same
    number, date or ID, in digits or in words. The rest are the summariser's inventions (hallucination rate =
    1 - found/stated). Both sides are read the same way."""
    from aftercall.redact.numbers import TEENS, TENS, UNITS

    # The transcript's placeholders count: "[CARD ****0366]" is where a summary's "****0366" comes from.
    said = set(_fact_keys(_PLACEHOLDER_TEXT.sub(lambda m: m.group().strip("[]"), transcript_text)))
    # The normaliser leaves a lone number word alone ("three days"); a summary may well write it as "3".
    lone = UNITS | TEENS | TENS
    said |= {str(lone[word]) for word in tokens(transcript_text) if word in lone}
    stated = [key for text in summary_texts for key in _fact_keys(text)]
    return sum(1 for key in stated if key in said), len(stated)


def _action_similarity(predicted: str, expected: str) -> float:
    """Share of the expected action's content words the predicted action says."""
    wanted = {w for w in tokens(expected) if len(w) > 2}
    return len(wanted & set(tokens(predicted))) / len(wanted) if wanted else 1.0


def _normalised_due(due) -> str | None:
    return " ".join(tokens(due)) or None if isinstance(due, str) else None


def match_follow_ups(predicted: list[dict], expected: list[dict], min_similarity: float = 0.5) -> dict[str, int]:
    """Pair expected with predicted follow-ups: same owner, and (when the expected one names an action) at least
    half of its content words. Returns matched, predicted and expected counts, and how many matched pairs have
    exactly the expected due phrase (or both none)."""
    free = list(range(len(predicted)))
    matched = due_exact = 0
    for item in expected:
        best, best_score = None, -1.0
        for index in free:
            candidate = predicted[index]
            if candidate.get("owner") != item.get("owner"):
                continue
            score = _action_similarity(candidate.get("action", ""), item["action"]) if item.get("action") else 1.0
            score += 0.01 * (_normalised_due(candidate.get("due")) == _normalised_due(item.get("due")))
            if score >= min_similarity and score > best_score:
                best, best_score = index, score
        if best is not None:
            free.remove(best)
            matched += 1
            due_exact += _normalised_due(predicted[best].get("due")) == _normalised_due(item.get("due"))
    return {"matched": matched, "predicted": len(predicted), "expected": len(expected), "due_exact": due_exact}


def match_phrases(predicted: list[str], expected: list[str], min_similarity: float = 0.5) -> tuple[int, int, int]:
    """(matched, predicted, expected): one-to-one pairs where the predicted phrase says at least half of the
    expected one's content words ("They emailed them on Friday" for "emailed Castlegate on Friday")."""
    free = list(range(len(predicted)))
    matched = 0
    for item in expected:
        scored = [(_action_similarity(predicted[index], item), index) for index in free]
        best = max(scored, default=(0.0, None))
        if best[1] is not None and best[0] >= min_similarity:
            free.remove(best[1])
            matched += 1
    return matched, len(predicted), len(expected)


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
    from aftercall.redact.numbers import luhn_valid

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
# Types judged by their digits: presidio's names and aftercall's own (what a site's gold files use).
_DIGIT_KINDS = {"CREDIT_CARD", "US_SSN", "PHONE_NUMBER", "IBAN_CODE", "DATE_OF_BIRTH", "UK_NINO", "UK_NHS",
                "CARD", "CVV", "EXPIRY", "DOB", "SSN", "NI", "NHS", "PHONE", "ACCOUNT", "SORT_CODE", "PIN", "NUMBER"}


def digits_survive(value: str, text: str) -> bool:
    """Any 6-digit window of the value's digits (all of them when shorter) is in `text`, numbers said as words
    counting as digits on both sides."""
    from aftercall.redact.numbers import normalise_numbers

    digits = re.sub(r"\D", "", normalise_numbers(value))
    return bool(digits) and digit_leak(digits, normalise_numbers(text), window=min(6, len(digits)))


def span_removed(kind: str, value: str, redacted: str, source: str = "") -> bool:
    """A span counts as redacted when its identifying content is gone from the output: no 6-digit window of its
    digits (numbers), or at most half of its words surviving (e-mails, addresses, names). With the `source` text,
    only the value's distinctive words count: "email" of "jo@email.com" may well survive from "my email is"."""
    if kind in _DIGIT_KINDS:
        return not digits_survive(value, redacted)
    words = [w for w in re.findall(r"[A-Za-z0-9]+", value) if len(w) >= 2]
    if source:
        occurrences = len(re.findall(re.escape(value), source, re.IGNORECASE))
        words = [w for w in words
                 if len(re.findall(rf"\b{re.escape(w)}\b", source, re.IGNORECASE)) <= occurrences] or words
    if not words:
        return True
    surviving = sum(1 for w in words if re.search(rf"\b{re.escape(w)}\b", redacted, re.IGNORECASE))
    return surviving <= len(words) / 2
