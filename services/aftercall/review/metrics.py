"""The review desk's metrics: how much people change the drafts, and the after-call work they still do."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from aftercall.core.metrics import MetricSet

# After-call work runs from seconds (approved as drafted) to a day (a summary left for the next shift).
_REVIEW_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 86400)


class ReviewMetrics(MetricSet):
    """Review and approval, and the customer confirmations sent from it."""

    def __init__(self, registry: CollectorRegistry | None = None):
        super().__init__(registry)
        r = self.registry
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
        self.confirmations = Counter("aftercall_review_confirmations_total",
                                     "Customer confirmation e-mails, by outcome (sent, failed).", ["outcome"],
                                     registry=r)
        for outcome in ("sent", "failed"):
            self.confirmations.labels(outcome=outcome)
