"""`aftercall tokens issue USER`: a signed identity token for a client without a certificate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aftercall.cli.common import read_config, subcommands
from aftercall.core.errors import UserError


def add_parser(commands) -> None:
    tokens = commands.add_parser("tokens", help="signed identity tokens for clients without a certificate")
    token_actions = subcommands(tokens)
    issue = token_actions.add_parser("issue", help="print a token naming USER (send it as x-aftercall-token)")
    issue.add_argument("user")
    issue.add_argument("--hours", type=float, default=8.0, help="how long it is valid (default 8, at most 168)")
    issue.add_argument("--config", type=Path, help="aftercall TOML config file (optional)")
    tokens.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from aftercall.vault.keys import open_key_ring
    from aftercall.vault.tokens import issue_token

    config = read_config(args)
    try:
        token = issue_token(open_key_ring(config.vault, create_missing=False), args.user, args.hours * 3600)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    print(token)
    print(f"aftercall: a token for {args.user!r}, valid {args.hours:g} h", file=sys.stderr)
    return 0
