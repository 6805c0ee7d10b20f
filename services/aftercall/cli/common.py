"""What the commands share: the parser that exits 2, the data-directory and client options, and opening what the
options name (config, data directory, stores, a channel to a server)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Iterator

from aftercall.config import Config, load_config
from aftercall.core.errors import UserError
from aftercall.core.logsetup import configure_logging

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other user error
        print(f"aftercall: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR)


def subcommands(parser: argparse.ArgumentParser, dest: str = "action"):
    return parser.add_subparsers(dest=dest, required=True, parser_class=ArgumentParser)


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """The admin commands work on a data directory with the key file, both named by the config."""
    parser.add_argument("--config", type=Path, help="aftercall TOML config file (optional)")
    parser.add_argument("--data-dir", type=Path, help="the data directory (default server.data_dir)")


def add_client_tls(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", default="", help="who you are, for a server on loopback (x-aftercall-user; over "
                                                   "mutual TLS the certificate says it)")
    parser.add_argument("--token", default="", help="a signed identity token (aftercall tokens issue)")
    parser.add_argument("--tls-ca", default="", help="CA certificate: use TLS and trust this CA")
    parser.add_argument("--tls-cert", default="", help="client certificate for mutual TLS")
    parser.add_argument("--tls-key", default="", help="client key for mutual TLS")


def read_config(args: argparse.Namespace) -> Config:
    """The config file (if any) read, and logging set up from it."""
    config = load_config(args.config)
    configure_logging(config.logging.level, config.logging.format)
    return config


def data_dir(args: argparse.Namespace, config: Config) -> Path:
    """--data-dir, else server.data_dir, else $XDG_DATA_HOME/aftercall (~/.local/share/aftercall)."""
    if args.data_dir or config.server.data_dir:
        return args.data_dir or Path(config.server.data_dir)
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "aftercall"


@contextlib.contextmanager
def data_stores(args: argparse.Namespace, config: Config) -> Iterator:
    """The data directory's stores opened with the key file, as the admin commands use them (the server may be
    running: SQLite lets both write, one transaction at a time)."""
    from aftercall.stores import open_stores

    stores = open_stores(config, data_dir(args, config))
    try:
        yield stores
    finally:
        stores.close()


def server_channel(args: argparse.Namespace):
    """A channel to --server with the client's TLS files and identity."""
    from aftercall.core.rpc import client_channel

    if (args.tls_cert or args.tls_key) and not (args.tls_cert and args.tls_key and args.tls_ca):
        raise UserError("mutual TLS needs --tls-ca, --tls-cert and --tls-key together")
    try:
        return client_channel(args.server, args.tls_ca, args.tls_cert, args.tls_key, args.user, args.token)
    except OSError as exc:
        raise UserError(f"cannot read a TLS file: {exc.filename}: {exc.strerror}") from exc


def print_summary(summary: dict, fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    else:
        from aftercall.render import render_text

        sys.stdout.write(render_text(summary))


def progress_line(line: str) -> None:
    """A long job's progress on stderr, a line at a time."""
    print(f"aftercall: {line}", file=sys.stderr, flush=True)
