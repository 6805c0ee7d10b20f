"""`aftercall stream FILE`: a WAV streamed to the ingest service as a live call (the reference PBX client)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aftercall.cli.common import add_client_tls, print_summary, server_channel
from aftercall.core.config import parse_roles
from aftercall.core.errors import UserError


def add_parser(commands) -> None:
    stream = commands.add_parser("stream", help="stream a WAV to a server as a live call (reference PBX client)")
    stream.add_argument("input", type=Path, help="WAV file (PCM16, A-law or mu-law; 8/16 kHz; mono or stereo)")
    stream.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT of the ingest service")
    pace = stream.add_mutually_exclusive_group()
    pace.add_argument("--realtime", action="store_true", help="send audio at the pace of a live call")
    pace.add_argument("--speed", type=float, help="send N times faster than real time")
    stream.add_argument("--chunk-ms", type=int, default=100, help="audio per message, 20-1000 ms (default 100)")
    stream.add_argument("--call-id", help="call id (default: random)")
    stream.add_argument("--roles", help="stereo channel roles in order (default agent,customer)")
    stream.add_argument("--agent-id", default="", help="agent id stored with the summary")
    stream.add_argument("--customer-ref", default="", help="the customer's reference (what erasure requests name)")
    stream.add_argument("--interim", action="store_true", help="ask for interim segments; print them on stderr")
    stream.add_argument("--format", choices=("json", "text"), default="json")
    add_client_tls(stream)
    stream.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from aftercall.ingest.client import stream_call

    roles = parse_roles(args.roles) if args.roles else ("agent", "customer")
    try:
        wav = args.input.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {args.input}: {exc.strerror}") from exc
    speed = 1.0 if args.realtime else args.speed

    def show_interim(event) -> None:
        if event.WhichOneof("event") == "segment" and not event.segment.final:
            segment = event.segment
            print(f"interim {segment.start_s:6.1f}s {segment.speaker}: {segment.text}", file=sys.stderr)

    with server_channel(args) as channel:
        metadata = {"agent_id": args.agent_id, "customer_ref": args.customer_ref}
        result = stream_call(channel, wav, args.call_id, roles, args.chunk_ms, speed, metadata,
                             on_event=show_interim, interim=args.interim)
    print(f"aftercall: {result.call_id}: {result.audio_seconds:.1f} s streamed, summary "
          f"{result.post_call_latency_s:.1f} s after the end of the call", file=sys.stderr)
    print_summary(result.summary, args.format)
    return 0
