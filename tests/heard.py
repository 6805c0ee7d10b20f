"""What a recogniser heard, compared loosely: int8 kernels differ between CPUs, so the same audio is "Northgate" on
one machine and "North Gate" on another, "FR-7721" or "FR 7721". Tests never assert a recognised spelling; they
ask whether the words were heard, after case, punctuation, spacing and number words are normalised away."""

from __future__ import annotations

from aftercall.evaluation.metrics import normalised_tokens, word_errors


def _letters_and_digits(text: str) -> str:
    return "".join(normalised_tokens(text))


def heard(phrase: str, text: str) -> bool:
    """True when `phrase` is in `text` once both are reduced to their letters and digits ("north gate" in
    "Northgate", "fr-7721" in "FR 7721.")."""
    return _letters_and_digits(phrase) in _letters_and_digits(text)


def assert_heard(text: str, *phrases: str) -> None:
    missing = [phrase for phrase in phrases if not heard(phrase, text)]
    assert not missing, f"not heard: {missing} in {text!r}"


def wer(hypothesis: str, reference: str) -> float:
    errors, words = word_errors(hypothesis, reference)
    return errors / max(1, words)
