"""Customer sentiment at the start and the end of the call: VADER with call-centre vocabulary added.

Plain VADER misreads contact-centre speech ("stolen", "declined", "sorted"); the additions are general call
language, not phrases from any test call.
"""

from __future__ import annotations

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

CALL_LEXICON = {
    "stolen": -2.0, "fraud": -1.8, "unauthorised": -1.8, "unauthorized": -1.8, "overcharged": -2.2,
    "declined": -1.2, "broken": -1.6, "leak": -1.4, "leaking": -1.6, "mould": -1.5, "damp": -1.0, "outage": -1.6,
    "dropping": -1.0, "worried": -1.8, "frustrated": -2.2, "frustrating": -2.2, "ridiculous": -2.4,
    "unacceptable": -2.6, "disappointed": -2.0, "useless": -2.4, "complaint": -1.5, "waiting": -0.6, "still": -0.4,
    "again": -0.3, "missing": -1.2, "late": -0.8, "wrong": -1.4, "error": -1.2, "cancel": -0.6,
    "sorted": 1.6, "brilliant": 2.6, "lovely": 2.2, "cheers": 1.5, "appreciate": 2.0, "helpful": 2.0,
    "perfect": 2.4, "relieved": 1.8, "resolved": 1.6, "fixed": 1.4,
}
# Politeness at the very end ("thanks, bye") is near-universal and says little on its own.
_THRESHOLD = 0.25


class SentimentScorer:
    def __init__(self) -> None:
        self._analyzer = SentimentIntensityAnalyzer()
        self._analyzer.lexicon.update(CALL_LEXICON)

    def score(self, text: str) -> float:
        return self._analyzer.polarity_scores(text)["compound"] if text.strip() else 0.0

    def label(self, text: str) -> str:
        value = self.score(text)
        if value >= _THRESHOLD:
            return "positive"
        if value <= -_THRESHOLD:
            return "negative"
        return "neutral"
