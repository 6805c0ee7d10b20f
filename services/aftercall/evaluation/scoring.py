"""Scores of one case (what the summary and the redaction got right) and of a set of cases.

A case's score holds labels, counts and ids only, never transcript text: the report of a site's gold calls must
not become a copy of their sensitive content.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any, Iterable

from aftercall.evaluation.cases import Case
from aftercall.evaluation.metrics import (best_of, digits_survive, grounding, match_follow_ups, match_phrases, rouge_1,
                                          rouge_l, span_removed, word_errors)
from aftercall.redact.numbers import normalise_numbers
from aftercall.redact.redactor import Redaction

# The generated fields: what the summariser wrote, as opposed to the transcript it was given.
GENERATED_FIELDS = ("reason_for_contact", "issue", "actions_taken", "resolution", "follow_ups", "escalation",
                    "narrative")  # and the values of `entities` (their types are labels)

# The values the summary contract says never appear anywhere (cards beyond the last four, security codes, dates of
# birth, national and health IDs), by aftercall's and presidio's names: any of these surviving is a leak. Other
# labelled types (names, phones, e-mails, addresses) are scored by recall.
LEAK_KINDS = frozenset({"CARD", "CREDIT_CARD", "CVV", "DOB", "DATE_OF_BIRTH", "SSN", "US_SSN", "NI", "UK_NINO",
                        "NHS", "UK_NHS", "NATIONAL_ID"})


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def leaked(value: str, output: str) -> bool:
    """A sensitive value survives in `output`: any 6-digit window of its digits (numbers, whether said as words or
    digits), a shorter number as a number ("six four two" as "642"), or the phrase itself (names, addresses)."""
    said = normalise_numbers(value)
    digits = re.sub(r"\D", "", said)
    if len(digits) >= 4:
        return digits_survive(value, output)
    if digits and re.fullmatch(r"[\d\s.,\-]+", said.strip()):
        # As one number, or read out apart ("1 2 3", "1-2-3").
        heard = normalise_numbers(output)
        runs = [re.sub(r"\D", "", run) for run in re.findall(r"\d(?:[\s\-.]?\d)*", heard)]
        return digits in re.sub(r"\D", " ", heard).split() or digits in runs
    return re.search(rf"(?<!\w){re.escape(value.strip())}(?!\w)", output, re.IGNORECASE) is not None


def _where_said(value: str, turns: tuple | None, redacted_turns: list[dict], heard: list[dict] | None) -> str:
    """For a piece shorter than three digits (a pair of an NI number, its letter), the redacted turns it was said in:
    elsewhere "38" may be an amount ("38 pounds") that must survive. Empty where turns cannot be matched up (audio
    mode: the recogniser's turns) or for longer values, which count wherever they are stored."""
    if heard is not None or not turns or len(turns) != len(redacted_turns):
        return ""
    if len(re.sub(r"\D", "", normalise_numbers(value))) >= 3:
        return ""
    # Their text only: a turn's times ("start": 6.0) are no value anyone said.
    return json.dumps([out["text"] for said, out in zip(turns, redacted_turns) if value in said["text"]],
                      ensure_ascii=False)


def _last_four(kind: str, value: str) -> bool:
    """A card's last four digits alone: kept in the clear by design ([CARD ****7291]), so never a leak."""
    return kind in ("CARD", "CREDIT_CARD") and len(re.sub(r"\D", "", normalise_numbers(value))) <= 4


def _overlaps(secret: str, gold: Iterable[str]) -> bool:
    secret_digits = re.sub(r"\D", "", secret)
    for value in gold:
        if secret_digits and len(secret_digits) >= 3:
            value_digits = re.sub(r"\D", "", normalise_numbers(value))
            if value_digits and (secret_digits in value_digits or value_digits in secret_digits):
                return True
        else:
            # The redactor's values are read after spoken numbers became digits ("22 acacia avenue" for "twenty
            # two acacia avenue"), and keep the sentence's full stop.
            found = secret.strip(" .,").lower()
            for form in {value.lower(), normalise_numbers(value).lower()}:
                if found in form.strip(" .,") or form.strip(" .,") in found:
                    return True
    return False


def baseline_narrative(turns: Iterable[dict]) -> str:
    """The trivial summary a narrative must beat: the customer's first turn and the agent's last one."""
    from aftercall.summarise.extract import clean

    turns = list(turns)
    first = next((clean(t["text"]) for t in turns if t["speaker"] == "customer"), "")
    last = next((clean(t["text"]) for t in reversed(turns) if t["speaker"] == "agent"), "")
    return f"{first} {last}"


def score_case(case: Case, redaction: Redaction, summary: dict | None, heard: list[dict] | None = None) -> dict:
    """`summary` is None for redaction-only sets; `heard` is the recogniser's (unredacted, in memory only) turns in
    audio mode, scored against the case's turns for WER."""
    expected = case.expected
    source = " ".join(t["text"] for t in (heard if heard is not None else case.turns or ()))
    redacted_turns = [t.to_json() for t in redaction.transcript.turns]
    # Both the redacted transcript and the summary are stored and shown: a value surviving in either is a leak.
    # Their text only: a number the summary carries as a number (a confidence, a timing such as 0.00297 s) is no
    # value anyone said, and its digits would read as a leak.
    stored = json.dumps([[t["text"] for t in redacted_turns], list(_strings(summary))], ensure_ascii=False)
    score: dict[str, Any] = {"id": case.case_id, "split": case.split}

    sensitive = [value for _, value in expected.pii] + list(expected.must_not_appear)
    score["leaks"] = [kind for kind, value in expected.pii if kind in LEAK_KINDS and not _last_four(kind, value)
                      and leaked(value, _where_said(value, case.turns, redacted_turns, heard) or stored)]
    score["leaks"] += ["must_not_appear" for value in expected.must_not_appear if leaked(value, stored)]
    if expected.pii:
        score["pii_removed"] = {}
        for kind, value in expected.pii:
            removed, total = score["pii_removed"].get(kind, (0, 0))
            score["pii_removed"][kind] = (removed + span_removed(kind, value, stored, source), total + 1)
    if expected.pii_complete:
        kinds = Counter(s.kind for s in redaction.secrets)
        right = Counter(s.kind for s in redaction.secrets if _overlaps(s.value, sensitive))
        score["redacted"] = {kind: (right[kind], kinds[kind]) for kind in kinds}
    if expected.must_appear:
        # What a reader needs (references, amounts) must survive into the summary, or the transcript without one.
        output = json.dumps(summary if summary is not None else redacted_turns, ensure_ascii=False)
        # Spoken numbers are stored as digits by design: "forty five minutes" is kept as "45 minutes".
        output += " " + normalise_numbers(output)
        kept = [value for value in expected.must_appear if value in output or normalise_numbers(value) in output]
        score["kept"] = (len(kept), len(expected.must_appear))
    if heard is not None and case.turns:
        errors = words = 0
        for speaker in ("agent", "customer"):
            said = " ".join(t["text"] for t in case.turns if t["speaker"] == speaker)
            recognised = " ".join(t["text"] for t in heard if t["speaker"] == speaker)
            e, w = word_errors(recognised, said)
            errors, words = errors + e, words + w
        score["wer"] = (errors, words)
    if summary is None:
        return score

    if expected.disposition is not None:
        score["disposition"] = (expected.disposition, summary["disposition"]["code"])
    if expected.resolution is not None:
        score["resolution"] = (expected.resolution, summary["resolution"]["status"])
    if expected.escalation is not None:
        score["escalation"] = (expected.escalation, bool(summary["escalation"]["required"]))
    if expected.escalation and expected.escalation_target:
        score["escalation_target"] = (_team(expected.escalation_target), _team(summary["escalation"].get("target")))
    for end in ("start", "end"):
        wanted = getattr(expected, f"sentiment_{end}")
        if wanted is not None:
            score[f"sentiment_{end}"] = (wanted, summary["sentiment"][end])
    if expected.follow_ups is not None:
        score["follow_ups"] = match_follow_ups(summary["follow_ups"], list(expected.follow_ups))
    for key in ("verification", "customer_tried", "decisions"):
        if getattr(expected, key) is not None:
            score[key] = match_phrases(summary.get(key, []), list(getattr(expected, key)))
    if expected.error_codes is not None:
        codes = [e["value"] for e in summary["entities"] if e["type"] == "error_code"]
        score["error_codes"] = match_phrases(codes, list(expected.error_codes))
    if expected.narratives:
        score["rouge_l"] = best_of(rouge_l, summary["narrative"], expected.narratives)
        score["rouge_1"] = best_of(rouge_1, summary["narrative"], expected.narratives)
        if case.turns:
            score["rouge_l_baseline"] = best_of(rouge_l, baseline_narrative(case.turns), expected.narratives)
    generated = [text for key in GENERATED_FIELDS for text in _strings(summary.get(key))]
    generated += [entity["value"] for entity in summary["entities"]]
    said = " ".join(t["text"] for t in redacted_turns)
    score["grounding"] = grounding(generated, said)
    score["seconds"] = round(sum(v for k, v in summary.get("timings", {}).items() if k != "asr_s"), 4)
    return score


def _team(named: str | None) -> str:
    """A team as named, without the words any naming has ("the complaints team" = "our complaints team")."""
    words = re.findall(r"[a-z]+", (named or "").lower())
    return " ".join(w for w in words if w not in {"the", "a", "an", "our", "your", "my", "team", "department"})


def _ratio(pairs: Iterable[tuple[int, int]]) -> float | None:
    pairs = list(pairs)
    total = sum(b for _, b in pairs)
    return sum(a for a, _ in pairs) / total if total else None


def _accuracy(scores: list[dict], key: str) -> float | None:
    pairs = [s[key] for s in scores if key in s]
    return sum(1 for want, got in pairs if want == got) / len(pairs) if pairs else None


def _total(values: Iterable[int]) -> int | None:
    values = list(values)
    return sum(values) if values else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def aggregate(scores: list[dict]) -> dict[str, Any]:
    """Flat metrics of a set of case scores (the names gates use). None = nothing labelled for it."""
    metrics: dict[str, Any] = {"cases": len(scores)}
    for key in ("disposition", "resolution", "escalation", "escalation_target", "sentiment_start", "sentiment_end"):
        metrics[f"{key}_accuracy"] = _accuracy(scores, key)
        metrics[f"{key}_labelled"] = sum(1 for s in scores if key in s)
    follow = [s["follow_ups"] for s in scores if "follow_ups" in s]
    matched = sum(f["matched"] for f in follow)
    predicted, expected = sum(f["predicted"] for f in follow), sum(f["expected"] for f in follow)
    metrics["follow_up_precision"] = matched / predicted if predicted else None
    metrics["follow_up_recall"] = matched / expected if expected else None
    metrics["due_exact"] = sum(f["due_exact"] for f in follow) / matched if matched else None
    for key in ("verification", "customer_tried", "decisions", "error_codes"):
        matched, predicted, expected = (sum(s[key][i] for s in scores if key in s) for i in range(3))
        metrics[f"{key}_precision"] = matched / predicted if predicted else None
        metrics[f"{key}_recall"] = matched / expected if expected else None
    for key in ("rouge_l", "rouge_1", "rouge_l_baseline"):
        metrics[key] = _mean([s[key] for s in scores if key in s])
    metrics["grounding"] = _ratio(s["grounding"] for s in scores if "grounding" in s)
    metrics["facts_stated"] = sum(s["grounding"][1] for s in scores if "grounding" in s)
    metrics["hallucination_rate"] = None if metrics["grounding"] is None else 1 - metrics["grounding"]
    removed: dict[str, list[tuple[int, int]]] = {}
    for s in scores:
        for kind, pair in s.get("pii_removed", {}).items():
            removed.setdefault(kind, []).append(pair)
    metrics["redaction_recall_by_type"] = {kind: _ratio(pairs) for kind, pairs in sorted(removed.items())}
    metrics["redaction_spans_by_type"] = {kind: sum(b for _, b in pairs) for kind, pairs in sorted(removed.items())}
    metrics["redaction_recall"] = _ratio(pair for pairs in removed.values() for pair in pairs)
    metrics["name_recall"] = _ratio(removed.get("PERSON", ()))
    redacted: dict[str, list[tuple[int, int]]] = {}
    for s in scores:
        for kind, pair in s.get("redacted", {}).items():
            redacted.setdefault(kind, []).append(pair)
    metrics["redaction_precision_by_type"] = {kind: _ratio(p) for kind, p in sorted(redacted.items())}
    metrics["redaction_precision"] = _ratio(pair for pairs in redacted.values() for pair in pairs)
    metrics["leaks"] = sum(len(s["leaks"]) for s in scores)
    # Only the values that never appear (cards, codes, dates of birth, IDs), not the words of a name or an address.
    metrics["id_leaks"] = sum(1 for s in scores for kind in s["leaks"] if kind in LEAK_KINDS)
    metrics["leaks_by_type"] = dict(Counter(kind for s in scores for kind in s["leaks"]))
    metrics["must_appear_kept"] = _ratio(s["kept"] for s in scores if "kept" in s)
    metrics["wer"] = _ratio(s["wer"] for s in scores if "wer" in s)
    # The audio front end (evaluation.frontend): calls with timed reference turns only.
    for party in ("agent", "customer"):
        metrics[f"wer_{party}"] = _ratio(s[f"wer_{party}"] for s in scores if f"wer_{party}" in s)
        metrics[f"dropped_{party}_turns"] = _total(s[f"dropped_{party}"][0] for s in scores if f"dropped_{party}" in s)
        metrics[f"{party}_turns"] = _total(s[f"dropped_{party}"][1] for s in scores if f"dropped_{party}" in s)
    metrics["dropped_turns"] = _total(s[f"dropped_{party}"][0] for s in scores for party in ("agent", "customer")
                                      if f"dropped_{party}" in s)
    metrics["hallucinated_words"] = _total(s["hallucinated"] for s in scores if "hallucinated" in s)
    metrics["speaker_attribution"] = _ratio(s["attribution"] for s in scores if "attribution" in s)
    metrics["unattributed_share"] = _ratio(s["unattributed"] for s in scores if "unattributed" in s)
    metrics["asr_cpu_s_per_audio_s"] = _ratio(s["asr_cpu_s"] for s in scores if "asr_cpu_s" in s)
    metrics["seconds_per_case"] = _mean([s["seconds"] for s in scores if "seconds" in s])
    return metrics


def confusion(scores: list[dict], key: str = "disposition") -> dict[str, dict[str, int]]:
    """expected code -> predicted code -> count."""
    matrix: dict[str, Counter] = {}
    for s in scores:
        if key in s:
            want, got = s[key]
            matrix.setdefault(str(want), Counter())[str(got)] += 1
    return {want: dict(row) for want, row in sorted(matrix.items())}
