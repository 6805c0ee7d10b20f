"""`aftercall schema`: the summary contract as a JSON Schema."""

from __future__ import annotations

import argparse
import json


def add_parser(commands) -> None:
    commands.add_parser("schema", help="the summary contract as a JSON Schema (what every summary JSON meets)"
                        ).set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from aftercall.summarise.contract import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0
