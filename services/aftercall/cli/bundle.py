"""`aftercall bundle keygen|verify`: the signed offline bundle for air-gapped installs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aftercall.cli.common import subcommands
from aftercall.core.errors import UserError


def add_parser(commands) -> None:
    bundle = commands.add_parser("bundle", help="the signed offline bundle for air-gapped installs")
    bundle_actions = subcommands(bundle)
    keygen = bundle_actions.add_parser("keygen", help="make an Ed25519 signing key (0600) and its public key")
    keygen.add_argument("--out", type=Path, required=True, help="directory for bundle-signing.key/.pub")
    check = bundle_actions.add_parser("verify", help="check a bundle's signature and every file's sha256")
    check.add_argument("bundle", type=Path)
    check.add_argument("--public-key", type=Path, required=True, help="the release's Ed25519 public key (PEM)")
    bundle.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from aftercall.bundle import generate_keys, verify_bundle

    if args.action == "keygen":
        try:
            private, public = generate_keys(args.out)
        except FileExistsError:
            raise UserError(f"{args.out}: a signing key is already there; never overwritten") from None
        print(f"aftercall: signing key {private} (keep it off the sites), public key {public}", file=sys.stderr)
        return 0
    try:
        manifest = verify_bundle(args.bundle, args.public_key)
    except OSError as exc:
        raise UserError(f"cannot read {exc.filename}: {exc.strerror}") from None
    except ValueError as exc:  # BundleError, or a key file that is not PEM
        raise UserError(str(exc)) from None
    print(f"aftercall: {args.bundle} is whole and signed: version {manifest['version']}, {len(manifest['files'])} "
          "files", file=sys.stderr)
    return 0
