"""`aftercall keys init|list|rotate|retire`: the vault's key-encryption keys (vault.key_file)."""

from __future__ import annotations

import argparse
import getpass
import sys
import time

from aftercall.cli.common import add_data_options, data_stores, read_config, subcommands


def add_parser(commands) -> None:
    keys = commands.add_parser("keys", help="the vault's key-encryption keys (vault.key_file)")
    key_actions = subcommands(keys)
    key_actions.add_parser("init", help="create the key file (never overwrites one)")
    key_actions.add_parser("list", help="the keys, their state, and how many stored records each protects")
    key_actions.add_parser("rotate", help="a new active key, then every stored record re-wrapped with it (online)")
    retire = key_actions.add_parser("retire", help="erase an old key once no record needs it")
    retire.add_argument("kek_id", type=int, metavar="ID")
    for sub in key_actions.choices.values():
        add_data_options(sub)
    keys.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from aftercall.vault.hsm import token_keys
    from aftercall.vault.keys import KeyRing, key_file_path
    from aftercall.vault.rotation import protected_counts, retire_key, rotate_keys

    config = read_config(args)
    if args.action == "init":
        path = key_file_path(config.vault.key_file)
        KeyRing.create(path, token_keys(config.vault))
        print(f"aftercall: created {path} (key 1 active); back it up apart from the data", file=sys.stderr)
        return 0
    with data_stores(args, config) as stores:
        vault, audit, sources, spool = stores.vault, stores.summaries.audit, stores.sealed_sources(), stores.spool
        if args.action == "rotate":
            fresh, changed = rotate_keys(vault, audit, sources, spool, getpass.getuser(), lambda kek_id: print(
                f"aftercall: key {kek_id} is now active; re-wrapping stored records", file=sys.stderr, flush=True))
            print(f"aftercall: {changed} record(s) re-wrapped with key {fresh}", file=sys.stderr)
        elif args.action == "retire":
            retire_key(vault, audit, sources, spool, args.kek_id, getpass.getuser())
            print(f"aftercall: key {args.kek_id} retired (erased from {vault.keys.path})", file=sys.stderr)
        counts = protected_counts(sources, spool)
    for kek in vault.keys.keks:
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(kek.created_at))
        print(f"{kek.id}\t{kek.state}\t{created} UTC\t{counts.get(kek.id, 0)} record(s)")
    return 0
