"""The SIPREC recording server's metrics: SIP requests and responses, recordings, RTP."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from aftercall.core.metrics import MetricSet


class SiprecMetrics(MetricSet):
    """SIP, recordings and RTP; call_class is the trunk's name from siprec.trunks (bounded by config), else
    "default"."""

    def __init__(self, registry: CollectorRegistry | None = None):
        super().__init__(registry)
        r = self.registry
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
