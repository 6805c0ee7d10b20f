"""A person's edit of a summary: only the fields a person may change, each checked against the summary contract,
and every string re-checked for sensitive values (an agent can type a card number as easily as a caller says one)."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from aftercall.core.documents import parse_json
from aftercall.core.errors import UserError
from aftercall.pipeline import recheck_summary
from aftercall.redact import Redactor
from aftercall.summarise.contract import check_field

# Every string of an edit is re-redacted while the Edit call waits: a summary's fields are a few kB, so this bounds
# that work (and a hostile document) well above any real edit.
_MAX_EDIT_BYTES = 64 * 1024


def _checked(key: str, value: Any) -> Any:
    """A field as a person sent it, checked against the summary contract. A disposition a person picks carries
    full confidence and needs no label."""
    if key == "disposition" and isinstance(value, dict):
        value = {"label": None, **value, "confidence": 1.0}
    return check_field(key, value)


def apply_edit(summary: dict[str, Any], fields_json: str, redactor: Redactor) -> dict[str, Any]:
    size = len(fields_json.encode("utf-8"))
    if size > _MAX_EDIT_BYTES:
        raise UserError(f"fields_json is {size} bytes, more than {_MAX_EDIT_BYTES} (an edit holds a summary's "
                        "fields)")
    fields = parse_json(fields_json, "fields_json")
    if not isinstance(fields, dict) or not fields:
        raise UserError("fields_json must be a JSON object with at least one field")
    checked, found = recheck_summary({key: _checked(key, value) for key, value in fields.items()},
                                     redactor, ())
    edited = {**copy.deepcopy(summary), **checked}
    if found:
        counts = Counter({r["type"]: r["count"] for r in edited.get("redactions", [])}) + found
        edited["redactions"] = [{"type": k, "count": v} for k, v in sorted(counts.items())]
    return edited
