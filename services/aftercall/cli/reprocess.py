"""`aftercall reprocess`: after a model change, the untouched drafts summarised again (edited and approved ones
stay)."""

from __future__ import annotations

import argparse
import sys

from aftercall.cli.common import add_data_options, data_stores, progress_line, read_config
from aftercall.core.errors import UserError


def add_parser(commands) -> None:
    reprocess = commands.add_parser("reprocess", help="after a model change: summarise the untouched drafts again "
                                                       "(edited and approved summaries stay)")
    reprocess.add_argument("--since", type=_utc_date, help="only drafts stored on or after this date (YYYY-MM-DD, "
                                                           "UTC)")
    reprocess.add_argument("--dry-run", action="store_true", help="say what would change; store nothing")
    add_data_options(reprocess)
    reprocess.set_defaults(handler=run)


def _utc_date(text: str) -> float:
    from aftercall.core.documents import utc_day

    try:
        return utc_day(text, "date")
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from aftercall.pipeline import build_pipeline
    from aftercall.review.redraft import drafts_since, redraft_all

    config = read_config(args)
    pipeline = build_pipeline(config)
    with data_stores(args, config) as stores:
        call_ids = drafts_since(stores.summaries, args.since)
        progress_line(f"reprocess: {len(call_ids)} untouched draft(s)")
        counts = redraft_all(stores.summaries, pipeline, call_ids, progress_line, args.dry_run)
    done = "dry run, nothing stored: would have" if args.dry_run else "reprocess:"
    print(f"aftercall: {done} {counts.redrafted} redrafted, {counts.unchanged} unchanged, {counts.skipped} skipped",
          file=sys.stderr)
    return 0
