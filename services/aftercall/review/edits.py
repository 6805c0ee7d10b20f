"""A person's edit of a summary: only the fields a person may change, each checked against the summary contract,
and every string re-checked for sensitive values (an agent can type a card number as easily as a caller says one)."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from aftercall.core.documents import parse_json, shown
from aftercall.core.errors import UserError
from aftercall.pipeline import recheck_summary
from aftercall.redact import Redactor

_MAX_TEXT = 4000
# Every string of an edit is re-redacted while the Edit call waits: a summary's fields are a few kB, so this bounds
# that work (and a hostile document) well above any real edit.
_MAX_EDIT_BYTES = 64 * 1024
_LEVELS = ("negative", "neutral", "positive")
_STATUSES = ("resolved", "pending", "escalated", "unresolved")
_OWNERS = ("agent", "customer", "organisation")


def _text(value: Any, where: str, nullable: bool = False) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise UserError(f"{where} must be a string of at most {_MAX_TEXT} characters")
    return value


def _choice(value: Any, where: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise UserError(f"{where} must be one of {', '.join(choices)}, got {shown(value)}")
    return value


def _object(value: Any, where: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict) or not set(keys) <= set(value):
        raise UserError(f"{where} must be an object with {', '.join(keys)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list) or len(value) > 100:
        raise UserError(f"{where} must be a list of at most 100 items")
    return value


def _check_field(key: str, value: Any) -> Any:
    if key in ("reason_for_contact", "issue", "narrative"):
        return _text(value, key)
    if key == "actions_taken":
        return [_text(v, f"actions_taken[{i}]") for i, v in enumerate(_list(value, key))]
    if key == "resolution":
        value = _object(value, key, ("status", "detail"))
        return {"status": _choice(value["status"], "resolution.status", _STATUSES),
                "detail": _text(value["detail"], "resolution.detail")}
    if key == "follow_ups":
        out = []
        for i, item in enumerate(_list(value, key)):
            item = _object(item, f"follow_ups[{i}]", ("owner", "action", "due"))
            out.append({"owner": _choice(item["owner"], f"follow_ups[{i}].owner", _OWNERS),
                        "action": _text(item["action"], f"follow_ups[{i}].action"),
                        "due": _text(item["due"], f"follow_ups[{i}].due", nullable=True)})
        return out
    if key == "sentiment":
        value = _object(value, key, ("start", "end"))
        return {"start": _choice(value["start"], "sentiment.start", _LEVELS),
                "end": _choice(value["end"], "sentiment.end", _LEVELS)}
    if key == "disposition":
        value = _object(value, key, ("code",))
        out = {"code": _text(value["code"], "disposition.code"), "confidence": 1.0}
        if "label" in value:
            out["label"] = _text(value["label"], "disposition.label")
        return out
    if key == "escalation":
        value = _object(value, key, ("required", "reason"))
        if not isinstance(value["required"], bool):
            raise UserError("escalation.required must be true or false")
        return {"required": value["required"], "reason": _text(value["reason"], "escalation.reason", nullable=True)}
    if key == "entities":
        return [{"type": _text(_object(e, f"entities[{i}]", ("type", "value"))["type"], f"entities[{i}].type"),
                 "value": _text(e["value"], f"entities[{i}].value")} for i, e in enumerate(_list(value, key))]
    raise UserError(f"{key} cannot be edited (editable: {', '.join(EDITABLE)})")


EDITABLE = ("reason_for_contact", "issue", "actions_taken", "resolution", "follow_ups", "sentiment", "disposition",
            "escalation", "entities", "narrative")


def apply_edit(summary: dict[str, Any], fields_json: str, redactor: Redactor) -> dict[str, Any]:
    size = len(fields_json.encode("utf-8"))
    if size > _MAX_EDIT_BYTES:
        raise UserError(f"fields_json is {size} bytes, more than {_MAX_EDIT_BYTES} (an edit holds a summary's "
                        "fields)")
    fields = parse_json(fields_json, "fields_json")
    if not isinstance(fields, dict) or not fields:
        raise UserError("fields_json must be a JSON object with at least one field")
    checked, found = recheck_summary({key: _check_field(key, value) for key, value in fields.items()},
                                     redactor, ())
    edited = {**copy.deepcopy(summary), **checked}
    if found:
        counts = Counter({r["type"]: r["count"] for r in edited.get("redactions", [])}) + found
        edited["redactions"] = [{"type": k, "count": v} for k, v in sorted(counts.items())]
    return edited
