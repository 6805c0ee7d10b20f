"""Prometheus metrics of every stage, on a registry of their own (tests build a fresh one each).

Names follow `aftercall_<subsystem>_<name>_<unit>`; labels are bounded (stage, type, status code, source), never a
call id or an agent id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from aftercall.core.config import ServerConfig, parse_address
from aftercall.core.errors import ConfigError

# Post-call latency spans seconds (a short call, idle appliance) to many minutes (a queue after a burst).
_LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
_STAGE_BUCKETS = (0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
# After-call work runs from seconds (approved as drafted) to a day (a summary left for the next shift).
_REVIEW_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 86400)
# summarisation includes its redaction re-check; live is recognition during calls (the others run after them).
STAGES = ("asr", "redaction", "summarisation", "store", "live")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.calls_active = Gauge("aftercall_ingest_calls_active", "Streams receiving audio now.", registry=r)
        self.calls_accepted = Counter("aftercall_ingest_calls_accepted_total", "Calls accepted, by source.",
                                      ["source"], registry=r)
        self.calls_rejected = Counter("aftercall_ingest_calls_rejected_total",
                                      "Calls refused at admission (over a capacity limit), by gRPC status code.", ["code"], registry=r)
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
        self.review_edit_distance = Histogram(
            "aftercall_review_edit_distance_ratio",
            "At approval: the share of the AI draft's words people rewrote (0 = approved as drafted).",
            buckets=(0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0), registry=r)
        # After-call work: how long a summary waits for the person who approves it.
        self.review_hangup_to_approval = Histogram(
            "aftercall_review_hangup_to_approval_seconds",
            "From the end of the call to its summary approved (the after-call work a person still does).",
            buckets=_REVIEW_BUCKETS, registry=r)
        self.review_duration = Histogram(
            "aftercall_review_duration_seconds",
            "From a summary first opened in review (console or Get) to its approval.",
            buckets=_REVIEW_BUCKETS, registry=r)
        self.crm_deliveries = Counter(
            "aftercall_crm_deliveries_total",
            "CRM webhook delivery attempts, by outcome: delivered, retry (failed, will be tried again), dead (failed "
            "crm.max_attempts times: a dead letter until someone retries it).", ["outcome"], registry=r)
        self.crm_outbox = Gauge("aftercall_crm_outbox_events", "CRM events in the outbox, by state (pending, dead).",
                                ["state"], registry=r)
        self.confirmations = Counter("aftercall_review_confirmations_total",
                                     "Customer confirmation e-mails, by outcome (sent, failed).", ["outcome"],
                                     registry=r)
        self.errors = Counter("aftercall_errors_total", "Errors returned to clients, by service and status code.",
                              ["service", "code"], registry=r)
        self.asr_requests = Counter("aftercall_asr_requests_total",
                                    "Requests to the Riva-compatible recogniser, by RPC.", ["rpc"], registry=r)
        self.asr_audio_seconds = Counter("aftercall_asr_audio_seconds_total",
                                         "Seconds of audio the Riva-compatible recogniser received, by RPC.", ["rpc"],
                                         registry=r)
        # SIPREC: call_class is the trunk's name from siprec.trunks (bounded by config), else "default".
        self.siprec_requests = Counter("aftercall_siprec_sip_requests_total", "SIP requests received, by method.",
                                       ["method"], registry=r)
        self.siprec_responses = Counter("aftercall_siprec_sip_responses_total",
                                        "SIP responses sent, by the request's method and status code.",
                                        ["method", "status"], registry=r)
        self.siprec_recordings_active = Gauge("aftercall_siprec_recordings_active", "Calls being recorded now.",
                                              registry=r)
        self.siprec_recordings = Counter("aftercall_siprec_recordings_total",
                                         "Recordings ended, by call class and how (bye, rtp_timeout, no_ack, "
                                         "ingest_error, shutdown, error).", ["call_class", "end"], registry=r)
        self.siprec_rtp_packets = Counter("aftercall_siprec_rtp_packets_total",
                                          "RTP packets received, by call class and what became of them (recorded, "
                                          "duplicate, late, other_payload, malformed, unexpected_source).",
                                          ["call_class", "result"], registry=r)
        self.siprec_rtp_lost = Counter("aftercall_siprec_rtp_lost_seconds_total",
                                       "Audio lost in transit (filled with silence), by call class.", ["call_class"],
                                       registry=r)
        self.siprec_rtp_jitter = Histogram("aftercall_siprec_rtp_jitter_seconds",
                                           "Interarrival jitter (RFC 3550) of each stream at the end of its call.",
                                           ["call_class"], buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2),
                                           registry=r)
        for stage in STAGES:  # so every series exists from the first scrape
            self.stage_seconds.labels(stage=stage)
        for outcome in ("delivered", "retry", "dead"):
            self.crm_deliveries.labels(outcome=outcome)
        for state in ("pending", "dead"):
            self.crm_outbox.labels(state=state)
        for outcome in ("sent", "failed"):
            self.confirmations.labels(outcome=outcome)
        for rpc in ("Recognize", "StreamingRecognize"):
            self.asr_requests.labels(rpc=rpc)
            self.asr_audio_seconds.labels(rpc=rpc)

    def rpc_error(self, method: str, code) -> None:
        """Hook for `aftercall.core.rpc.ErrorInterceptor`: "/aftercall.v1.CallIngest/StreamCall" -> CallIngest."""
        service = method.strip("/").split("/")[0].rsplit(".", 1)[-1]
        self.errors.labels(service=service, code=code.name).inc()


def serve_metrics(metrics: Metrics, listen: str, config: ServerConfig):
    """The /metrics endpoint, over TLS (and mutual TLS) when the gRPC listener has it. Returns (server, thread)."""
    host, port = parse_address(listen, "config server.metrics_listen")
    try:
        return _start_http_server(host, port, metrics, config)
    except OSError as exc:
        raise ConfigError(f"config server.metrics_listen: cannot bind {listen} ({exc.strerror})") from exc


def _start_http_server(host: str, port: int, metrics: Metrics, config: ServerConfig):
    return start_http_server(
        port, addr=host, registry=metrics.registry,
        certfile=config.tls_cert_file or None, keyfile=config.tls_key_file or None,
        client_cafile=config.tls_client_ca_file or None, client_auth_required=bool(config.tls_client_ca_file))
