"""The review desk: what people do with stored summaries (open, search, edit, approve), whoever they are and however
they reach the appliance. The gRPC Summaries service and the browser console both go through it, so a role allows
the same things on either, and every read and change is audited the same way."""

from __future__ import annotations

import datetime
import time
from typing import Any

from aftercall.core.errors import PermissionDeniedError, disk_full_is_capacity
from aftercall.redact import Redactor
from aftercall.review.edits import apply_edit
from aftercall.review.metrics import ReviewMetrics
from aftercall.review.store import StoredSummary, SummaryFilter, SummaryStore
from aftercall.vault.access import AccessPolicy

# Every read is audited; on a full disk its entry cannot be written, and a read nobody could trace is refused.
_UNAUDITED = "the data disk is full: the read could not be recorded in the audit trail, so it was refused"


def hung_up_at(stored: StoredSummary) -> float:
    """When the call ended: its start plus its audio's length, where the summary knows both; else when the summary
    was stored (a few seconds after the end, for a transcript given as text)."""
    call = stored.summary.get("call") or {}
    started, duration = call.get("started_at"), call.get("duration_s")
    if started and duration is not None:
        try:
            return datetime.datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp() + duration
        except ValueError:
            pass
    return stored.created_at


class ReviewDesk:
    def __init__(self, store: SummaryStore, access: AccessPolicy, metrics: ReviewMetrics, redactor: Redactor,
                 clock=time.time):
        self.store = store
        self.access = access
        self.metrics = metrics
        self.redactor = redactor  # an agent's edit is redacted by the site's rules, like the summary it changes
        self._clock = clock

    def open(self, identity: str | None, call_id: str, include_history: bool = False) -> StoredSummary:
        """One summary, if `identity` may read it; the read is audited."""
        scope = self.access.summaries_scope(identity, "reading summaries")
        record = self.store.get(call_id, include_history)
        if not scope.allows(record.agent_id):
            raise PermissionDeniedError(f"{identity!r} may not read the summary of call {call_id!r} (not their "
                                        "call or their team's)")
        with disk_full_is_capacity(_UNAUDITED):
            self.store.audit.record(identity or "unidentified", "read", call_id, history=include_history)
        return record

    def search(self, identity: str | None, where: SummaryFilter, page_size: int = 0,
               offset: int = 0) -> tuple[list[StoredSummary], int | None]:
        """A page of the summaries `identity` may read that match `where`, newest first; the search is audited."""
        scope = self.access.summaries_scope(identity, "searching summaries")
        where = SummaryFilter(**{**vars(where), "agents": scope.agents})
        page, next_offset = self.store.list(where, page_size, offset)
        filters = {k: sorted(v) if isinstance(v, frozenset) else v for k, v in vars(where).items() if v}
        with disk_full_is_capacity(_UNAUDITED):
            self.store.audit.record(identity or "unidentified", "search", "", filters=filters,
                                    results=[s.call_id for s in page])
        return page, next_offset

    def open_to_change(self, identity: str | None, call_id: str, action: str) -> StoredSummary:
        """The summary, if `identity` may act on it (edit, approve, write to the customer); the read is audited."""
        record = self.open(identity, call_id)
        if not self.may_change(identity, record):
            raise PermissionDeniedError(f"{identity!r} may not {action} for call {call_id!r} (not their call or their "
                                        "team's)")
        return record

    def may_change(self, identity: str | None, record: StoredSummary) -> bool:
        """Whether `identity` could edit or approve this summary (for showing the controls; the change checks again)."""
        try:
            return self.access.change_scope(identity, "Edit").allows(record.agent_id)
        except PermissionDeniedError:
            return False

    def _changer(self, identity: str | None, call_id: str, action: str) -> str:
        scope = self.access.change_scope(identity, action)
        if not scope.allows(self.store.get(call_id).agent_id):
            raise PermissionDeniedError(f"{identity!r} may not {action.lower()} the summary of call {call_id!r} "
                                        "(not their call or their team's)")
        return identity or "unidentified"

    def edit(self, identity: str | None, call_id: str, expected_version: int, fields_json: str) -> StoredSummary:
        """A new version with the fields changed (each checked against the contract and re-redacted)."""
        author = self._changer(identity, call_id, "Edit")
        edited = apply_edit(self.store.get(call_id).summary, fields_json, self.redactor)
        return self.store.edit(call_id, expected_version, edited, author)

    def approve(self, identity: str | None, call_id: str, expected_version: int) -> StoredSummary:
        """Freeze the summary; measures how much people changed the draft and how long the after-call work took."""
        approver = self._changer(identity, call_id, "Approve")
        approved, distance = self.store.approve(call_id, expected_version, approver)
        self.metrics.review_edit_distance.observe(distance)
        now = self._clock()
        self.metrics.review_hangup_to_approval.observe(max(0.0, now - hung_up_at(approved)))
        opened = self.first_opened(call_id, approver)
        if opened is not None:
            self.metrics.review_duration.observe(max(0.0, now - opened))
        return approved

    def first_opened(self, call_id: str, reader: str) -> float | None:
        """When `reader` first opened the call's summary (from the audit trail), or None."""
        return next((entry["at"] for entry in self.store.audit.entries(call_id)
                     if entry["action"] == "read" and entry.get("actor") == reader), None)

    def after_call_work(self, stored: StoredSummary) -> dict[str, Any]:
        """An approved summary's after-call work in seconds: from hang-up to approval, and the approver's review
        time (from first opening it); empty before approval."""
        if not stored.approved_by:
            return {}
        approved_at = stored.updated_at  # an approved summary changes no more
        opened = self.first_opened(stored.call_id, stored.approved_by)
        return {"hangup_to_approval_s": max(0.0, approved_at - hung_up_at(stored)),
                "review_s": None if opened is None else max(0.0, approved_at - opened)}
