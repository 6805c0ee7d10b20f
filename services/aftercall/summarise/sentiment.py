"""Customer sentiment at the start and the end of a call: VADER with call-centre vocabulary, and rules for what
it misreads in speech.

Plain VADER scores politeness and back-channels ("yes", "okay", "thanks", "please", "good morning") as warmth,
and reads sarcasm ("Another two weeks? Brilliant.") and grudging thanks ("fine, thanks I suppose") as praise. So:
those words are taken out of its lexicon; a bare "thanks" counts for nothing, while warm thanks, relief and praise
of the agent count for something; sarcasm and grudging words count against; at the end, worry that is past or
answered is relief; and an opening is judged on the caller's first turns that say something (not identity answers
or back-channels). The additions are general call language, not phrases from any test call.
"""

from __future__ import annotations

import re

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

CALL_LEXICON = {
    "stolen": -2.0, "fraud": -1.8, "unauthorised": -1.8, "unauthorized": -1.8, "overcharged": -2.2,
    "declined": -1.2, "broken": -1.6, "leak": -1.4, "leaking": -1.6, "mould": -1.5, "damp": -1.0, "outage": -1.6,
    "dropping": -1.0, "worried": -1.8, "frustrated": -2.2, "frustrating": -2.2, "ridiculous": -2.4,
    "unacceptable": -2.6, "disappointed": -2.0, "useless": -2.4, "complaint": -1.5, "waiting": -0.6, "still": -0.4,
    "again": -0.3, "missing": -1.2, "late": -0.8, "wrong": -1.4, "error": -1.2, "cancel": -0.6,
    "sorted": 1.6, "brilliant": 2.6, "lovely": 2.2, "appreciate": 2.0, "helpful": 2.0,
    "perfect": 2.4, "relieved": 1.8, "resolved": 1.6, "fixed": 1.4,
    "unbelievable": -2.4, "joking": -1.5,
}
# Words VADER scores that, on a call, are back-channels, politeness, hedges or procedure rather than feeling.
_NOT_TONE = ("yes yeah yep ok okay alright no fine well sure please thank thanks cheers sorry dear help welcome "
             "bother honestly honest like pretty definitely clearly hope hopefully hoping luck care god number "
             "pay credit top hand straight interest share safe urgent accept agree agreed matter ready fit true "
             "block stop leave want ignore approved smart").split()

_PLACEHOLDER = re.compile(r"\[[A-Z_]+[^\]]*\]")  # redacted values: [NAME], [CARD ****5556]
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[a-z][a-z'-]*")
# Words that carry no content in a reply: back-channels, politeness and the glue of identity answers.
_FLAT_WORDS = frozenset(
    "yes yeah yep yup no nope okay ok right alright mm mhm mm-hm uh um erm er hmm oh so well sure hang on it's its "
    "it that's that is the and my i i'm a an got please thanks thank you bye too cheers ta love dear hi hello "
    "hiya morning afternoon evening just will do".split())
# Fewer content words than this, and no feeling in them: an identity answer or a back-channel ("Yes, that's it.").
_MIN_CONTENT_WORDS = 3
_CLOSING = re.compile(r"\b(?:bye|you too|take care)\b", re.IGNORECASE)
_GREETING = re.compile(r"\b(?:good (?:morning|afternoon|evening)|morning|hi|hiya|hello|hey)\b", re.IGNORECASE)

# Each cue: (pattern, weight in VADER compound units). Anxiety reads as relief at the end of a call (see _PAST).
_ANXIETY = re.compile(
    r"\b(?:worr(?:y|ied|ying)|panic\w*|stress(?:ed|ing|ful)?|dread\w*|anxious|nervous|scared|terrified|frightened|"
    r"upset|in bits|in a (?:bit of a )?(?:state|muddle|mess)|half the night|sweating|"
    r"(?:don't|do not) (?:know what to do|understand))\b",
    re.IGNORECASE)
_CUES = (
    (_ANXIETY, -1.0),
    # Frustration and anger.
    (re.compile(r"\b(?:fed up|sick (?:of|and tired)|had enough|fuming|furious|livid|disgrace\w*|appalling|pathetic|"
                r"rubbish|having a laugh|not (?:best )?(?:pleased|happy)|waste of (?:time|money)|treated like|"
                r"you lot)\b", re.IGNORECASE), -1.0),
    # Waiting, being passed around and having to call again.
    (re.compile(r"\b(?:on hold|finally|been (?:trying|waiting|chasing)|passed (?:a)?round|getting nowhere|given up|"
                r"(?:second|third|fourth|fifth) time|(?:twice|three times|four times) (?:now|already)|"
                r"another one|keeps? happening|(?:an actual|a real) (?:human|person)|"
                r"(?:nobody|no one)(?:'s| has| seems| cares| ever))\b", re.IGNORECASE), -0.6),
    # Refused or stuck: nothing to be done, asking for someone higher.
    (re.compile(r"\b(?:nothing (?:at all )?(?:you|anyone|I) can do|(?:what|how) am I supposed to|I'm stuck|"
                r"(?:speak|talk) to (?:a|your) (?:manager|supervisor)|ombudsman|councillor|I'm not paying)\b",
                re.IGNORECASE), -0.8),
    # Grudging: thanks or acceptance given under protest, and doubt that anything will happen.
    (re.compile(r"\b(?:(?:thanks|thank you|fine|okay)[,.!]? I (?:suppose|guess)|thanks anyway|forget it|"
                r"don't bother|I'll believe it when I see it|we'll see|let's see if|if you say so|"
                r"I'll think about it|just (?:fix|sort) it|(?:fine|okay|right|yeah)[,.!]? whatever|"
                r"so I (?:just )?have to)\b",
                re.IGNORECASE), -0.8),
    # Relief and praise of the agent.
    (re.compile(r"\b(?:relie(?:f|ved)|weight off|life ?saver|saved me|you've been (?:\w+ ){0,3}(?:kind|helpful|"
                r"lovely|good|great|brilliant|amazing|patient|wonderful|fantastic|a star|a (?:great|big|real) help)|"
                r"(?:easier|better|quicker) than I (?:expected|thought)|helps a lot|means a lot)\b",
                re.IGNORECASE), 1.0),
    # Warm thanks, unlike a bare "thanks".
    (re.compile(r"\b(?:(?:thanks|thank you) (?:so|very|ever so|really) much|thanks a lot|many thanks|"
                r"(?:thanks|thank you)\W+(?:\w+\W+)?honestly|honestly\W+(?:thanks|thank you))\b", re.IGNORECASE), 0.6),
)
# At the end of a call, worry spoken of in the past ("I was dreading this"), or answered by a warmer turn after it,
# is relief that it is over.
_PAST = re.compile(r"\b(?:was|were|been|had)\b", re.IGNORECASE)
_RELIEF_WEIGHT = 0.8
# A reply that is only "Fine." (or "Right, fine, thanks.") is curt, not contentment; "Okay. Fine." is acceptance.
_CURT = re.compile(r"^(?:(?:right|no|yes|yeah)[,.!]? )*fine[.!]?(?: (?:thanks|thank you)[.!]?)?$", re.IGNORECASE)
_CURT_WEIGHT = -0.5
# A short burst of praise ("Brilliant.", "Oh, lovely.") in a turn that complains is sarcasm.
_MAX_EXCLAMATION_WORDS = 3
# Summed scores (VADER compound units) nearer zero than this are flat: a neutral tone.
_THRESHOLD = 0.45
# The gold definition: the caller's first (last) two or three turns that say something.
_WINDOW_TURNS = 3


class SentimentScorer:
    def __init__(self) -> None:
        self._analyzer = SentimentIntensityAnalyzer()
        lexicon = self._analyzer.lexicon
        # VADER's chat shorthand ("gt", "np", "l") is, in a call, spelled-out letters and codes ("P A U L").
        for word in [*_NOT_TONE, *(w for w in lexicon if len(w) <= 2 and w.isalnum())]:
            lexicon.pop(word, None)
        lexicon.update(CALL_LEXICON)

    def arc(self, turns: list[str]) -> tuple[str, str]:
        """(start, end) labels from the customer's turns, in order."""
        if not turns:
            return "neutral", "neutral"
        half = max(1, len(turns) // 2)
        opening = [t for t in turns[:half] if self._says_something(t)] or turns[:1]
        closing = [t for t in turns[len(turns) - half:] if not self._identity_or_goodbye(t)] or turns[-1:]
        return (self._label(opening[:_WINDOW_TURNS], at_end=False),
                self._label(closing[-_WINDOW_TURNS:], at_end=True))

    def _label(self, turns: list[str], at_end: bool) -> str:
        scores: list[float] = []
        for text in reversed(turns) if at_end else turns:
            scores.append(self._turn_score(text, at_end, answered=at_end and max(scores, default=0.0) > 0))
        total = sum(scores)
        if not at_end and min(scores) <= -_THRESHOLD:
            return "negative"  # an opening that complains anywhere is not cheered up by praise beside it
        if total >= _THRESHOLD:
            return "positive"
        if total <= -_THRESHOLD:
            return "negative"
        return "neutral"

    def _turn_score(self, text: str, at_end: bool = False, answered: bool = False) -> float:
        text = _PLACEHOLDER.sub("", text).strip()
        if _CURT.match(text):
            return _CURT_WEIGHT
        sentences = [s for s in _SENTENCE.split(text) if s.strip()]
        scores = [self._sentence_score(s, at_end, answered) for s in sentences]
        if min(scores, default=0.0) >= 0:
            # A short burst of warmth in an opening ("Hiya! Lovely, thanks.") is small talk, not the caller's tone.
            return sum(v for s, v in zip(sentences, scores) if at_end or not _exclamation(s))
        # Praise in a turn that complains is sarcasm: any praise in an opening, only a short burst at the end,
        # where mixed feelings are real ("Shame it can't be refunded. But you've been great.").
        return sum(-abs(v) if not at_end or _exclamation(s) else v for s, v in zip(sentences, scores))

    def _sentence_score(self, sentence: str, at_end: bool, answered: bool) -> float:
        cue_score = 0.0
        for pattern, weight in _CUES:
            for match in pattern.finditer(sentence):
                relief = at_end and pattern is _ANXIETY and (answered or _PAST.search(sentence, 0, match.start()))
                cue_score += _RELIEF_WEIGHT if relief else weight
            sentence = pattern.sub(" ", sentence)  # a phrase counted as a cue is not scored again word by word
        words = _GREETING.sub(" ", sentence)
        word_score = self._analyzer.polarity_scores(words)["compound"] if words.strip() else 0.0
        if not at_end and cue_score < 0:
            word_score = -abs(word_score)  # "what a lovely letter from you lot": praise beside a complaint
        return cue_score + word_score

    def _says_something(self, text: str) -> bool:
        return len(_content_words(text)) >= _MIN_CONTENT_WORDS or self._turn_score(text) != 0

    def _identity_or_goodbye(self, text: str) -> bool:
        """Identity answers and goodbyes say nothing of how the call went; back-channels ("okay") are flat."""
        if self._turn_score(text, at_end=True) != 0 or len(_content_words(text)) >= _MIN_CONTENT_WORDS:
            return False
        return bool(_PLACEHOLDER.search(text) or re.search(r"\d", text) or _CLOSING.search(text))


def _content_words(text: str) -> list[str]:
    words = _WORD.findall(_PLACEHOLDER.sub(" ", text).lower())
    return [w for w in words if len(w) > 1 and w not in _FLAT_WORDS]


def _exclamation(sentence: str) -> bool:
    return len(_content_words(sentence)) <= _MAX_EXCLAMATION_WORDS
