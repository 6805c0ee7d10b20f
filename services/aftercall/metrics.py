"""The process's metrics: every service's set on one registry (what `/metrics` shows). Each service is handed its own
set; the assembly (aftercall.app) builds this."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from aftercall.asr.metrics import AsrMetrics
from aftercall.core.metrics import MetricSet, RpcMetrics
from aftercall.crm.metrics import CrmMetrics
from aftercall.ingest.metrics import IngestMetrics
from aftercall.review.metrics import ReviewMetrics
from aftercall.siprec.metrics import SiprecMetrics


class Metrics(MetricSet):
    def __init__(self, registry: CollectorRegistry | None = None):
        super().__init__(registry)
        self.rpc = RpcMetrics(self.registry)
        self.ingest = IngestMetrics(self.registry)
        self.review = ReviewMetrics(self.registry)
        self.crm = CrmMetrics(self.registry)
        self.asr = AsrMetrics(self.registry)
        self.siprec = SiprecMetrics(self.registry)
