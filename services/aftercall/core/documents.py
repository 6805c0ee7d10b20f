"""JSON and TOML that someone else wrote (a transcript, a taxonomy, a config file, gold cases, a summary edit), parsed
so that whatever the document holds, the caller gets its own one-line error naming where, never a traceback.

The parsers do not fail only with their own decode errors: a document nested a few thousand levels deep exhausts
Python's recursion limit (RecursionError), an integer of more than 4300 digits trips CPython's limit on converting
digits (ValueError), and JSON's `\\ud800` escape parses into a string holding a lone UTF-16 surrogate, which is not
text and fails far downstream (the tokenizer's TypeError, every UTF-8 encode). All three are refused here.
"""

from __future__ import annotations

import datetime
import json
import re
import sys
import tomllib
from typing import Any, Callable

from aftercall.core.errors import ConfigError, UserError

ErrorFactory = Callable[[str], Exception]

# A surrogate escape in the JSON text (a pair is decoded into one character, a lone one is left as it is), or a
# surrogate already in a str handed over: only then is the parsed document searched.
_SURROGATE_HINT = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_JSON_TYPES = {dict: "an object", list: "an array", bool: "true or false", int: "a number", float: "a number",
               type(None): "null"}


def _too_many_digits() -> str:
    return f"a number has more than {sys.get_int_max_str_digits()} digits"


def parse_json(data: bytes | str, where: str, error: ErrorFactory = UserError) -> Any:
    """The JSON document in `data`; `error(message)` is raised for anything that is not valid JSON text."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise error(f"{where}: not UTF-8 (byte {exc.start})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise error(f"{where}: not valid JSON: nested too deeply") from None
    except ValueError:  # the only other one json raises: CPython's limit on an integer's digits
        raise error(f"{where}: not valid JSON: {_too_many_digits()}") from None
    if _SURROGATE_HINT.search(text) and _holds_lone_surrogate(document):
        raise error(f"{where}: not valid JSON: a string holds a lone UTF-16 surrogate (such as \\ud800), which is "
                    "not text")
    return document


def parse_toml(text: str, where: str, error: ErrorFactory = ConfigError) -> dict[str, Any]:
    """The TOML document in `text`; `error(message)` is raised for anything that is not valid TOML (TOML itself
    refuses surrogate escapes)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{where}: not valid TOML ({exc})") from None
    except RecursionError:
        raise error(f"{where}: not valid TOML (nested too deeply)") from None
    except ValueError:  # not a TOMLDecodeError: CPython's limit on an integer's digits
        raise error(f"{where}: not valid TOML ({_too_many_digits()})") from None


def shown(value: Any) -> str:
    """A value from a document, quoted in an error message: short whatever it holds (and never repr'd when it is
    not a string: a nested array's repr can exceed the recursion limit its parse stayed under)."""
    if not isinstance(value, str):
        return _JSON_TYPES.get(type(value), type(value).__name__)
    return repr(value) if len(value) <= 40 else f"{value[:40]!r}..."


def _holds_lone_surrogate(document: Any) -> bool:
    # Iterative: the document may be nested nearly as deep as the recursion limit allows.
    pending = [document]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def utc_day(text: str, where: str) -> float:
    """The start (UTC) of a day someone typed as YYYY-MM-DD, in Unix seconds; UserError naming `where` otherwise."""
    try:
        day = datetime.datetime.strptime(text, "%Y-%m-%d")
    except ValueError:
        raise UserError(f"{where}: a date as YYYY-MM-DD, got {text!r}") from None
    return day.replace(tzinfo=datetime.timezone.utc).timestamp()
