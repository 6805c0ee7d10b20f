"""`aftercall audit verify|list`: the data directory's tamper-evident audit trail."""

from __future__ import annotations

import argparse
import json
import sys

from aftercall.cli.common import EXIT_INTERNAL_ERROR, add_data_options, data_stores, read_config, subcommands


def add_parser(commands) -> None:
    audit = commands.add_parser("audit", help="the audit trail of the data directory")
    audit_actions = subcommands(audit)
    verify = audit_actions.add_parser("verify", help="check the chain: any entry changed, removed or moved")
    verify.add_argument("--expect-head", default="", help="the head printed by an earlier verify (finds entries "
                                                          "cut off the end)")
    show = audit_actions.add_parser("list", help="the entries, oldest first")
    show.add_argument("--call-id", default="", help="only the entries about this call")
    for sub in audit_actions.choices.values():
        add_data_options(sub)
    audit.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with data_stores(args, read_config(args)) as stores:
        log = stores.summaries.audit
        if args.action == "list":
            for entry in log.entries(args.call_id):
                sys.stdout.write(json.dumps(entry, ensure_ascii=False) + "\n")
            return 0
        verdict = log.verify()
    if verdict.problem:
        print(f"aftercall: audit trail broken after {verdict.entries} good entries: {verdict.problem}",
              file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    if args.expect_head and args.expect_head not in (verdict.head, f"{verdict.entries}:{verdict.head}"):
        print(f"aftercall: audit trail intact but its head is not the expected one: entries were cut off the end "
              f"or it is another trail (now {verdict.entries}:{verdict.head})", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    print(f"{verdict.entries}:{verdict.head}")
    print(f"aftercall: {verdict.entries} entries, chain intact", file=sys.stderr)
    return 0
