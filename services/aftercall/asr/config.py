"""The [asr_server] section: `aftercall serve asr`, the embedded recogniser behind the Riva API."""

from __future__ import annotations

from dataclasses import dataclass

from aftercall.core.config import Section, parse_address, setting


@dataclass(frozen=True)
class AsrServerConfig(Section):
    """`aftercall serve asr`: the embedded recogniser behind the Riva API."""

    # The Riva API's gRPC address when `aftercall serve asr` runs alone (beside other services: server.listen).
    listen: str = "127.0.0.1:50052"
    # Its own metrics port, so it runs beside `aftercall serve` on one host.
    metrics_listen: str = "127.0.0.1:9465"
    # A file holding the API key clients must send (metadata `api-key`, or `authorization: Bearer KEY`); empty: none.
    api_key_file: str = ""
    # Recognitions at once (each one channel, one thread).
    workers: int = setting(2, between=(1, 64))
    # Streaming: interim results after this much new audio; finals once a window holds this much.
    interim_interval_s: float = setting(2.0, between=(0.5, 60.0))
    # Streaming: a final result once the window holds this much audio (Whisper hears at most 30 s at a time).
    max_window_s: float = setting(20.0, between=(5.0, 30.0))
    # The largest request the server reads (a Recognize call's audio), in MB.
    max_request_mb: int = setting(64, between=(1, 2048))

    def validate(self) -> None:
        parse_address(self.listen, "config asr_server.listen")
        parse_address(self.metrics_listen, "config asr_server.metrics_listen")
