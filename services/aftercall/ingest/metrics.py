"""The ingest service's metrics: calls received, recognised live, and processed by the pipeline."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from aftercall.core.metrics import MetricSet

# Post-call latency spans seconds (a short call, idle appliance) to many minutes (a queue after a burst).
_LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
_STAGE_BUCKETS = (0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
# summarisation includes its redaction re-check; live is recognition during calls (the others run after them).
STAGES = ("asr", "redaction", "summarisation", "store", "live")


class IngestMetrics(MetricSet):
    """Calls in and out of ingest and the pipeline's stages."""

    def __init__(self, registry: CollectorRegistry | None = None):
        super().__init__(registry)
        r = self.registry
        self.calls_active = Gauge("aftercall_ingest_calls_active", "Streams receiving audio now.", registry=r)
        self.calls_accepted = Counter("aftercall_ingest_calls_accepted_total", "Calls accepted, by source.",
                                      ["source"], registry=r)
        self.calls_rejected = Counter("aftercall_ingest_calls_rejected_total",
                                      "Calls refused at admission (over a capacity limit), by gRPC status code.",
                                      ["code"], registry=r)
        self.calls_completed = Counter("aftercall_pipeline_calls_completed_total", "Calls summarised and stored.",
                                       registry=r)
        self.calls_failed = Counter("aftercall_pipeline_calls_failed_total",
                                    "Processing attempts that failed, by stage.", ["stage"], registry=r)
        self.audio_seconds = Counter("aftercall_ingest_audio_seconds_total", "Seconds of call audio received.",
                                     registry=r)
        self.stage_seconds = Histogram("aftercall_pipeline_stage_duration_seconds", "Time spent per stage.",
                                       ["stage"], buckets=_STAGE_BUCKETS, registry=r)
        self.post_call_latency = Histogram(
            "aftercall_pipeline_post_call_latency_seconds",
            "From the end of the call's audio (CallEnd or upload) to its summary stored.",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.redactions = Counter("aftercall_redact_redactions_total", "Sensitive values redacted, by type.",
                                  ["type"], registry=r)
        self.queue_depth = Gauge("aftercall_pipeline_queue_depth", "Calls received and waiting to be processed.",
                                 registry=r)
        self.live_calls = Counter(
            "aftercall_ingest_live_recognition_total",
            "Streamed calls by how they were recognised: live (during the call), fell_behind (live until it lagged "
            "ingest.live_max_lag_s, then after the call), after_call (no live slot, a stream that broke off, or a "
            "recogniser that cannot).",
            ["outcome"], registry=r)
        self.live_active = Gauge("aftercall_ingest_live_calls_active", "Streams being recognised live now.",
                                 registry=r)
        for stage in STAGES:  # so every series exists from the first scrape
            self.stage_seconds.labels(stage=stage)
