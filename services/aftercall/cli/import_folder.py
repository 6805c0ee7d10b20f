"""`aftercall import FOLDER [--watch]`: a folder of recordings sent to the ingest service, each file exactly once."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from aftercall.cli.common import EXIT_INTERNAL_ERROR, EXIT_USER_ERROR, add_client_tls, progress_line, server_channel
from aftercall.core.config import parse_roles


def add_parser(commands) -> None:
    folder = commands.add_parser("import", help="summarise a folder of recordings, each file exactly once")
    folder.add_argument("folder", type=Path, help="the folder (sub-folders too); NAME.json beside a recording gives "
                                                   "its metadata (agent_id, queue, tenant, customer_ref, ani, dnis, "
                                                   "started_at)")
    folder.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT of the ingest service")
    folder.add_argument("--roles", help="stereo channel roles in order (default agent,customer)")
    folder.add_argument("--watch", action="store_true", help="keep watching the folder for new recordings")
    folder.add_argument("--interval", type=_interval, default=5.0, help="with --watch: seconds between looks (5)")
    add_client_tls(folder)
    folder.set_defaults(handler=run)


def _interval(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0.5 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"must be seconds from 0.5 to 3600, got {text!r}")
    return seconds


def run(args: argparse.Namespace) -> int:
    from aftercall.ingest.importer import FolderImport, ImportStopped

    roles = parse_roles(args.roles) if args.roles else ("agent", "customer")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):  # finish the file in hand, then stop
        signal.signal(signum, lambda *_: stop.set())
    with server_channel(args) as channel:
        folder = FolderImport(channel, args.folder, roles, progress_line, stop)
        try:
            counts = folder.watch(args.interval) if args.watch else folder.run_once()
        except ImportStopped as exc:
            print(f"aftercall: import stopped, the rest is for the next run: {exc}", file=sys.stderr)
            return EXIT_INTERNAL_ERROR
    print(f"aftercall: import: {counts.accepted} accepted, {counts.already} imported before, {counts.refused} "
          "refused", file=sys.stderr)
    return EXIT_USER_ERROR if counts.refused else 0
