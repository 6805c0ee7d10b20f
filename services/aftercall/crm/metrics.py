"""The CRM push's metrics: deliveries and the outbox."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from aftercall.core.metrics import MetricSet


class CrmMetrics(MetricSet):
    """Webhook deliveries by outcome and the outbox by state."""

    def __init__(self, registry: CollectorRegistry | None = None):
        super().__init__(registry)
        r = self.registry
        self.crm_deliveries = Counter(
            "aftercall_crm_deliveries_total",
            "CRM webhook delivery attempts, by outcome: delivered, retry (failed, will be tried again), dead (failed "
            "crm.max_attempts times: a dead letter until someone retries it).", ["outcome"], registry=r)
        self.crm_outbox = Gauge("aftercall_crm_outbox_events", "CRM events in the outbox, by state (pending, dead).",
                                ["state"], registry=r)
        for outcome in ("delivered", "retry", "dead"):
            self.crm_deliveries.labels(outcome=outcome)
        for state in ("pending", "dead"):
            self.crm_outbox.labels(state=state)
