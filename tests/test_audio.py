"""The audio contract: G.711 decoding bit-identical to sox, WAV validation with precise one-line errors."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from aftercall.core.audio import Encoding, parse_raw, parse_wav
from aftercall.core.errors import AudioFormatError
from conftest import run_cli, wav_header

pytestmark = pytest.mark.skipif(shutil.which("sox") is None, reason="sox is installed by `make test`")


def _sox(*args: str) -> None:
    subprocess.run(["sox", "-R", *args], check=True, capture_output=True)


@pytest.mark.parametrize("law, sox_type", [(Encoding.MULAW, "ul"), (Encoding.ALAW, "al")])
def test_every_g711_code_decodes_exactly_as_sox_does(tmp_path: Path, law: Encoding, sox_type: str):
    codes = tmp_path / "codes.raw"
    codes.write_bytes(bytes(range(256)))
    pcm = tmp_path / "pcm.raw"
    _sox("-t", sox_type, "-r", "8000", "-c", "1", str(codes), "-t", "s16", "-e", "signed-integer", str(pcm))
    expected = np.frombuffer(pcm.read_bytes(), dtype="<i2")
    decoded = parse_raw(bytes(range(256)), law, 8000, 1).channels[0]
    assert np.array_equal(decoded, expected)


@pytest.mark.parametrize("encoding, sox_encoding, bits", [
    (Encoding.MULAW, "mu-law", 8), (Encoding.ALAW, "a-law", 8), (Encoding.LINEAR_PCM, "signed-integer", 16),
])
@pytest.mark.parametrize("rate, channels", [(8000, 2), (16000, 1)])
def test_wav_files_written_by_sox_decode_like_sox(tmp_path: Path, encoding, sox_encoding, bits, rate, channels):
    wav = tmp_path / "tone.wav"
    _sox("-n", "-r", str(rate), "-c", str(channels), "-e", sox_encoding, "-b", str(bits), str(wav),
         "synth", "0.5", "sine", "300-3000", "sine", "440", "gain", "-3")
    reference = tmp_path / "ref.raw"
    _sox(str(wav), "-t", "s16", "-e", "signed-integer", str(reference))
    audio = parse_wav(wav.read_bytes())
    assert (audio.sample_rate, len(audio.channels), audio.source_encoding) == (rate, channels, encoding)
    interleaved = np.stack(audio.channels, axis=1).reshape(-1)
    assert np.array_equal(interleaved, np.frombuffer(reference.read_bytes(), dtype="<i2"))
    assert audio.duration == pytest.approx(0.5)


def test_extensible_wav_is_read_by_its_subformat(tmp_path: Path):
    wav = tmp_path / "ext.wav"
    _sox("-n", "-r", "16000", "-c", "2", "-b", "16", "-e", "signed-integer", "-t", "wavpcm", str(wav),
         "synth", "0.1", "sine", "440")
    data = wav.read_bytes()
    fmt_at = data.index(b"fmt ")
    body = bytearray(data[fmt_at + 8 : fmt_at + 24])
    body[0:2] = struct.pack("<H", 0xFFFE)
    extension = struct.pack("<HHI", 22, 16, 3) + struct.pack("<H", 1) + bytes(14)
    payload = data[data.index(b"data") :]
    rebuilt = b"WAVE" + b"fmt " + struct.pack("<I", 40) + bytes(body) + extension + payload
    audio = parse_wav(b"RIFF" + struct.pack("<I", len(rebuilt)) + rebuilt)
    assert audio.source_encoding is Encoding.LINEAR_PCM and len(audio.channels) == 2


def test_upsampling_keeps_speech_band_and_length():
    from aftercall.core.audio import upsample_2x

    t = np.arange(8000) / 8000
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32) * 0.5
    up = upsample_2x(tone)
    assert len(up) == 16000
    spectrum = np.abs(np.fft.rfft(up[1000:-1000]))
    freqs = np.fft.rfftfreq(len(up[1000:-1000]), 1 / 16000)
    assert abs(freqs[np.argmax(spectrum)] - 1000) < 5
    image = spectrum[(freqs > 6500) & (freqs < 7500)].max()  # the mirror image at 7 kHz must be suppressed
    assert image < spectrum.max() * 0.01


BAD_INPUTS = {
    "empty.wav": (b"", "empty file"),
    "mp3.wav": (b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(200), "not a RIFF/WAVE file (it looks like MP3)"),
    "garbage.wav": (b"hello this is not audio at all" * 10, "not a RIFF/WAVE file"),
    "24bit.wav": (wav_header(1, 1, 8000, 24, 6) + bytes(6), "unsupported: 24-bit linear_pcm"),
    "3ch.wav": (wav_header(1, 3, 8000, 16, 12) + bytes(12), "unsupported: 3 channels"),
    "44k.wav": (wav_header(1, 1, 44100, 16, 4) + bytes(4), "unsupported: sample rate 44100 Hz"),
    "float.wav": (wav_header(3, 1, 8000, 32, 8) + bytes(8), "unsupported: WAV format tag 0x0003"),
    "truncated.wav": (wav_header(7, 2, 8000, 8, 16000) + bytes(100), "truncated: the data chunk declares 16000"),
    "midframe.wav": (wav_header(1, 2, 8000, 16, 6) + bytes(6), "truncated: the data chunk ends mid-frame"),
    "nodata.wav": (wav_header(7, 1, 8000, 8, 0)[:-8], "corrupt: no data chunk"),
    "silent.wav": (wav_header(7, 1, 8000, 8, 0), "empty: the data chunk holds no samples"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_audio_is_rejected_with_one_precise_line(name: str):
    data, reason = BAD_INPUTS[name]
    with pytest.raises(AudioFormatError) as error:
        parse_wav(data)
    assert str(error.value).startswith(reason)


def test_cli_rejects_bad_audio_with_exit_2_and_no_traceback(tmp_path: Path):
    for name in ("mp3.wav", "truncated.wav", "3ch.wav", "empty.wav"):
        path = tmp_path / name
        path.write_bytes(BAD_INPUTS[name][0])
        result = run_cli("summarise", path)
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and BAD_INPUTS[name][1] in lines[0], result.stderr


def test_raw_g711_needs_whole_frames(tmp_path: Path):
    with pytest.raises(AudioFormatError, match="not a whole number of 2-byte frames"):
        parse_raw(b"\x00\x01\x02", Encoding.MULAW, 8000, 2)
    path = tmp_path / "call.ul"
    path.write_bytes(b"\xff" * 3)
    result = run_cli("summarise", path, "--raw", "mulaw", "--channels", "2")
    assert result.returncode == 2 and "frames" in result.stderr
