"""Silero VAD at the channel's own rate: the segmentation rules, the pinned model, and the short answers the bundled
VAD used to drop, heard through the real recogniser on a synthesised call."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from aftercall.core.audio import parse_wav
from aftercall.core.errors import ModelIntegrityError
from aftercall.transcribe.vad import SpeechDetector, VadSettings, default_model_dir, segments_from

RATE, WINDOW = 8000, 256  # 32 ms windows at 8 kHz
SETTINGS = VadSettings(threshold=0.5, min_silence_ms=2000, speech_pad_ms=400, min_speech_ms=250)
PAD = 400 * 8  # samples


def _windows(*runs: tuple[float, float]) -> np.ndarray:
    """(probability, seconds) runs -> one probability per 32 ms window."""
    return np.concatenate([np.full(round(seconds * RATE / WINDOW), p, dtype=np.float32) for p, seconds in runs])


def _segments(probabilities: np.ndarray, settings: VadSettings = SETTINGS) -> list[tuple[int, int]]:
    return segments_from(probabilities, WINDOW, len(probabilities) * WINDOW, RATE, settings)


def test_one_utterance_is_padded_on_both_sides():
    probabilities = _windows((0.0, 3.2), (0.9, 0.64), (0.0, 6.4))
    (start, end), = _segments(probabilities)
    assert (start, end) == (100 * WINDOW - PAD, 120 * WINDOW + PAD)


def test_a_dip_above_the_low_threshold_or_a_short_pause_does_not_split():
    wavering = _windows((0.0, 1.6), (0.9, 0.64), (0.4, 3.2), (0.9, 0.64), (0.0, 6.4))  # 0.4 > 0.5 - 0.15
    paused = _windows((0.0, 1.6), (0.9, 0.64), (0.1, 1.6), (0.9, 0.64), (0.0, 6.4))  # 1.6 s < min_silence
    assert len(_segments(wavering)) == 1 and len(_segments(paused)) == 1


def test_a_long_pause_splits_and_close_segments_share_the_gap():
    probabilities = _windows((0.0, 1.6), (0.9, 0.64), (0.1, 2.56), (0.9, 0.64), (0.0, 6.4))
    first, second = _segments(probabilities)
    assert first[0] == 50 * WINDOW - PAD and second[1] == 170 * WINDOW + PAD
    gap_s = (second[0] - first[1]) / RATE
    assert 2.56 - 0.8 == pytest.approx(gap_s, abs=0.01)  # 2.56 s of silence less 400 ms of padding each side
    tight = segments_from(probabilities, WINDOW, len(probabilities) * WINDOW, RATE,
                          VadSettings(min_silence_ms=2000, speech_pad_ms=1500))
    assert tight[0][1] == tight[1][0]  # the padding would overlap: they meet half-way


def test_clicks_shorter_than_min_speech_are_dropped():
    click = _windows((0.0, 1.6), (0.9, 0.128), (0.0, 6.4))
    assert _segments(click) == []
    assert len(_segments(click, VadSettings(min_speech_ms=0))) == 1


@pytest.fixture(scope="module")
def short_answer(tts, tmp_path_factory) -> np.ndarray:
    """'Yes.' in the customer's telephone voice, 8 kHz float, between 2 s of silence either side."""
    path = tmp_path_factory.mktemp("vad") / "yes.wav"
    tts.synthesise_call([{"speaker": "customer", "text": "Yes."}], path)
    spoken = parse_wav(path.read_bytes()).channel_float(1)
    silence = np.zeros(2 * RATE, dtype=np.float32)
    return np.concatenate([silence, spoken, silence])


def test_a_one_word_answer_at_8k_is_speech_and_silence_is_not(short_answer):
    detector = SpeechDetector(SETTINGS)
    (start, end), = detector.speech(short_answer, RATE)
    assert start <= 2 * RATE <= end and end - start < len(short_answer)
    assert detector.speech(np.zeros(5 * RATE, dtype=np.float32), RATE) == []
    hiss = np.random.default_rng(7).normal(0, 0.002, 5 * RATE).astype(np.float32)
    assert detector.speech(hiss, RATE) == []


def test_the_same_speech_is_found_at_16k(short_answer):
    from aftercall.core.audio import upsample_2x

    at_8k = SpeechDetector(SETTINGS).speech(short_answer, RATE)
    at_16k = SpeechDetector(SETTINGS).speech(upsample_2x(short_answer), 16000)
    assert len(at_16k) == 1 and abs(at_16k[0][0] / 2 - at_8k[0][0]) < 0.1 * RATE


def test_an_altered_model_file_is_refused(tmp_path: Path, short_answer):
    copy = tmp_path / "data"
    shutil.copytree(default_model_dir(), copy)
    model = copy / "silero_vad.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="silero_vad.onnx has sha256"):
        SpeechDetector(SETTINGS, copy).speech(short_answer, RATE)


@pytest.mark.e2e
def test_short_customer_answers_are_heard_and_silence_stays_silent(transcriber, tts, tmp_path: Path):
    """The answers the bundled VAD dropped (a yes, a house number, a postcode), through the real recogniser."""
    from aftercall.evaluation.frontend import front_end_scores

    turns = [
        {"speaker": "agent", "text": "Thanks for calling the council. Can I take the first line of your address?"},
        {"speaker": "customer", "text": "Twelve Mill Lane."},
        {"speaker": "agent", "text": "And is that in Leeds?"},
        {"speaker": "customer", "text": "Yes."},
        {"speaker": "agent", "text": "Lovely. And the postcode, please?"},
        {"speaker": "customer", "text": "L S six, four B Q."},
        {"speaker": "agent", "text": "Thank you, I have found your account and booked the collection for Friday."},
    ]
    path = tmp_path / "call.wav"
    reference = tts.synthesise_call(turns, path)
    transcript = transcriber.transcribe(parse_wav(path.read_bytes()), ("agent", "customer"))
    scores = front_end_scores(reference, transcript, mono=False)
    assert scores["dropped_customer"] == (0, 3) and scores["dropped_agent"] == (0, 4), transcript
    assert scores["hallucinated"] == 0, transcript


class _Piece:
    def __init__(self, word: str, start: float, end: float):
        self.word, self.start, self.end, self.probability = word, start, end, 0.9


class _Segment:
    def __init__(self, *words: _Piece):
        self.words = words
        self.end = words[-1].end


class _WhisperSpeaking:
    """faster-whisper's WhisperModel as far as `transcribe` goes: one segment of the given pieces."""

    def __init__(self, *pieces: _Piece):
        self._pieces = pieces

    def transcribe(self, audio, **options):
        return iter([_Segment(*self._pieces)]), None


def test_whisper_pieces_join_into_a_word_only_within_one_speech_span():
    """Speech spans at 2-4 s and 10-13 s of the call are decoded end to end (0-2 s, 2-5 s of the piece). Whisper's
    "FR" + "-7721" is one word; "939" + "-7916676427" across the removed silence are two, each at its own time."""
    from faster_whisper.vad import SpeechTimestampsMap

    from aftercall.transcribe.embedded import EmbeddedTranscriber

    spans = [{"start": 2 * 16000, "end": 4 * 16000}, {"start": 10 * 16000, "end": 13 * 16000}]
    transcriber = EmbeddedTranscriber(vad=VadSettings())
    transcriber._model = _WhisperSpeaking(_Piece(" FR", 0.2, 0.5), _Piece("-7721", 0.5, 1.0),
                                          _Piece(" 939", 1.4, 1.9), _Piece("-7916676427.", 2.1, 3.5))
    (words,) = transcriber._decode(np.zeros(5 * 16000, dtype=np.float32), SpeechTimestampsMap(spans, 16000), None)
    assert [(w.text, w.start, w.end) for w in words] == [
        ("FR-7721", 2.2, 3.0), ("939", 3.4, 3.9), ("-7916676427.", 10.1, 11.5)]
