"""The Riva-compatible recogniser's metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from aftercall.core.metrics import MetricSet


class AsrMetrics(MetricSet):
    """Requests and audio by RPC."""

    def __init__(self, registry: CollectorRegistry | None = None):
        super().__init__(registry)
        r = self.registry
        self.asr_requests = Counter("aftercall_asr_requests_total",
                                    "Requests to the Riva-compatible recogniser, by RPC.", ["rpc"], registry=r)
        self.asr_audio_seconds = Counter("aftercall_asr_audio_seconds_total",
                                         "Seconds of audio the Riva-compatible recogniser received, by RPC.", ["rpc"],
                                         registry=r)
        for rpc in ("Recognize", "StreamingRecognize"):
            self.asr_requests.labels(rpc=rpc)
            self.asr_audio_seconds.labels(rpc=rpc)
