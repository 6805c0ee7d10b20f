"""`aftercall.v1.Summaries`: get, search, edit and approve stored summaries."""

from __future__ import annotations

import base64
import json

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from aftercall.core.errors import PermissionDeniedError, UserError, disk_full_is_capacity
from aftercall.core.metrics import Metrics
from aftercall.core.rpc import ServiceBinding, timestamp_seconds
from aftercall.redact import Redactor
from aftercall.review.edits import apply_edit
from aftercall.review.store import APPROVED, DRAFT, EDITED, MAX_PAGE, StoredSummary, SummaryFilter, SummaryStore
from aftercall.v1 import summaries_pb2 as pb
from aftercall.v1 import summaries_pb2_grpc as pb_grpc
from aftercall.vault.access import AccessPolicy

_STATES = {DRAFT: pb.REVIEW_STATE_DRAFT, EDITED: pb.REVIEW_STATE_EDITED, APPROVED: pb.REVIEW_STATE_APPROVED}
_STATE_NAMES = {value: key for key, value in _STATES.items()}
# Every read is audited; on a full disk its entry cannot be written, and a read nobody could trace is refused.
_UNAUDITED = "the data disk is full: the read could not be recorded in the audit trail, so it was refused"


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def to_proto(stored: StoredSummary) -> pb.SummaryRecord:
    return pb.SummaryRecord(
        call_id=stored.call_id, summary_json=json.dumps(stored.summary, ensure_ascii=False),
        state=_STATES[stored.state], version=stored.version, agent_id=stored.agent_id, queue=stored.queue,
        tenant=stored.tenant, disposition_code=stored.disposition_code, created_at=_timestamp(stored.created_at),
        updated_at=_timestamp(stored.updated_at), approved_by=stored.approved_by, complete=stored.complete,
        history=[pb.SummaryVersion(version=v.version, author=v.author, created_at=_timestamp(v.created_at),
                                   summary_json=json.dumps(v.summary, ensure_ascii=False)) for v in stored.history])


def _page_offset(token: str) -> int:
    if not token:
        return 0
    try:
        offset = int(base64.urlsafe_b64decode(token.encode()).decode())
    except ValueError as exc:
        raise UserError("page_token is not one this server issued") from exc
    if not 0 <= offset <= 2**31:
        raise UserError("page_token is not one this server issued")
    return offset


class SummariesService(pb_grpc.SummariesServicer):
    def __init__(self, store: SummaryStore, access: AccessPolicy, metrics: Metrics, redactor: Redactor):
        self._store = store
        self._redactor = redactor  # an agent's edit is redacted by the site's rules, like the summary it changes
        self._access = access
        self._metrics = metrics

    def _readable(self, context, call_id: str, include_history: bool = False):
        identity = self._access.identity(context)
        scope = self._access.summaries_scope(identity, "reading summaries")
        record = self._store.get(call_id, include_history)
        if not scope.allows(record.agent_id):
            raise PermissionDeniedError(f"{identity!r} may not read the summary of call {call_id!r} (not their "
                                        "call or their team's)")
        return record

    def _reader(self, context) -> str:
        return self._access.identity(context) or "unidentified"

    def _changeable(self, context, call_id: str, action: str) -> str:
        identity = self._access.identity(context, required_for=action)
        scope = self._access.change_scope(identity, action)
        if not scope.allows(self._store.get(call_id).agent_id):
            raise PermissionDeniedError(f"{identity!r} may not {action.lower()} the summary of call {call_id!r} "
                                        "(not their call or their team's)")
        return identity

    def binding(self) -> ServiceBinding:
        return ServiceBinding(pb.DESCRIPTOR.services_by_name["Summaries"].full_name,
                              lambda server: pb_grpc.add_SummariesServicer_to_server(self, server))

    async def Get(self, request: pb.GetSummaryRequest, context: grpc.aio.ServicerContext) -> pb.SummaryRecord:
        record = self._readable(context, request.call_id, request.include_history)
        with disk_full_is_capacity(_UNAUDITED):
            self._store.audit.record(self._reader(context), "read", request.call_id, history=request.include_history)
        return to_proto(record)

    async def List(self, request: pb.ListSummariesRequest, context) -> pb.ListSummariesResponse:
        if request.page_size > MAX_PAGE:
            raise UserError(f"page_size must be at most {MAX_PAGE}, got {request.page_size}")
        if request.state not in _STATE_NAMES and request.state != pb.REVIEW_STATE_UNSPECIFIED:
            raise UserError(f"state: unknown value {request.state}")
        scope = self._access.summaries_scope(self._access.identity(context), "searching summaries")
        where = SummaryFilter(
            agent_id=request.agent_id, disposition_code=request.disposition_code, tenant=request.tenant,
            customer_ref=request.customer_ref, agents=scope.agents,
            state=_STATE_NAMES.get(request.state, ""),
            created_from=timestamp_seconds(request.created_from, "created_from")
            if request.HasField("created_from") else None,
            created_to=timestamp_seconds(request.created_to, "created_to") if request.HasField("created_to") else None)
        page, next_offset = self._store.list(where, request.page_size, _page_offset(request.page_token))
        filters = {k: sorted(v) if isinstance(v, frozenset) else v for k, v in vars(where).items() if v}
        with disk_full_is_capacity(_UNAUDITED):
            self._store.audit.record(self._reader(context), "search", "", filters=filters,
                                     results=[s.call_id for s in page])
        token = base64.urlsafe_b64encode(str(next_offset).encode()).decode() if next_offset is not None else ""
        return pb.ListSummariesResponse(summaries=[to_proto(s) for s in page], next_page_token=token)

    async def Edit(self, request: pb.EditSummaryRequest, context) -> pb.SummaryRecord:
        author = self._changeable(context, request.call_id, "Edit")
        current = self._store.get(request.call_id)
        edited = apply_edit(current.summary, request.fields_json, self._redactor)
        return to_proto(self._store.edit(request.call_id, request.expected_version, edited, author))

    async def Approve(self, request: pb.ApproveSummaryRequest, context) -> pb.SummaryRecord:
        approver = self._changeable(context, request.call_id, "Approve")
        approved, distance = self._store.approve(request.call_id, request.expected_version, approver)
        self._metrics.review_edit_distance.observe(distance)
        return to_proto(approved)
