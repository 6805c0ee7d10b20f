"""The audio contract: G.711 decoding bit-identical to sox, WAV validation with precise one-line errors; and whole
recordings in any format a site has (aftercall.core.decode, FFmpeg), made for real by sox and FFmpeg's encoders."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from aftercall.core.audio import Encoding, parse_raw, parse_wav
from aftercall.core.decode import decode_audio, recording_wav
from aftercall.core.errors import AudioFormatError
from aftercall.summarise.contract import REQUIRED_KEYS
from audio_files import encode, envelope_similarity, pcm, similarity, sox, speech_wav, stereo_speech_wav
from conftest import run_cli, wav_header
from heard import heard

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
    # The CLI reads any format (FFmpeg past the contract), so the fake MP3 is refused as a corrupt MP3.
    expected = {"mp3.wav": "corrupt: the file starts like MP3 but FFmpeg cannot read it"}
    for name in ("mp3.wav", "truncated.wav", "3ch.wav", "empty.wav"):
        path = tmp_path / name
        path.write_bytes(BAD_INPUTS[name][0])
        result = run_cli("summarise", path)
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected.get(name, BAD_INPUTS[name][1]) in lines[0], result.stderr


def test_raw_g711_needs_whole_frames(tmp_path: Path):
    with pytest.raises(AudioFormatError, match="not a whole number of 2-byte frames"):
        parse_raw(b"\x00\x01\x02", Encoding.MULAW, 8000, 2)
    path = tmp_path / "call.ul"
    path.write_bytes(b"\xff" * 3)
    result = run_cli("summarise", path, "--raw", "mulaw", "--channels", "2")
    assert result.returncode == 2 and "frames" in result.stderr


# -- whole recordings in any format: aftercall.core.decode -------------------------------------------------------------
@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    """Mono PCM16 16 kHz speech (festival; a warble without it)."""
    return speech_wav(tmp_path_factory.mktemp("speech") / "mono.wav")


@pytest.fixture(scope="module")
def stereo(tmp_path_factory) -> Path:
    """Stereo PCM16 16 kHz: the speech on the left, the speech backwards on the right."""
    return stereo_speech_wav(tmp_path_factory.mktemp("speech") / "stereo.wav")


def _sox_file(source: Path, suffix: str, *args: str) -> bytes:
    out = source.with_name(f"{source.stem}-{'_'.join(args).replace('-', '')}.{suffix}")
    sox(source, *args, out)
    return out.read_bytes()


def _fmt_tag(wav: bytes) -> int:
    return struct.unpack_from("<H", wav, wav.index(b"fmt ") + 8)[0]


# name: (source, how it is made, the rate it decodes to, the least waveform similarity to the source)
# Lossless codecs must give the source back (> 0.99); lossy ones keep the waveform less exactly.
FORMATS = {
    "pcm_u8 8 kHz": ("speech", ("wav", "-r", "8000", "-e", "unsigned-integer", "-b", "8"), 8000, 0.99),
    "pcm_s24 48 kHz (extensible)": ("speech", ("wav", "-r", "48000", "-b", "24"), 16000, 0.99),
    "pcm_s32 16 kHz stereo": ("stereo", ("wav", "-b", "32"), 16000, 0.99),
    "float32 44.1 kHz stereo": ("stereo", ("wav", "-r", "44100", "-e", "floating-point", "-b", "32"), 16000, 0.99),
    "float64 11025 Hz": ("speech", ("wav", "-r", "11025", "-e", "floating-point", "-b", "64"), 16000, 0.99),
    "pcm_s16 6 kHz": ("speech", ("wav", "-r", "6000"), 8000, 0.99),
    "mu-law 11025 Hz": ("speech", ("wav", "-r", "11025", "-e", "mu-law"), 16000, 0.99),
    "gsm 6.10": ("speech", ("wav", "-r", "8000", "-e", "gsm-full-rate"), 8000, 0.9),
    "ima adpcm 16 kHz": ("speech", ("wav", "-e", "ima-adpcm"), 16000, 0.95),
    "ms adpcm 8 kHz stereo": ("stereo", ("wav", "-r", "8000", "-e", "ms-adpcm"), 8000, 0.95),
    "flac 44.1 kHz stereo": ("stereo", ("flac", "-r", "44100"), 16000, 0.99),
    "ogg vorbis 22050 Hz": ("speech", ("ogg", "-r", "22050"), 16000, 0.9),
    "mp3 16 kHz": ("speech", ("av", "mp3", "libmp3lame", 16000, None), 16000, 0.9),
    "mp3 44.1 kHz stereo": ("stereo", ("av", "mp3", "libmp3lame", 44100, None), 16000, 0.9),
    "mp3 8 kHz 16 kbit/s": ("speech", ("av", "mp3", "libmp3lame", 8000, 16000), 8000, 0.9),
    "opus in ogg": ("speech", ("av", "ogg", "libopus", 48000, None), 16000, 0.9),
    "opus in ogg, stereo": ("stereo", ("av", "ogg", "libopus", 48000, 64000), 16000, 0.9),
    "aac in m4a, stereo": ("stereo", ("av", "ipod", "aac", 44100, None), 16000, 0.9),
}


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_a_site_has_decodes_to_the_source(name: str, request):
    source_name, how, rate, least = FORMATS[name]
    source: Path = request.getfixturevalue(source_name)
    if how[0] == "av":
        data = encode(source, *how[1:])
    else:
        data = _sox_file(source, *how)
    audio = decode_audio(data)
    reference = pcm(source, rate)  # the source at the decoded rate, resampled by sox
    assert (audio.sample_rate, len(audio.channels)) == (rate, len(reference))
    assert audio.duration == pytest.approx(len(reference[0]) / rate, abs=0.06)  # codec frames pad the end
    assert audio.source_encoding is (Encoding.MULAW if "mu-law" in name else Encoding.LINEAR_PCM)
    for decoded, expected in zip(audio.channels, reference):
        assert decoded.dtype == np.int16
        assert similarity(decoded, expected, rate // 20) > least, name
        assert envelope_similarity(decoded, expected, rate) > 0.95, name
    if len(reference) == 2:  # the channels are agent and customer: never mixed
        assert similarity(audio.channels[0], reference[1], rate // 20) < 0.3
    if "extensible" in name:
        assert _fmt_tag(data) == 0xFFFE


def test_a_contract_wav_keeps_the_exact_hand_written_decoder(stereo: Path):
    for args in (("-r", "8000", "-e", "mu-law"), ("-r", "16000", "-b", "16"), ("-r", "8000", "-e", "a-law")):
        data = _sox_file(stereo, "wav", *args)
        fast, exact = decode_audio(data), parse_wav(data)
        assert fast.source_encoding is exact.source_encoding
        assert all(np.array_equal(a, b) for a, b in zip(fast.channels, exact.channels))
        assert recording_wav(data)[0] is data  # the spool keeps it as sent (G.711 stays 8-bit)


def test_a_compressed_recording_is_stored_as_pcm16_wav(speech: Path):
    mp3 = encode(speech, "mp3", "libmp3lame", 44100)
    stored, seconds, channels = recording_wav(mp3)
    decoded, kept = decode_audio(mp3), parse_wav(stored)
    assert (kept.sample_rate, channels, kept.source_encoding) == (16000, 1, Encoding.LINEAR_PCM)
    assert seconds == pytest.approx(kept.duration) and np.array_equal(kept.channels[0], decoded.channels[0])


def test_8_bit_mono_8_khz_wav_decodes(speech: Path):
    data = _sox_file(speech, "wav", "-r", "8000", "-c", "1", "-e", "unsigned-integer", "-b", "8")
    assert _fmt_tag(data) == 1 and data[34] == 8  # PCM, 8 bits per sample
    audio = decode_audio(data)
    assert (audio.sample_rate, len(audio.channels)) == (8000, 1)
    assert similarity(audio.channels[0], pcm(speech, 8000)[0], 400) > 0.99


@pytest.mark.parametrize("suffix, channels, bits", [("wav", 3, 24), ("wav", 6, 16), ("flac", 6, 16)])
def test_more_than_two_channels_are_refused_by_count(speech: Path, suffix: str, channels: int, bits: int):
    data = _sox_file(speech, suffix, "-c", str(channels), "-b", str(bits))
    with pytest.raises(AudioFormatError) as error:
        decode_audio(data)
    assert str(error.value) == f"unsupported: {channels} channels (aftercall accepts 1 or 2)"


def _png() -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


NOISE = bytes(np.random.default_rng(7).integers(0, 256, 20000, dtype=np.uint8))
NOT_AUDIO = {
    "empty": (b"", "empty file"),
    "random bytes": (b"\x00" + NOISE, "unsupported: not an audio format aftercall can read"),
    "an image": (_png(), "unsupported: no audio stream in this file (container: png_pipe)"),
    "MP3 magic, then noise": (b"ID3\x04\x00\x00\x00\x00\x00\x00" + NOISE,
                              "corrupt: the file starts like MP3 but FFmpeg cannot read it"),
    "Ogg magic, then noise": (b"OggS" + NOISE, "corrupt: the file starts like Ogg but FFmpeg cannot read it"),
    "FLAC magic, then noise": (b"fLaC" + NOISE, "corrupt: the file starts like FLAC but FFmpeg cannot read it"),
    "a 24-bit WAV cut short": (wav_header(1, 1, 44100, 24, 30000) + bytes(300),
                               "truncated: the data chunk declares 30000 bytes but only 300 follow"),
    "a float WAV without samples": (wav_header(3, 1, 44100, 32, 0), "empty: the data chunk holds no samples"),
    "a WAV in a codec FFmpeg lacks": (wav_header(0x1234, 1, 8000, 16, 200) + bytes(200),
                                      "unsupported: FFmpeg has no decoder for this file's audio codec (container: "
                                      "wav)"),
    "a WAV of ADPCM noise": (wav_header(0x11, 1, 8000, 4, 4000) + NOISE[:4000],
                             "corrupt: no audio could be decoded from the adpcm_ima_wav stream (container: wav): "),
    # Found by tests/test_fuzz.py: one flipped bit made the rate 805 MHz, and FFmpeg's resampler took 9 s to set up.
    "a WAV at 805 MHz": (wav_header(1, 2, 0x30001F40, 16, 4000) + bytes(4000),
                         "unsupported: sample rate 805314368 Hz in the pcm_s16le stream (container: wav) (aftercall "
                         "reads 1000 to 384000 Hz)"),
    "a WAV at 1 Hz": (wav_header(1, 1, 1, 16, 4000) + bytes(4000), "unsupported: sample rate 1 Hz"),
}


@pytest.mark.parametrize("name", NOT_AUDIO)
def test_what_is_not_a_recording_is_refused_in_one_sentence(name: str):
    data, reason = NOT_AUDIO[name]
    with pytest.raises(AudioFormatError) as error:
        decode_audio(data)
    assert str(error.value).startswith(reason) and "\n" not in str(error.value)


def test_a_sample_rate_no_recorder_writes_is_refused_before_the_resampler_is_built():
    started = time.monotonic()
    for rate in (805314368, 1000003, 999, 384001):
        with pytest.raises(AudioFormatError, match=f"^unsupported: sample rate {rate} Hz"):
            recording_wav(wav_header(1, 1, rate, 16, 8000) + bytes(8000))
    assert time.monotonic() - started < 1
    for rate in (1000, 384000):  # the ends of the range still decode
        assert recording_wav(wav_header(1, 1, rate, 16, 8000) + bytes(8000))[1] > 0


def test_a_real_flac_header_over_noise_is_corrupt(speech: Path):
    flac = _sox_file(speech, "flac")
    first_frame = flac.index(b"\xff\xf8", 42)  # after fLaC and the metadata blocks: a frame's sync code
    with pytest.raises(AudioFormatError, match=r"^corrupt: no audio could be decoded from the flac stream "
                                               r"\(container: flac\)"):
        decode_audio(flac[:first_frame] + NOISE)


@pytest.mark.parametrize("kind", ["flac", "mp3", "m4a"])
def test_a_recording_cut_short_is_refused_as_truncated(speech: Path, kind: str):
    whole = {"flac": lambda: _sox_file(speech, "flac"), "mp3": lambda: encode(speech, "mp3", "libmp3lame", 16000),
             "m4a": lambda: encode(speech, "ipod", "aac", 16000)}[kind]()
    seconds = decode_audio(whole).duration
    with pytest.raises(AudioFormatError) as error:
        decode_audio(whole[: len(whole) // 2])
    message = str(error.value)
    if kind == "m4a":  # the index FFmpeg needs comes last: cut off with the end
        assert message.startswith("corrupt: the file starts like MP4 but FFmpeg cannot read it"), message
    else:
        assert message.startswith(f"truncated: the {kind} stream (container: {kind}) declares {seconds:.1f} s but "
                                  "the file ends after "), message


def test_a_truncated_ogg_declares_nothing_more_and_decodes_what_is_there(speech: Path):
    whole = encode(speech, "ogg", "libopus", 48000)
    half = decode_audio(whole[: len(whole) // 2])  # Ogg has no length header: the last page is the end
    assert 0.3 < half.duration / decode_audio(whole).duration < 0.7


def test_a_glitch_is_skipped_but_a_damaged_file_refused(speech: Path, tmp_path: Path):
    long = tmp_path / "long.wav"
    sox(speech, speech, speech, long)  # ~25 s: a few hundred MP3 frames
    mp3 = encode(long, "mp3", "libmp3lame", 16000)
    middle = len(mp3) // 2
    glitch = decode_audio(mp3[:middle] + NOISE[:120] + mp3[middle + 120 :])
    assert glitch.duration == pytest.approx(decode_audio(mp3).duration, abs=0.2)
    with pytest.raises(AudioFormatError, match=r"^corrupt: \d+ of \d+ mp3 packets could not be decoded"):
        decode_audio(mp3[:middle] + NOISE[:6000] + mp3[middle + 6000 :])


def test_a_playlist_cannot_make_ffmpeg_read_other_files(tmp_path: Path, monkeypatch, speech: Path):
    (tmp_path / "secret.wav").write_bytes(_sox_file(speech, "wav", "-b", "24"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AudioFormatError, match="^unsupported: not an audio format"):
        decode_audio(b"ffconcat version 1.0\nfile secret.wav\n")


def test_over_the_duration_limit_is_refused_without_decoding_it_all(speech: Path):
    flac = _sox_file(speech, "flac")  # declares its length: refused before decoding
    with pytest.raises(AudioFormatError, match=r"^too long: \d+ s exceeds audio.max_duration_s = 2$"):
        decode_audio(flac, max_duration_s=2)
    opus = encode(speech, "ogg", "libopus", 48000)  # decoding stops at the limit
    with pytest.raises(AudioFormatError, match=r"^too long: more than audio.max_duration_s = 2 s of audio$"):
        decode_audio(opus, max_duration_s=2)
    assert decode_audio(opus, max_duration_s=60).duration > 2


@pytest.fixture(scope="module")
def mono_call(tts, tmp_path_factory) -> Path:
    """A two-voice call as a mono recorder exports it: the synthesised stereo call summed to one 16-bit channel."""
    folder = tmp_path_factory.mktemp("mono-call")
    tts.synthesise_call([
        {"speaker": "agent", "text": "Good morning, you're through to Eastfield Energy billing, my name's Ruth. "
                                     "How can I help?"},
        {"speaker": "customer", "text": "Hi, I'm calling because my bill this month is much higher than usual."},
        {"speaker": "agent", "text": "I'm sorry to hear that. Can I take the first line of your address, please?"},
        {"speaker": "customer", "text": "Nine Oak Street."},
        {"speaker": "agent", "text": "Thank you. I've found the estimated reading and sent you a corrected bill."},
    ], folder / "stereo.wav")
    tts.mix_to_mono(folder / "stereo.wav", folder / "mono.wav")
    return folder / "mono.wav"


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["8-bit wav", "mp3"])
def test_cli_summarises_a_mono_recording_with_both_speakers(mono_call: Path, tmp_path: Path, kind: str):
    if kind == "mp3":
        path = tmp_path / "call.mp3"
        path.write_bytes(encode(mono_call, "mp3", "libmp3lame", 22050))
    else:
        path = tmp_path / "call.wav"
        sox(mono_call, "-r", "8000", "-e", "unsigned-integer", "-b", "8", path)
    result = run_cli("summarise", path, "--format", "json", "--quiet")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(REQUIRED_KEYS) <= set(summary)
    by_speaker = {speaker: " ".join(t["text"] for t in summary["transcript"] if t["speaker"] == speaker)
                  for speaker in ("agent", "customer")}
    assert heard("how can i help", by_speaker["agent"]) and heard("higher than usual", by_speaker["customer"]), \
        summary["transcript"]
