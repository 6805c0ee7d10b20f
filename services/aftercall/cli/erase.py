"""`aftercall erase --call-id ID | --customer-ref REF`: an erasure request, by crypto-shredding."""

from __future__ import annotations

import argparse
import getpass
import sys

from aftercall.cli.common import add_data_options, data_stores, read_config
from aftercall.core.errors import NotFoundError


def add_parser(commands) -> None:
    erase = commands.add_parser("erase", help="crypto-shred a call's or a customer's stored records (erasure "
                                              "request)")
    whom = erase.add_mutually_exclusive_group(required=True)
    whom.add_argument("--call-id")
    whom.add_argument("--customer-ref", help="every call stored with this customer reference")
    erase.add_argument("--reason", default="erasure request", help="recorded in the audit trail")
    add_data_options(erase)
    erase.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from aftercall.vault.retention import erase_call

    with data_stores(args, read_config(args)) as stores:
        summaries = stores.summaries
        call_ids = [args.call_id] if args.call_id else summaries.call_ids_for_customer(args.customer_ref)
        found = [call_id for call_id in call_ids
                 if erase_call(summaries, stores.calls, stores.spool, call_id, getpass.getuser(), args.reason)]
    if not found:
        raise NotFoundError("nothing stored matches: no call with that call id or customer reference")
    print(f"aftercall: erased {len(found)} call(s)", file=sys.stderr)
    return 0
