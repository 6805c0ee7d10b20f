"""Erasure (`aftercall erase`) and retention (`aftercall retention run`): crypto-shred a call, or what the retention
policy says has expired (except what is on legal hold), and record each removal in the audit trail."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from aftercall.core.database import transaction
from aftercall.crm.outbox import erase_events
from aftercall.ingest.calls import CallStore
from aftercall.ingest.spool import Spool
from aftercall.review.store import SummaryStore
from aftercall.vault.config import RetentionConfig

logger = logging.getLogger(__name__)
_DAY = 86400.0


@dataclass
class RetentionReport:
    summaries_erased: int = 0
    transcripts_dropped: int = 0
    audio_removed: int = 0
    held: set[str] = field(default_factory=set)  # call ids kept because of a legal hold


def erase_call(summaries: SummaryStore, calls: CallStore, spool: Spool, call_id: str, actor: str,
               reason: str) -> bool:
    """The call's summary and versions, its CRM events not yet delivered, its job row and any audio still spooled.
    False when nothing was there."""
    records = summaries.erase(call_id, actor, reason)  # audited there
    records += erase_events(summaries.audit.db, summaries.vault, call_id)  # what the CRM has not taken yet
    job, audio = calls.get(call_id) is not None, spool.directory(call_id).exists()
    if job or audio:
        with transaction(summaries.audit.db):
            calls.delete(call_id)
            if not records:
                summaries.audit.record(actor, "erase", call_id, reason=reason, records=0, job=job, audio=audio)
        spool.remove(call_id)
    return bool(records or job or audio)


def run_retention(policy: RetentionConfig, summaries: SummaryStore, calls: CallStore, spool: Spool, actor: str,
                  now: float | None = None, dry_run: bool = False) -> RetentionReport:
    now = time.time() if now is None else now
    report = RetentionReport()
    held_calls, held_customers = set(policy.hold_call_ids), set(policy.hold_customer_refs)

    def expired(days: int) -> list[str]:
        if not days:
            return []
        found = []
        for call_id, customer_ref in summaries.made_before(now - days * _DAY):
            if call_id in held_calls or (customer_ref and customer_ref in held_customers):
                report.held.add(call_id)
            else:
                found.append(call_id)
        return found

    erased = expired(policy.summary_days)
    for call_id in erased:
        report.summaries_erased += 1
        if not dry_run:
            erase_call(summaries, calls, spool, call_id, actor,
                       f"retention: summaries are kept {policy.summary_days} days")
    for call_id in (c for c in expired(policy.transcript_days) if c not in erased):
        if dry_run or summaries.drop_transcript(call_id, actor, f"retention: transcripts are kept "
                                                                 f"{policy.transcript_days} days"):
            report.transcripts_dropped += 1
    if policy.audio_days:
        for call_id in calls.failed_before(now - policy.audio_days * _DAY):
            job = calls.get(call_id)
            if call_id in held_calls or (job and job.metadata.get("customer_ref") in held_customers):
                report.held.add(call_id)
                continue
            report.audio_removed += 1
            if not dry_run:
                with transaction(summaries.audit.db):
                    calls.delete(call_id)
                    summaries.audit.record(actor, "retention.audio", call_id,
                                           reason=f"retention: failed calls' audio is kept {policy.audio_days} days")
                spool.remove(call_id)
    logger.info("retention: %d summaries erased, %d transcripts dropped, %d failed calls' audio removed, %d held",
                report.summaries_erased, report.transcripts_dropped, report.audio_removed, len(report.held))
    return report
