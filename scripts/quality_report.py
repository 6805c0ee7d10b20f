#!/usr/bin/env python3
"""Quality figures on the public sets in ../shared/data: TweetSumm ROUGE vs a trivial baseline, presidio recall.
Prints a Markdown table (paste into docs/quality.md). Skips a set that is absent."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from aftercall.core.transcript import transcript_from_json
from aftercall.quality import best_of, presidio_recall, rouge_1, rouge_l
from aftercall.summarise.extract import clean
from aftercall.summarise.summariser import EmbeddedSummariser
from aftercall.summarise.taxonomy import load_taxonomy

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def tweetsumm() -> None:
    path = DATA / "tweetsumm" / "dev.jsonl"
    if not path.exists():
        print("tweetsumm: absent, skipped", file=sys.stderr)
        return
    summariser, taxonomy = EmbeddedSummariser(), load_taxonomy()
    totals = {"narrative_l": 0.0, "narrative_1": 0.0, "baseline_l": 0.0, "baseline_1": 0.0}
    lines = path.read_text().splitlines()
    for index, line in enumerate(lines):
        record = json.loads(line)
        transcript = transcript_from_json({"turns": record["turns"]})
        references = [" ".join(parts) for parts in record["abstractive_summaries"]]
        narrative = summariser.summarise(transcript, taxonomy)["narrative"]
        first = next(clean(t.text) for t in transcript.turns if t.speaker == "customer")
        last = next((clean(t.text) for t in reversed(transcript.turns) if t.speaker == "agent"), "")
        for name, text in (("narrative", narrative), ("baseline", f"{first} {last}")):
            totals[f"{name}_l"] += best_of(rouge_l, text, references)
            totals[f"{name}_1"] += best_of(rouge_1, text, references)
        if index % 100 == 99:
            print(f"tweetsumm: {index + 1}/{len(lines)}", file=sys.stderr)
    n = len(lines)
    print(f"| TweetSumm dev ({n} dialogues) | ROUGE-L | ROUGE-1 |\n|---|---|---|")
    print(f"| aftercall narrative | {totals['narrative_l'] / n:.3f} | {totals['narrative_1'] / n:.3f} |")
    print(f"| baseline: first customer turn + last agent turn | {totals['baseline_l'] / n:.3f} | "
          f"{totals['baseline_1'] / n:.3f} |\n")


def presidio() -> None:
    path = DATA / "presidio" / "synth_dataset_v2.json"
    if not path.exists():
        print("presidio: absent, skipped", file=sys.stderr)
        return
    report = presidio_recall(json.loads(path.read_text()))
    print("| presidio type | spans | recall |\n|---|---|---|")
    for kind, values in report.items():
        if not kind.startswith("_"):
            print(f"| {kind} | {values['spans']} | {values['recall']:.3f} |")
    clean_sentences = report["_clean_sentences"]
    print(f"\nFalse alarms: {clean_sentences['recall']:.3f} of {clean_sentences['spans']} sentences with no PII "
          "got a redaction.\n")


if __name__ == "__main__":
    tweetsumm()
    presidio()
