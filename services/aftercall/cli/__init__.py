"""The `aftercall` console script: one module per command, each defining its arguments (`add_parser`) and its
handler (`run`). User errors exit 2 with one line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import sys

from aftercall import __version__
from aftercall.cli import (audit, bundle, erase, evidence, import_folder, keys, reprocess, retention, schema, serve,
                           stream, summaries, summarise, tokens)
from aftercall.cli.common import EXIT_INTERNAL_ERROR, EXIT_USER_ERROR, ArgumentParser, subcommands
from aftercall.core.errors import AftercallError, ModelIntegrityError, UserError
from aftercall.core.rpc import RemoteError

# In the order `aftercall --help` lists them.
COMMANDS = (summarise, serve, stream, import_folder, keys, bundle, tokens, erase, reprocess, retention, audit,
            evidence, schema, summaries)
# Status codes that mean the request was at fault (exit 2), not the server or the network (exit 1).
_CLIENT_FAULTS = ("INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="aftercall", description="Structured, redacted post-call summaries, on premise.")
    parser.add_argument("--version", action="version", version=f"aftercall {__version__}")
    commands = subcommands(parser, "command")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except UserError as exc:
        print(f"aftercall: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except RemoteError as exc:
        print(f"aftercall: server error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR if exc.code.name in _CLIENT_FAULTS else EXIT_INTERNAL_ERROR
    except ModelIntegrityError as exc:
        print(f"aftercall: model integrity check failed: {exc}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    except AftercallError as exc:
        print(f"aftercall: error: {exc}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    except KeyboardInterrupt:
        return 130
