"""`aftercall.v1.Summaries`: get, search, edit and approve stored summaries."""

from __future__ import annotations

import base64
import json

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from aftercall.core.errors import UserError
from aftercall.core.rpc import ServiceBinding, timestamp_seconds
from aftercall.review.desk import ReviewDesk
from aftercall.review.store import APPROVED, DRAFT, EDITED, MAX_PAGE, StoredSummary, SummaryFilter
from aftercall.v1 import summaries_pb2 as pb
from aftercall.v1 import summaries_pb2_grpc as pb_grpc

_STATES = {DRAFT: pb.REVIEW_STATE_DRAFT, EDITED: pb.REVIEW_STATE_EDITED, APPROVED: pb.REVIEW_STATE_APPROVED}
_STATE_NAMES = {value: key for key, value in _STATES.items()}


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
    def __init__(self, desk: ReviewDesk):
        self._desk = desk
        self._access = desk.access

    def binding(self) -> ServiceBinding:
        return ServiceBinding(pb.DESCRIPTOR.services_by_name["Summaries"].full_name,
                              lambda server: pb_grpc.add_SummariesServicer_to_server(self, server))

    async def Get(self, request: pb.GetSummaryRequest, context: grpc.aio.ServicerContext) -> pb.SummaryRecord:
        return to_proto(self._desk.open(self._access.identity(context), request.call_id, request.include_history))

    async def List(self, request: pb.ListSummariesRequest, context) -> pb.ListSummariesResponse:
        if request.page_size > MAX_PAGE:
            raise UserError(f"page_size must be at most {MAX_PAGE}, got {request.page_size}")
        if request.state not in _STATE_NAMES and request.state != pb.REVIEW_STATE_UNSPECIFIED:
            raise UserError(f"state: unknown value {request.state}")
        where = SummaryFilter(
            agent_id=request.agent_id, disposition_code=request.disposition_code, tenant=request.tenant,
            customer_ref=request.customer_ref, entity=request.entity, state=_STATE_NAMES.get(request.state, ""),
            created_from=timestamp_seconds(request.created_from, "created_from")
            if request.HasField("created_from") else None,
            created_to=timestamp_seconds(request.created_to, "created_to") if request.HasField("created_to") else None)
        page, next_offset = self._desk.search(self._access.identity(context), where, request.page_size,
                                              _page_offset(request.page_token))
        token = base64.urlsafe_b64encode(str(next_offset).encode()).decode() if next_offset is not None else ""
        return pb.ListSummariesResponse(summaries=[to_proto(s) for s in page], next_page_token=token)

    async def Edit(self, request: pb.EditSummaryRequest, context) -> pb.SummaryRecord:
        identity = self._access.identity(context, required_for="Edit")
        return to_proto(self._desk.edit(identity, request.call_id, request.expected_version, request.fields_json))

    async def Approve(self, request: pb.ApproveSummaryRequest, context) -> pb.SummaryRecord:
        identity = self._access.identity(context, required_for="Approve")
        return to_proto(self._desk.approve(identity, request.call_id, request.expected_version))
