"""Who spoke, on a mono recording: the recognised words are grouped into utterances at pauses, each utterance is
embedded by voice (transcribe.voices), the embeddings fall into two voices, and the agent is the voice that says
what agents say (a greeting, verification questions, "is there anything else").

The result carries a confidence. Below `asr.mono_min_confidence` nothing is guessed: every turn is "unattributed",
and so is a single utterance whose voice is as close to one party as to the other. A summary built on a guess
would put the customer's words in the agent's mouth, which is worse than saying we do not know.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from aftercall.core.transcript import UNATTRIBUTED, Turn, Word

logger = logging.getLogger(__name__)

# A change of speaker needs a breath: words closer than this are one utterance (Whisper's word times are rough, so
# much shorter values split words; the calls we measured leave >= 0.4 s between parties).
_UTTERANCE_PAUSE_S = 0.3
# Utterances this long seed and shape the two voices; shorter ones ("yes") only get assigned.
_SEED_S = 1.0
# An utterance whose similarity to one voice beats the other's by less than this is not attributed.
_MIN_MARGIN = 0.02
_ITERATIONS = 10

_AGENT_CUES = re.compile(
    r"\b(?:thank(?:s| you) for (?:calling|holding|waiting)|you'?re through to|you are through to|speaking\b"
    r"|my name(?:'s| is)|how (?:can|may) i help|what can i do for you|can i (?:take|have|ask|just)"
    r"|(?:can|could) you (?:confirm|give me|tell me|read)|date of birth|first line of|security"
    r"|verify|is there anything else|bear with me|i can see|i'?ve (?:raised|booked|logged|sent|arranged|added)"
    r"|let me (?:just )?(?:check|see|look)|you'?ll (?:get|receive)|within \w+ working days)",
    re.IGNORECASE)
_CUSTOMER_CUES = re.compile(
    r"\b(?:i'?m (?:calling|ringing|phoning)|i am (?:calling|ringing)|calling (?:about|because)|my (?:account|card|bill"
    r"|order|husband|wife|son|daughter|mum|dad)|i (?:want|need|would like|'d like) to|can you help me)",
    re.IGNORECASE)


@dataclass(frozen=True)
class Attribution:
    """Which voice is the agent, and how sure we are (0-1)."""

    agent_voice: int
    confidence: float


def utterances(segments: Sequence[list[Word]]) -> list[list[Word]]:
    """Recognised segments -> runs of words without a pause long enough for the other party to have spoken."""
    out: list[list[Word]] = []
    for words in segments:
        for index, word in enumerate(words):
            if index and word.start - words[index - 1].end < _UTTERANCE_PAUSE_S:
                out[-1].append(word)
            else:
                out.append([word])
    return [u for u in out if any(w.text for w in u)]


def two_voices(embeddings: np.ndarray, durations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(voice 0 or 1, margin) per utterance: two centroids by cosine, seeded by the longest utterance and the long
    utterance least like it, weighted by duration so that a stray "yes" cannot drag a voice."""
    long = durations >= _SEED_S
    if long.sum() < 2:
        long = np.ones(len(durations), dtype=bool)
    first = int(np.argmax(durations))
    similarity_to_first = embeddings @ embeddings[first]
    second = int(np.argmin(np.where(long, similarity_to_first, np.inf)))
    centroids = embeddings[[first, second]]
    weights = np.where(long, durations, durations * 0.1)
    for _ in range(_ITERATIONS):
        similarity = embeddings @ centroids.T
        labels = np.argmax(similarity, axis=1)
        for voice in (0, 1):
            members = labels == voice
            if members.any():
                mean = (embeddings[members] * weights[members, None]).sum(axis=0)
                centroids[voice] = mean / np.linalg.norm(mean)
    similarity = embeddings @ centroids.T
    labels = np.argmax(similarity, axis=1)
    return labels, np.abs(similarity[:, 0] - similarity[:, 1])


def which_is_agent(texts: Sequence[str], labels: np.ndarray) -> Attribution:
    """The voice that greets and verifies is the agent's. Confidence: how one-sided the evidence is, 0 when there
    is none (then nothing is attributed)."""
    evidence = [0.0, 0.0]
    for index, (text, voice) in enumerate(zip(texts, labels)):
        evidence[voice] += len(_AGENT_CUES.findall(text)) - len(_CUSTOMER_CUES.findall(text))
        if index == 0:
            evidence[voice] += 1.0  # the agent answers the call
    agent = int(evidence[1] > evidence[0])
    spread = abs(evidence[0] - evidence[1])
    return Attribution(agent, spread / (abs(evidence[0]) + abs(evidence[1]) + 1.0))


def attribute_speakers(segments: Sequence[list[Word]], samples: np.ndarray, sample_rate: int,
                       min_confidence: float, encoder=None) -> list[Turn]:
    """One mixed channel's recognised segments -> turns of agent, customer or unattributed."""
    groups = utterances(segments)
    if not groups:
        return []
    if encoder is None:
        from aftercall.transcribe.voices import shared_encoder

        encoder = shared_encoder()
    clips = [(samples[int(g[0].start * sample_rate):int(g[-1].end * sample_rate) + 1], sample_rate) for g in groups]
    embeddings = np.asarray(encoder.embed_many(clips), dtype=np.float32)
    durations = np.array([g[-1].end - g[0].start for g in groups])
    texts = [" ".join(w.text for w in g) for g in groups]
    labels, margins = two_voices(embeddings, durations)
    attribution = which_is_agent(texts, labels)
    logger.info("mono call: %d utterances in two voices, agent identified with confidence %.2f%s", len(groups),
                attribution.confidence, "" if attribution.confidence >= min_confidence else " (unattributed)")
    turns = []
    for group, text, voice, margin in zip(groups, texts, labels, margins):
        if attribution.confidence < min_confidence or margin < _MIN_MARGIN:
            speaker = UNATTRIBUTED
        else:
            speaker = "agent" if voice == attribution.agent_voice else "customer"
        turns.append(Turn(speaker, text.strip(), group[0].start, group[-1].end, tuple(group)))
    return turns
