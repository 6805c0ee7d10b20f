"""Mono recordings: agent and customer told apart by voice, and nothing guessed when the evidence is thin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aftercall.core.audio import parse_wav
from aftercall.core.transcript import UNATTRIBUTED, Word
from aftercall.transcribe.speakers import attribute_speakers, two_voices, utterances, which_is_agent


def _words(*timed: tuple[str, float, float]) -> list[Word]:
    return [Word(text, start, end) for text, start, end in timed]


def test_utterances_split_at_pauses_a_party_could_speak_in():
    segment = _words(("Can", 0.0, 0.2), ("I", 0.25, 0.3), ("help?", 0.35, 0.6), ("Yes.", 1.1, 1.3),
                     ("Great.", 1.45, 1.7))
    assert [[w.text for w in u] for u in utterances([segment])] == [["Can", "I", "help?"], ["Yes.", "Great."]]
    assert utterances([[]]) == []


def test_two_voices_follow_the_embeddings_not_the_order():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(2, 256))
    truth = np.array([0, 1, 0, 1, 1, 0, 0, 1])
    embeddings = centres[truth] + rng.normal(scale=0.3, size=(len(truth), 256))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    labels, margins = two_voices(embeddings.astype(np.float32), np.full(len(truth), 2.0))
    assert (labels == truth).all() or (labels == 1 - truth).all()
    assert (margins > 0.1).all()


def test_the_agent_is_the_voice_that_greets_and_verifies():
    texts = ["Good morning, you're through to Northgate Bank, my name's Priya, how can I help?",
             "Hi, I'm calling about my card.", "Can you confirm your date of birth?", "Twelfth of May."]
    sure = which_is_agent(texts, np.array([1, 0, 1, 0]))
    assert sure.agent_voice == 1 and sure.confidence > 0.8
    unsure = which_is_agent(["Hello?", "Hello.", "Yes."], np.array([0, 1, 0]))
    assert unsure.confidence < 0.6


class _OneVoice:
    """Every clip embeds alike: the encoder's own accuracy is tested in test_voices.py; this tests what
    attribution does when the voices cannot be told apart and nothing says who the agent is."""

    def embed_many(self, clips):
        return np.tile([1.0, 0.0], (len(clips), 1))


def test_low_confidence_leaves_every_turn_unattributed():
    segments = [_words(("Hello?", 0.0, 1.2)), _words(("Hello.", 2.0, 3.2)), _words(("Hello?", 4.0, 5.2))]
    turns = attribute_speakers(segments, np.zeros(8000 * 6, dtype=np.float32), 8000, 0.6, _OneVoice())
    assert [t.speaker for t in turns] == [UNATTRIBUTED] * 3
    assert [t.text for t in turns] == ["Hello?", "Hello.", "Hello?"]


def test_a_live_stretch_of_a_mono_call_stays_unattributed():
    """Even where the words say who the agent is: a stretch is too short to tell two voices apart."""
    from aftercall.core.audio import Audio, Encoding
    from aftercall.transcribe.turns import conversation

    greeting = _words(("Thanks", 0.0, 0.3), ("for", 0.35, 0.5), ("calling,", 0.55, 0.9), ("how", 1.0, 1.2),
                      ("can", 1.25, 1.4), ("I", 1.45, 1.5), ("help?", 1.55, 1.9))
    answer = _words(("I'm", 3.5, 3.7), ("calling", 3.75, 4.0), ("about", 4.05, 4.2), ("my", 4.25, 4.4),
                    ("bill.", 4.45, 4.8))
    audio = Audio(8000, (np.zeros(8000 * 5, dtype=np.int16),), Encoding.LINEAR_PCM)
    live = conversation(audio, [[greeting, answer]], ("agent", "customer"), "diarise", 0.6, live=True)
    assert [(t.speaker, t.text) for t in live.turns] == [
        (UNATTRIBUTED, "Thanks for calling, how can I help?"), (UNATTRIBUTED, "I'm calling about my bill.")]


@pytest.mark.e2e
def test_a_mono_mix_gets_agent_and_customer(transcriber, tts, tmp_path: Path):
    """A synthesised stereo call mixed to one channel, through the real recogniser and the real voice encoder."""
    from aftercall.evaluation.frontend import front_end_scores

    turns = [
        {"speaker": "agent",
         "text": "Good afternoon, you're through to Riverside Council, my name's Sam. How can I help?"},
        {"speaker": "customer", "text": "Hi, I'm calling because my green bin wasn't collected on Tuesday."},
        {"speaker": "agent", "text": "I'm sorry about that. Can I take the first line of your address, please?"},
        {"speaker": "customer", "text": "Forty two Elm Road."},
        {"speaker": "agent",
         "text": "Thank you. I've logged a missed collection and the crew will come back on Friday."},
        {"speaker": "customer", "text": "Lovely, thanks very much."},
    ]
    stereo, mono = tmp_path / "call.wav", tmp_path / "mono.wav"
    reference = tts.synthesise_call(turns, stereo)
    tts.mix_to_mono(stereo, mono)
    audio = parse_wav(mono.read_bytes())
    assert len(audio.channels) == 1
    transcript = transcriber.transcribe(audio, ("agent", "customer"))
    right, judged = front_end_scores(reference, transcript, mono=True)["attribution"]
    assert judged > 40 and right / judged >= 0.9, transcript
    assert transcript.turns[0].speaker == "agent" and {t.speaker for t in transcript.turns} >= {"agent", "customer"}
