"""Disposition taxonomies: TOML files of `[[disposition]]` tables with `code`, `label`, `description` and optional
`examples` (what callers say for that code, in the site's words)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from aftercall.core.documents import parse_toml
from aftercall.core.errors import ConfigError

DEFAULT_TAXONOMY = Path(__file__).parent / "data" / "default_taxonomy.toml"
UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class Disposition:
    code: str
    label: str
    description: str
    examples: tuple[str, ...] = ()


def parse_taxonomy(text: str, source: str = "taxonomy") -> tuple[Disposition, ...]:
    document = parse_toml(text, source)
    entries = document.get("disposition")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source}: needs at least one [[disposition]] table")
    seen: set[str] = set()
    dispositions = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(f"{source}: disposition[{index}] must be a table ([[disposition]])")
        for key in ("code", "label", "description"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise ConfigError(f"{source}: disposition[{index}].{key} must be a non-empty string")
        code = entry["code"].strip()
        if code in seen or code == UNKNOWN:
            raise ConfigError(f"{source}: disposition[{index}].code {code!r} is duplicated or reserved")
        seen.add(code)
        examples = entry.get("examples", [])
        if not isinstance(examples, list) or not all(isinstance(e, str) and e.strip() for e in examples):
            raise ConfigError(f"{source}: disposition[{index}].examples must be a list of non-empty strings")
        dispositions.append(Disposition(code, entry["label"].strip(), entry["description"].strip(),
                                        tuple(e.strip() for e in examples)))
    return tuple(dispositions)


def load_taxonomy(path: Path | None = None) -> tuple[Disposition, ...]:
    path = path or DEFAULT_TAXONOMY
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"taxonomy {path}: cannot read ({exc})") from exc
    return parse_taxonomy(text, f"taxonomy {path}")


def taxonomy_to_toml(taxonomy: tuple[Disposition, ...]) -> str:
    """The TOML `parse_taxonomy` reads back."""
    return "".join(f"[[disposition]]\ncode = {_string(d.code)}\nlabel = {_string(d.label)}\n"
                   f"description = {_string(d.description)}\n"
                   f"examples = [{', '.join(_string(e) for e in d.examples)}]\n\n" for d in taxonomy)


def _string(text: str) -> str:
    # A JSON string is a TOML basic string when non-ASCII stays literal (TOML has no surrogate escapes).
    return json.dumps(text, ensure_ascii=False)
