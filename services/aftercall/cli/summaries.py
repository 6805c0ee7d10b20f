"""`aftercall summaries list|get`: stored summaries read from the summaries service."""

from __future__ import annotations

import argparse
import json
import sys

from aftercall.cli.common import add_client_tls, print_summary, server_channel, subcommands
from aftercall.core.rpc import RemoteError


def add_parser(commands) -> None:
    summaries = commands.add_parser("summaries", help="read stored summaries from a server")
    actions = subcommands(summaries)
    listing = actions.add_parser("list", help="search summaries, newest first")
    listing.add_argument("--agent-id", default="")
    listing.add_argument("--disposition", default="", help="disposition code")
    listing.add_argument("--state", choices=("draft", "edited", "approved"))
    listing.add_argument("--entity", default="", help="an entity the summary names (a reference, an amount)")
    listing.add_argument("--limit", type=_page_size, default=50, help="at most this many (1-500)")
    getting = actions.add_parser("get", help="one summary")
    getting.add_argument("call_id")
    getting.add_argument("--history", action="store_true", help="include every version")
    for sub in (listing, getting):
        sub.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT of the summaries service")
        sub.add_argument("--format", choices=("json", "text"), default="json")
        add_client_tls(sub)
    summaries.set_defaults(handler=run)


def _page_size(text: str) -> int:
    from aftercall.review.store import MAX_PAGE

    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_PAGE}, got {text!r}")
    return int(text)


def run(args: argparse.Namespace) -> int:
    import grpc

    from aftercall.v1 import summaries_pb2 as pb
    from aftercall.v1 import summaries_pb2_grpc as pb_grpc

    with server_channel(args) as channel:
        stub = pb_grpc.SummariesStub(channel)
        try:
            if args.action == "get":
                records = [stub.Get(pb.GetSummaryRequest(call_id=args.call_id, include_history=args.history))]
            else:
                state = {"draft": pb.REVIEW_STATE_DRAFT, "edited": pb.REVIEW_STATE_EDITED,
                         "approved": pb.REVIEW_STATE_APPROVED}.get(args.state or "", 0)
                records = list(stub.List(pb.ListSummariesRequest(
                    agent_id=args.agent_id, disposition_code=args.disposition, state=state, entity=args.entity,
                    page_size=args.limit)).summaries)
        except grpc.RpcError as exc:
            raise RemoteError(exc) from exc
    if args.format == "json":
        from google.protobuf.json_format import MessageToDict

        documents = []
        for record in records:
            document = MessageToDict(record, preserving_proto_field_name=True)
            document["summary"] = json.loads(document.pop("summary_json"))
            documents.append(document)
        sys.stdout.write(json.dumps(documents[0] if args.action == "get" else documents, indent=2,
                                    ensure_ascii=False) + "\n")
    else:
        for record in records:
            print_summary(json.loads(record.summary_json), "text")
    return 0
