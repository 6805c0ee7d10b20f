"""Adapters from the public evaluation sets (`../shared/data`, see its README for licences) to gold cases.

Each adapter says what the set can measure and whether aftercall was tuned looking at it: TweetSumm dev was used
to tune the narrative (docs/quality.md), so its figures are marked optimistic; the others were not looked at while
tuning. Every set is also split in half by hash (`cases.split_of`), and the report gives the held-out half apart.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Callable

from aftercall.evaluation.cases import Case, CaseFormatError, Dataset, Expected, split_of
from aftercall.evaluation.metrics import PRESIDIO_CLAIMED
from aftercall.summarise.taxonomy import Disposition


def _words(label: str) -> str:
    """card_arrival / GetQuote / "Initiate Refund" -> "card arrival" / "get quote" / "initiate refund"."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", label).replace("_", " ").lower().strip()


def _code(label: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", _words(label).upper()).strip("_")


def _case(dataset: str, case_id: str, turns: list[dict], expected: Expected) -> Case:
    return Case(case_id, tuple(turns), expected=expected, split=split_of(dataset, case_id))


def tweetsumm(root: Path) -> list[Dataset]:
    cases = []
    for line in (root / "tweetsumm" / "dev.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        references = tuple(" ".join(parts) for parts in record["abstractive_summaries"])
        cases.append(_case("tweetsumm", record["conversation_id"], record["turns"], Expected(narratives=references)))
    return [Dataset("tweetsumm", cases, "TweetSumm dev: 600 customer-care dialogues (Twitter), 3 human summaries each; "
                    "annotations CC0", tuned_on=True, speakable=False,
                    notes=["The narrative was tuned on this set (docs/quality.md): its figures are optimistic.",
                           "Typed Twitter chat, not speech (@handles, links): text mode only."])]


def dialogsum(root: Path) -> list[Dataset]:
    cases = []
    for line in (root / "dialogsum" / "dev.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        turns = []
        for row in record["dialogue"].splitlines():
            match = re.match(r"#Person(\d)#:\s*(.*)", row)
            if match and match.group(2).strip():
                # Person1 usually opens and serves (doctor, clerk, agent): the agent's seat.
                turns.append({"speaker": "agent" if match.group(1) == "1" else "customer",
                              "text": match.group(2).replace(" ' ", "'")})
        if turns:
            cases.append(_case("dialogsum", record["fname"], turns, Expected(narratives=(record["summary"],))))
    return [Dataset("dialogsum", cases, "DialogSum dev: 500 spoken-style dialogues, 1 reference summary each; "
                    "CC BY-NC-SA 4.0 (evaluation only)", tuned_on=False,
                    notes=["General conversations (about 12 % service topics) with #Person1# as agent: a "
                           "regression signal, not a contact-centre score.",
                           "References name people #Person1#/#Person2#; aftercall's narrative says "
                           "customer/agent, which caps ROUGE."])]


# presidio-research labels -> what they are called in the report (only the types aftercall claims to redact).
def presidio(root: Path) -> list[Dataset]:
    records = json.loads((root / "presidio" / "synth_dataset_v2.json").read_text(encoding="utf-8"))
    cases = []
    for index, record in enumerate(records):
        spans = [(s["entity_type"], s["entity_value"]) for s in record["spans"]]
        claimed = tuple(span for span in spans if span[0] in PRESIDIO_CLAIMED)
        # Precision is only fair where every sensitive span is labelled and claimed: a redacted unclaimed type
        # (an organisation, a city) is not an error the labels could show.
        complete = len(claimed) == len(spans)
        cases.append(_case("presidio", f"presidio-{index}", [{"speaker": "customer", "text": record["full_text"]}],
                           Expected(pii=claimed, pii_complete=complete)))
    return [Dataset("presidio", cases, "presidio-research synth_dataset_v2: 1,500 synthetic sentences, 17 PII types; "
                    "MIT", tuned_on=False, summarise=False, speakable=False,
                    notes=[f"Recall counts only the types aftercall claims ({', '.join(PRESIDIO_CLAIMED)}); a span "
                           "is removed when no 6-digit window of its digits, or at most half of its words, survive.",
                           "Precision counts sentences whose every span is of a claimed type."])]


def _intent_dataset(name: str, source: str, rows: list[tuple[str, str, str]],
                    taxonomy: tuple[Disposition, ...], notes: list[str]) -> Dataset:
    """One customer utterance per case, scored on the disposition only, against the set's own taxonomy."""
    cases = [_case(name, case_id, [{"speaker": "customer", "text": text}], Expected(disposition=_code(intent)))
             for case_id, text, intent in rows]
    return Dataset(name, cases, source, tuned_on=False, taxonomy=taxonomy, speakable=False, notes=notes)


def banking77(root: Path) -> list[Dataset]:
    folder = root / "banking77"
    with open(folder / "train.csv", encoding="utf-8", newline="") as handle:
        train = list(csv.DictReader(handle))
    with open(folder / "test.csv", encoding="utf-8", newline="") as handle:
        test = list(csv.DictReader(handle))
    examples: dict[str, list[str]] = {}
    for row in train:
        examples.setdefault(row["category"], []).append(row["text"])
    # A site writes descriptions in its own words; here they are the label plus three training queries (train.csv,
    # never the test queries scored below).
    taxonomy = tuple(Disposition(_code(label), _words(label), f"{_words(label)}: " + " ".join(queries[:3]))
                     for label, queries in examples.items())
    rows = [(f"banking77-{index}", row["text"], row["category"]) for index, row in enumerate(test)]
    return [_intent_dataset("banking77", "Banking77 test: 3,080 banking queries, 77 intents; CC BY 4.0", rows,
                            taxonomy, ["The taxonomy is the 77 intents, each described by its label and three "
                                       "queries from train.csv."])]


def dstc11(root: Path) -> list[Dataset]:
    datasets = []
    for domain, file in (("insurance", "development"), ("banking", "test-banking"), ("finance", "test-finance")):
        lines = (root / "dstc11" / f"{file}.test-utterances.jsonl").read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        intents = sorted({r["intent"] for r in records})
        taxonomy = tuple(Disposition(_code(i), _words(i), _words(i)) for i in intents)
        rows = [(r["utterance_id"], r["utterance"], r["intent"]) for r in records]
        datasets.append(_intent_dataset(
            f"dstc11-{domain}", f"DSTC11 track 2 {file}: human agent-customer utterances with intents; "
            "CDLA-Permissive-2.0", rows, taxonomy,
            ["Taxonomy descriptions are only the intent names split into words (no examples): a floor, not what "
             "a site's own descriptions give."]))
    return datasets


def abcd(root: Path) -> list[Dataset]:
    folder = root / "abcd"
    guidelines = json.loads((folder / "guidelines.json").read_text(encoding="utf-8"))
    ontology = json.loads((folder / "ontology.json").read_text(encoding="utf-8"))
    taxonomy = []
    for flow in ontology["intents"]["flows"]:
        guide = next((g for title, g in guidelines.items() if _code(title) == _code(flow)), {})
        subflows = ", ".join(_words(s) for s in ontology["intents"]["subflows"][flow])
        taxonomy.append(Disposition(_code(flow), _words(flow), f"{guide.get('description', _words(flow))}: {subflows}"))
    cases = []
    for record in json.loads((folder / "abcd_sample.json").read_text(encoding="utf-8")):
        turns = [{"speaker": speaker, "text": text} for speaker, text in record["original"]
                 if speaker in ("agent", "customer")]
        scenario = record["scenario"]
        said = " ".join(t["text"] for t in turns).lower()
        candidates = [("PERSON", scenario["personal"].get("customer_name")),
                      ("EMAIL_ADDRESS", scenario["personal"].get("email")),
                      ("PHONE_NUMBER", scenario["personal"].get("phone")),
                      ("STREET_ADDRESS", scenario["order"].get("street_address"))]
        # Only what the customer actually said: a scenario value never spoken is trivially "removed".
        pii = [(kind, value) for kind, value in candidates if value and value.lower() in said]
        cases.append(_case("abcd", str(record["convo_id"]), turns,
                           Expected(disposition=_code(scenario["flow"]), pii=tuple(pii))))
    return [Dataset("abcd", cases, "ABCD samples: 3 full chats with the true scenario values; MIT", tuned_on=False,
                    taxonomy=tuple(taxonomy),
                    notes=["Three dialogues: an illustration, not a score. The taxonomy is ABCD's 10 flows, "
                           "described by the guidelines and their subflows."])]


PUBLIC_SETS: dict[str, Callable[[Path], list[Dataset]]] = {
    "tweetsumm": tweetsumm, "dialogsum": dialogsum, "presidio": presidio, "banking77": banking77,
    "dstc11": dstc11, "abcd": abcd}


def load_public(name: str, root: Path) -> list[Dataset]:
    try:
        return PUBLIC_SETS[name](root)
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise CaseFormatError(f"public set {name} under {root}: not in the expected layout ({exc!r})") from None
