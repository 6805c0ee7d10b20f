"""End to end through the real console script and the real Whisper model, plus config validation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aftercall.config import load_config
from aftercall.core.audio import load_audio
from aftercall.core.errors import ConfigError, ModelIntegrityError
from aftercall.evaluation.metrics import digit_leak
from conftest import DEMO_JSON, DEMO_WAV, ROOT, run_cli
from heard import assert_heard, wer


@pytest.mark.e2e
def test_demo_call_per_channel_recognition(transcriber):
    transcript = transcriber.transcribe(load_audio(DEMO_WAV), ("agent", "customer"))
    reference = json.loads(DEMO_JSON.read_text())["turns"]
    for speaker in ("agent", "customer"):
        heard_text = " ".join(t.text for t in transcript.turns if t.speaker == speaker)
        said = " ".join(t["text"] for t in reference if t["speaker"] == speaker)
        assert wer(heard_text, said) < 0.3, (speaker, heard_text)
    agent = " ".join(t.text for t in transcript.turns if t.speaker == "agent")
    assert_heard(agent, "how can i help")
    starts = [t.start for t in transcript.turns]
    assert starts == sorted(starts)
    assert transcript.turns[0].speaker == "agent" and transcript.turns[1].speaker == "customer"
    assert all(t.words for t in transcript.turns)
    # Whisper's pieces make whole words: "FR-7721" stays one word, as said, not "FR -7721".
    assert_heard(agent, "fr-7721")
    assert all(" " not in w.text for t in transcript.turns for w in t.words)


@pytest.mark.e2e
def test_swapped_roles_swap_the_speakers(transcriber):
    transcript = transcriber.transcribe(load_audio(DEMO_WAV), ("customer", "agent"))
    assert transcript.turns[0].speaker == "customer"


@pytest.mark.e2e
def test_summarise_demo_wav_json_contract_and_no_leaks():
    result = run_cli("summarise", DEMO_WAV, "--format", "json", "--call-id", "demo-1")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["call_id"] == "demo-1"
    assert summary["disposition"]["code"] == "CARD_LOST_STOLEN"
    assert not digit_leak("4532015112830366", result.stdout)
    assert "1986" not in result.stdout and "Harper" not in result.stdout
    assert "transcribing: 100%" in result.stderr  # progress goes to stderr, never into the JSON
    assert set(summary["timings"]) >= {"asr_s", "redaction_s", "summarisation_s"}


@pytest.mark.e2e
def test_raw_g711_input_matches_the_wav(tmp_path: Path):
    raw = tmp_path / "demo.ul"
    data = DEMO_WAV.read_bytes()
    raw.write_bytes(data[data.index(b"data") + 8 :])
    result = run_cli("summarise", raw, "--raw", "mulaw", "--channels", "2", "--format", "text", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "CARD_LOST_STOLEN" in result.stdout and result.stderr == ""


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("text2wave") is None, reason="festival is installed by `make test`")
def test_newly_synthesised_call_with_spoken_card_number(tmp_path: Path):
    dialogue = tmp_path / "call.json"
    dialogue.write_text(json.dumps({"turns": [
        {"speaker": "agent", "text": "Hello, card services. Can I take the card number please?"},
        {"speaker": "customer", "text": "Yes. Five five five five, five five five five, five five five five, four four four four."},
        {"speaker": "agent", "text": "Thank you. I have cancelled that card and a new one will arrive within five days."},
        {"speaker": "customer", "text": "Great, thank you."},
    ]}))
    wav = tmp_path / "call.wav"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_call_audio.py"), str(dialogue), "--out", str(wav),
                    "--encoding", "a-law"], check=True, capture_output=True)
    result = run_cli("summarise", wav, "--quiet")
    assert result.returncode == 0, result.stderr
    assert not digit_leak("5555555555554444", result.stdout), result.stdout


def test_transcript_input_needs_no_asr_model(tmp_path: Path):
    result = run_cli("summarise", DEMO_JSON, "--format", "text", env={"AFTERCALL_ASR__MODEL_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "Disposition: CARD_LOST_STOLEN" in result.stdout and "Follow-ups:" in result.stdout


def test_tampered_model_is_refused(tmp_path: Path):
    from aftercall.transcribe.embedded import EmbeddedTranscriber, default_model_dir

    copy = tmp_path / "model"
    shutil.copytree(default_model_dir(), copy)
    with (copy / "config.json").open("a") as handle:
        handle.write(" ")
    with pytest.raises(ModelIntegrityError, match="config.json has sha256"):
        EmbeddedTranscriber(copy)._load()
    result = run_cli("summarise", DEMO_WAV, env={"AFTERCALL_ASR__MODEL_DIR": str(copy)})
    assert result.returncode == 1 and "refusing to load" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--roles", "agent,agent"], "--roles: must name agent and customer"),
    (["--format", "xml"], "invalid choice"),
    (["--taxonomy", "/nonexistent.toml"], "cannot read"),
    (["--queue", "pharmacy"], "--queue pharmacy: no template for it in summarise.templates (known: none)"),
])
def test_cli_usage_errors_exit_2(args, message):
    result = run_cli("summarise", DEMO_JSON, *args)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("toml, environ, message", [
    ("[asr]\nbeam_size = 0\n", {}, "config asr.beam_size: must be between 1 and 10"),
    ("[asr]\nbeem_size = 3\n", {}, "config asr.beem_size: unknown key"),
    ("[nope]\nx = 1\n", {}, "config nope: unknown section"),
    ("[asr\n", {}, "not valid TOML"),
    ("", {"AFTERCALL_ASR__VAD": "maybe"}, "config asr.vad: must be true or false"),
    ("", {"AFTERCALL_LOGGING__LEVEL": "LOUD"}, "config logging.level: must be one of"),
    ("[audio]\nroles = ['agent']\n", {}, "config audio.roles"),
    ("[asr]\nriva_tls_cert_file = 'c.pem'\n", {}, "config asr.riva_tls_cert_file: mutual TLS needs"),
    ("[triton]\ntls_cert_file = 'c.pem'\ntls_key_file = 'k.pem'\n", {},
     "config triton.tls_cert_file: a client certificate needs TLS: set triton.tls_ca_file or triton.tls = true"),
    ("[asr]\nbackend = 'whisperx'\n", {}, "config asr.backend: must be one of embedded, riva"),
    ("[triton]\nurl = 'nowhere'\n", {}, "config triton.url: must be HOST:PORT"),
    ("[asr]\nvad_threshold = 1.5\n", {}, "config asr.vad_threshold: must be between 0.05 and 0.95"),
    ("", {"AFTERCALL_ASR__VAD_MIN_SILENCE_MS": "lots"}, "config asr.vad_min_silence_ms: must be an integer"),
    ("[asr]\nmono = 'guess'\n", {}, "config asr.mono: must be one of diarise, agent, customer"),
    ("[asr]\nmono_speaker = 'agent'\n", {}, "config asr.mono_speaker: renamed to asr.mono"),
    ("[redact]\noff = ['CARD']\n", {}, "config redact.off: CARD cannot be turned off"),
    ("[redact]\noff = ['PASSPORT']\n", {}, "config redact.off: no type 'PASSPORT'"),
    ("[redact.cues]\nNAME = ['next of kin']\n", {}, "config redact.cues.NAME: NAME is found without cue words"),
    ("[redact.cues]\nNHS_NUMBER = 5\n", {}, "config redact.cues.NHS_NUMBER: must be a list of strings"),
    ("", {"AFTERCALL_REDACT__CUES": "mrn"}, "config redact.cues: must be a table"),
    ("[redact]\nnames = ['']\n", {}, "config redact.names: must be a list of names"),
    ("[redact]\ntagger_threshold = 0\n", {}, "config redact.tagger_threshold: must be between 0.05 and 1.0"),
    ("[summarise.templates.pharmacy]\nomit = ['disposition']\n", {},
     "config summarise.templates.pharmacy.omit: disposition cannot be left out"),
    ("[summarise.templates.pharmacy]\nnarrative = ['dose']\n", {},
     "config summarise.templates.pharmacy.narrative: a section needs a name"),
    ("[summarise.templates.pharmacy]\nmedication = 5\n", {},
     "config summarise.templates.pharmacy.medication: must be a list of strings"),
    ("[summarise.templates.pharmacy]\nmedication = []\n", {},
     "config summarise.templates.pharmacy.medication: name at least one cue word"),
    ("[summarise]\ntemplates = ['pharmacy']\n", {}, "config summarise.templates: must be a table"),
    ("[redact.cues.NHS_NUMBER]\nmrn = ['x']\n", {}, "config redact.cues.NHS_NUMBER: must be a list of words"),
    ("[transcript]\nmax_turns = 0\n", {}, "config transcript.max_turns: must be between 1 and 1000000"),
    ("", {"AFTERCALL_TRANSCRIPT__MAX_MB": "lots"}, "config transcript.max_mb: must be an integer"),
    ("[transcript]\nmax_turn_chars = 99\n", {}, "config transcript.max_turn_chars: must be between 100"),
    ("[transcript]\nmax_lines = 3\n", {}, "config transcript.max_lines: unknown key"),
    ("[ingest]\nmax_metadata_chars = 8\n", {}, "config ingest.max_metadata_chars: must be between 64 and 65536"),
])
def test_config_errors_name_the_key(tmp_path: Path, toml, environ, message):
    path = tmp_path / "aftercall.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(path, environ)


def test_env_overrides_file(tmp_path: Path):
    path = tmp_path / "aftercall.toml"
    path.write_text("[asr]\nbeam_size = 2\n[audio]\nroles = ['customer', 'agent']\n")
    config = load_config(path, {"AFTERCALL_ASR__BEAM_SIZE": "4"})
    assert config.asr.beam_size == 4 and config.audio.roles == ("customer", "agent")
    result = run_cli("summarise", DEMO_JSON, "--config", path, env={"AFTERCALL_ASR__BEAM_SIZE": "0"})
    assert result.returncode == 2 and "asr.beam_size" in result.stderr
