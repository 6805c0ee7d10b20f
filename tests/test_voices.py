"""The numpy port of resemblyzer's voice encoder, on its real weights file: integrity, the pickle reader's refusal of
foreign globals, and embeddings that tell two TTS voices apart."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import wave

import numpy as np
import pytest

from aftercall.core.errors import ModelIntegrityError
from aftercall.evaluation.speech import VOICES
from aftercall.transcribe.voices import EMBEDDING_SIZE, VoiceEncoder, default_weights, read_model_state

# resemblyzer 0.1.4 (torch) on buzz(): VoiceEncoder("cpu").embed_utterance(normalize_volume(wav, -30, True)), to 4
# decimals. 16 kHz input, so no resampler stands between the two.
RESEMBLYZER_BUZZ_EMBEDDING = np.array([
    0, 0, .0474, 0, 0, .0105, 0, 0, .0845, .1326, .1441, .0922, .0132, 0, .0582, .0041, .0017, 0, 0, .0044,
    .1044, 0, 0, 0, 0, .0009, 0, 0, 0, 0, 0, .0661, .0127, 0, 0, 0, .1556, 0, .0576, 0, 0, 0, .1469, .0163, 0,
    0, .0803, .0460, 0, .0712, 0, .0919, 0, 0, 0, 0, 0, 0, .1008, .0150, 0, 0, .0794, .0341, .0227, 0, .0007,
    .0344, 0, 0, 0, .0530, 0, .0168, .0450, 0, 0, .0154, .0780, .0764, 0, 0, 0, .0792, 0, 0, 0, .1310, 0, .1115,
    0, 0, 0, 0, 0, 0, .0244, 0, 0, 0, .1019, 0, 0, 0, .0339, .0767, .0927, 0, 0, .0094, 0, .0563, 0, .1589,
    .0354, 0, 0, 0, .0291, .1169, .0877, .1186, .0512, 0, .0979, .1187, .1384, .0922, 0, 0, .1108, 0, .0459, 0,
    .0006, .0784, .1015, 0, .1089, 0, 0, 0, .0822, .0077, .0841, .0325, .1081, 0, 0, .0176, .1184, .0091, 0,
    .0409, .1224, .0623, 0, 0, .1263, .1516, 0, 0, .0749, .1551, .0412, .0796, .0487, .0085, .1937, .0351, 0, 0,
    .0406, .0119, 0, .1309, .0376, .0748, .0639, .0152, .1167, 0, .1572, 0, .0357, 0, 0, .1232, 0, .0324, 0,
    .0002, 0, .0115, 0, .1088, .1027, 0, .0138, .0839, .0208, .0334, .1256, 0, 0, 0, .0072, .0706, 0, .0041, 0,
    0, .0844, .1893, 0, .0400, 0, 0, .1954, 0, .0037, 0, 0, 0, .0120, .0213, 0, 0, 0, 0, .0076, 0, 0, 0, 0,
    .1532, .0141, .0036, .0168, .0234, .0267, .0081, .0122, .1273, 0, 0, .3546, 0, .0176, 0, 0, .1097, .0670, 0,
    .0773, 0
], dtype=np.float32)


def buzz(seconds: float = 3.0, rate: int = 16000) -> np.ndarray:
    """A voiced, vibrato, syllable-paced buzz made of sines alone, so that it is the same sample for sample anywhere."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 31))
    return (0.1 * voice * np.sin(2 * np.pi * 2 * t) ** 2).astype(np.float32)


@pytest.fixture(scope="module")
def encoder() -> VoiceEncoder:
    return VoiceEncoder()


@pytest.fixture(scope="module")
def telephone_clips(tmp_path_factory) -> dict[str, list[np.ndarray]]:
    """Two sentences per festival voice, as a telephone line carries them (8 kHz, 300-3400 Hz)."""
    if shutil.which("text2wave") is None or shutil.which("sox") is None:
        pytest.skip("needs festival's text2wave and sox (Debian: festival festvox-us-slt-hts festvox-kallpc16k sox)")
    workdir = tmp_path_factory.mktemp("voices")
    sentences = ("Thank you for calling, how can I help you today?",
                 "I would like to change the address on my account, please.")
    clips: dict[str, list[np.ndarray]] = {}
    for speaker, voice in VOICES.items():
        for index, sentence in enumerate(sentences):
            raw, out = workdir / f"{speaker}{index}.tts.wav", workdir / f"{speaker}{index}.wav"
            subprocess.run(["text2wave", "-eval", f"({voice})", "-o", str(raw)], input=sentence.encode(), check=True,
                           capture_output=True)
            subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(out), "highpass", "300",
                            "lowpass", "3400"], check=True, capture_output=True, env={**os.environ, "SOX_OPTS": "-R"})
            with wave.open(str(out)) as handle:
                clips.setdefault(speaker, []).append(np.frombuffer(handle.readframes(handle.getnframes()), np.int16))
    return clips


def test_the_weights_are_read_as_torch_wrote_them():
    state = read_model_state(default_weights())
    assert state["lstm.weight_ih_l0"].shape == (1024, 40)
    assert state["lstm.weight_hh_l2"].shape == (1024, 256)
    assert state["linear.weight"].shape == (256, 256)
    assert all(array.dtype == np.float32 for array in state.values())


def test_an_altered_weights_file_is_refused(tmp_path):
    altered = tmp_path / "pretrained.pt"
    shutil.copyfile(default_weights(), altered)
    with altered.open("r+b") as handle:
        handle.seek(1_000_000)
        byte = handle.read(1)
        handle.seek(1_000_000)
        handle.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        VoiceEncoder(altered).embed(buzz(), 16000)


class _Calls:
    """Pickles as a call of `function(*args)`, as a hostile checkpoint would."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize("function", [os.system, eval])
def test_the_reader_refuses_a_pickle_naming_any_other_global(tmp_path, function):
    marker = tmp_path / "ran"
    command = f"touch {marker}" if function is os.system else f"open({str(marker)!r}, 'w')"
    # A legacy torch file's header, then a checkpoint that calls a global of its choosing (protocol 2, as torch's).
    parts = [0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True},
             {"model_state": {"lstm.weight_ih_l0": _Calls(function, command)}}]
    path = tmp_path / "hostile.pt"
    path.write_bytes(b"".join(pickle.dumps(part, protocol=2) for part in parts))
    with pytest.raises(ModelIntegrityError, match=rf"names the global \S*\.{function.__name__}, .*refusing"):
        read_model_state(path)
    assert not marker.exists()


def test_the_embedding_matches_resemblyzer(encoder):
    embedding = encoder.embed(buzz(), 16000)
    reference = RESEMBLYZER_BUZZ_EMBEDDING / np.linalg.norm(RESEMBLYZER_BUZZ_EMBEDDING)
    assert float(embedding @ reference) > 0.9999


def test_embeddings_are_unit_length_and_batching_changes_nothing(encoder, telephone_clips):
    clips = [(samples, 8000) for samples in telephone_clips["agent"]] + [(buzz(), 16000)]
    batched = encoder.embed_many(clips)
    assert batched.shape == (3, EMBEDDING_SIZE) and batched.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1, atol=1e-5)
    for (samples, rate), together in zip(clips, batched, strict=True):
        np.testing.assert_allclose(encoder.embed(samples, rate), together, atol=1e-5)


def test_the_same_voice_is_closer_than_another_voice(encoder, telephone_clips):
    agent_a, agent_b = encoder.embed_many([(samples, 8000) for samples in telephone_clips["agent"]])
    customer_a, customer_b = encoder.embed_many([(samples, 8000) for samples in telephone_clips["customer"]])
    same = min(agent_a @ agent_b, customer_a @ customer_b)
    different = max(agent_a @ customer_a, agent_a @ customer_b, agent_b @ customer_a, agent_b @ customer_b)
    assert same > 0.85
    assert different < same - 0.2
