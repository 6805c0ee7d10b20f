"""`aftercall retention run`: the retention policy ([retention]) applied by crypto-shredding."""

from __future__ import annotations

import argparse
import getpass
import sys

from aftercall.cli.common import add_data_options, data_stores, read_config, subcommands


def add_parser(commands) -> None:
    retention = commands.add_parser("retention", help="apply the retention policy ([retention])")
    retention_actions = subcommands(retention)
    run_parser = retention_actions.add_parser("run", help="crypto-shred what expired (legal holds excepted)")
    run_parser.add_argument("--dry-run", action="store_true", help="only count what would go")
    add_data_options(run_parser)
    retention.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from aftercall.vault.retention import run_retention

    config = read_config(args)
    with data_stores(args, config) as stores:
        report = run_retention(config.retention, stores.summaries, stores.calls, stores.spool, getpass.getuser(),
                               dry_run=args.dry_run)
    done = "dry run, nothing removed: would have" if args.dry_run else "retention:"
    print(f"aftercall: {done} {report.summaries_erased} summaries erased, {report.transcripts_dropped} transcripts "
          f"dropped, {report.audio_removed} failed calls' audio removed; {len(report.held)} call(s) on legal hold",
          file=sys.stderr)
    return 0
