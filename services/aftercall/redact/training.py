"""Training of the redaction tagger (aftercall.redact.tagger) from the tune halves of evaluation sets:
`python -m aftercall.redact.training SET...` (`make tagger`). Only excerpts whose split is "tune" are read, so the
held-out halves stay unseen."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from aftercall.redact import rules
from aftercall.redact.numbers import normalise_numbers
from aftercall.redact.redactor import run_rules
from aftercall.redact.tagger import WEIGHTS, features, pieces, words

# The gold types whose values the model learns to find (the eval's ID leak kinds).
_ID_TYPES = {"CARD", "CVV", "NI", "NHS", "SSN", "DOB"}


def _overlaps(piece_text: str, value: str) -> bool:
    piece_digits = re.sub(r"\D", "", piece_text)
    value_digits = re.sub(r"\D", "", normalise_numbers(value))
    if piece_digits and value_digits:
        return piece_digits in value_digits or value_digits in piece_digits
    return bool(set(words(piece_text)) & set(words(value)))


def labelled_pieces(cases: Iterable[dict], table: rules.RuleTable = rules.DEFAULT_TABLE
                    ) -> Iterator[tuple[list[str], int]]:
    """(features, label) for every piece of the tune excerpts: 1 where it overlaps an ID value said in its turn."""
    for case in cases:
        turns = case["turns"]
        conversation = run_rules([t["text"] for t in turns], [t["speaker"] for t in turns], table)
        asked = conversation.exchange_states()
        values = [(p["type"], p["value"]) for p in case["expected"]["pii"]]
        for piece in pieces(conversation.texts):
            said = turns[piece.turn]["text"]
            text = conversation.texts[piece.turn][piece.start:piece.end]
            label = any(kind in _ID_TYPES and value in said and _overlaps(text, value) for kind, value in values)
            yield features(conversation, piece, asked), int(label)


def fit(samples: list[tuple[list[str], int]], l2: float = 1e-3, epochs: int = 1000, rate: float = 0.5,
        min_count: int = 2) -> dict[str, float]:
    """Logistic regression by full-batch gradient descent: deterministic for the same samples."""
    counts: dict[str, int] = {}
    for names, _ in samples:
        for name in set(names):
            counts[name] = counts.get(name, 0) + 1
    vocabulary = sorted(n for n, c in counts.items() if c >= min_count or n == "bias")
    index = {n: i for i, n in enumerate(vocabulary)}
    rows = [np.array(sorted({index[n] for n in names if n in index}), dtype=np.int64) for names, _ in samples]
    flat = np.concatenate(rows)
    owner = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
    labels = np.array([y for _, y in samples], dtype=np.float64)
    # Positives are rarer than the ordinary numbers around them; weighting them keeps recall, which matters more.
    balance = np.where(labels == 1, (labels == 0).sum() / max(1, labels.sum()), 1.0)
    balance /= balance.mean()
    weights = np.zeros(len(vocabulary))
    for _ in range(epochs):
        z = np.bincount(owner, weights=weights[flat], minlength=len(rows))
        error = (1.0 / (1.0 + np.exp(-np.clip(z, -30, 30))) - labels) * balance
        gradient = np.bincount(flat, weights=error[owner], minlength=len(vocabulary)) / len(rows) + l2 * weights
        weights -= rate * gradient
    return {name: round(float(w), 4) for name, w in zip(vocabulary, weights) if abs(w) >= 1e-4}


def tune_cases(files: Iterable[Path]) -> list[dict]:
    """The excerpts of split "tune" in JSON Lines `files` (ValueError naming the file and line if one is not)."""
    cases = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                case = json.loads(line)
                if case.get("split") == "tune":
                    [(t["speaker"], t["text"]) for t in case["turns"]]
                    [(p["type"], p["value"]) for p in case["expected"]["pii"]]
                    cases.append(case)
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                raise ValueError(f"{path}:{number}: not an excerpt with turns and expected.pii ({error})") from None
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the redaction tagger from the tune halves of sets.")
    parser.add_argument("sets", nargs="+", type=Path, help="JSON Lines evaluation sets (only split 'tune' is read)")
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args(argv)
    try:
        cases = tune_cases(args.sets)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not cases:
        print("error: no excerpt of split 'tune' in the sets given", file=sys.stderr)
        return 2
    samples = list(labelled_pieces(cases))
    weights = fit(samples)
    model = {"trained_on": sorted(p.name for p in args.sets), "excerpts": len(cases), "pieces": len(samples),
             "positives": sum(y for _, y in samples), "weights": weights}
    args.out.write_text(json.dumps(model, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{len(cases)} excerpts, {len(samples)} pieces, {model['positives']} positives, {len(weights)} weights; "
          f"sha256 {hashlib.sha256(args.out.read_bytes()).hexdigest()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
