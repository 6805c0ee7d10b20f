"""A summary as an HTML form and back: one widget per editable field of the summary contract, built from its type
hints (a field added to the contract shows up here without a change), and the submitted form turned into the
fields a person changed, for `ReviewDesk.edit` (which checks them against the contract and re-redacts them).

Form names are paths: `resolution.status`, `follow_ups.2.due`, `sections.medication`. A list of texts is a text
area with one item per line; a list of records (follow-ups, entities) is one fieldset per item plus an empty one to
add; clearing every box of an item removes it.
"""

from __future__ import annotations

import dataclasses
import json
import types
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Union, get_args, get_origin, get_type_hints

from aftercall.core.errors import UserError
from aftercall.summarise.contract import EDITABLE, StoredSummary
from aftercall.summarise.taxonomy import UNKNOWN, Disposition

_HINTS = get_type_hints(StoredSummary)
# Free text long enough to want a text area rather than a one-line box.
_LONG_TEXT = {"reason_for_contact", "issue", "narrative", "detail", "reason", "action"}
_BLANK_ITEMS = 1  # empty fieldsets offered under a list of records, to add an item


@dataclass
class Widget:
    kind: str  # text, textarea, lines, select, group
    name: str  # the form field's name (a path)
    label: str
    value: Any = ""
    choices: tuple[tuple[str, str], ...] = ()  # (value, shown) for a select
    children: list["Widget"] = field(default_factory=list)
    evidence: tuple[int, ...] = ()  # transcript turns the point rests on


def _optional(hint: Any) -> Any | None:
    if get_origin(hint) in (Union, types.UnionType):
        rest = [a for a in get_args(hint) if a is not type(None)]
        return rest[0] if len(rest) == 1 else None
    return None


def _label(name: str) -> str:
    return name.rsplit(".", 1)[-1].replace("_", " ").capitalize()


def _turns(evidence: Any) -> tuple[int, ...]:
    """Every turn index in an evidence entry (an index, or lists of them for a list field's items)."""
    if isinstance(evidence, bool):
        return ()
    if isinstance(evidence, int):
        return (evidence,)
    if isinstance(evidence, list):
        return tuple(sorted({turn for item in evidence for turn in _turns(item)}))
    return ()


def summary_widgets(summary: dict[str, Any], taxonomy: tuple[Disposition, ...]) -> list[Widget]:
    evidence = summary.get("evidence") or {}
    widgets = []
    for key in EDITABLE:
        if key == "sections" and not summary.get("sections"):
            continue  # no template sections for this call's queue
        if key == "disposition":
            widget = _disposition_widget(summary.get(key) or {}, taxonomy)
        else:
            widget = _widget(key, _HINTS[key], summary.get(key), evidence.get(key))
        widget.evidence = _turns(evidence.get(key))
        widgets.append(widget)
    return widgets


def _disposition_widget(value: dict[str, Any], taxonomy: tuple[Disposition, ...]) -> Widget:
    codes = [(d.code, f"{d.code}: {d.label}") for d in taxonomy]
    current = value.get("code", UNKNOWN)
    if current not in {code for code, _ in codes}:
        codes.append((current, current))  # UNKNOWN, or a code from before the taxonomy changed
    return Widget("select", "disposition.code", "Disposition", current, tuple(codes))


def _widget(name: str, hint: Any, value: Any, evidence: Any = None) -> Widget:
    inner = _optional(hint)
    if inner is not None:
        hint = inner
    if get_origin(hint) is Literal:
        # An item still to be added starts with nothing chosen, so that leaving it empty adds nothing.
        unset = (("", "-"),) if value is None else ()
        return Widget("select", name, _label(name), value or "", unset + tuple((c, c) for c in get_args(hint)))
    if hint is bool:
        return Widget("select", name, _label(name), "yes" if value else "no", (("yes", "yes"), ("no", "no")))
    if hint is str:
        kind = "textarea" if name.rsplit(".", 1)[-1] in _LONG_TEXT else "text"
        return Widget(kind, name, _label(name), value or "")
    if get_origin(hint) is list and get_args(hint)[0] is str:
        return Widget("lines", name, _label(name), "\n".join(value or []))
    if get_origin(hint) is list:
        item_hint, items = get_args(hint)[0], list(value or [])
        per_item = evidence if isinstance(evidence, list) else []
        children = []
        for index, item in enumerate([*items, *([None] * _BLANK_ITEMS)]):
            child = _widget(f"{name}.{index}", item_hint, item)
            child.label = f"{_label(name)} {index + 1}" if item is not None else f"Add to {_label(name).lower()}"
            child.evidence = _turns(per_item[index]) if index < len(per_item) else ()
            children.append(child)
        return Widget("group", name, _label(name), children=children)
    if get_origin(hint) is dict:  # sections: the template's names are fixed, their sentences editable
        return Widget("group", name, _label(name), children=[
            Widget("lines", f"{name}.{key}", key.replace("_", " ").capitalize(), "\n".join(lines))
            for key, lines in (value or {}).items()])
    if dataclasses.is_dataclass(hint):
        hints = get_type_hints(hint)
        return Widget("group", name, _label(name), children=[
            _widget(f"{name}.{f.name}", hints[f.name], (value or {}).get(f.name))
            for f in dataclasses.fields(hint) if hints[f.name] is not float])  # a confidence is not a person's
    raise TypeError(f"no form widget for {name}")  # a contract type this module does not know yet


def changed_fields(summary: dict[str, Any], form: Mapping[str, str], taxonomy: tuple[Disposition, ...]) -> str:
    """The editable fields whose submitted value differs from the summary's, as the JSON `ReviewDesk.edit` takes
    (a field the form does not hold is unchanged); raises UserError when nothing changed."""
    changed: dict[str, Any] = {}
    for key in EDITABLE:
        if not any(name == key or name.startswith(key + ".") for name in form):
            continue  # not on the form that was sent: left as it is
        if key == "disposition":
            code = form.get("disposition.code", "").strip()
            if code and code != (summary.get("disposition") or {}).get("code"):
                label = next((d.label for d in taxonomy if d.code == code), None)
                changed[key] = {"code": code, "label": label}
            continue
        if key == "sections" and not summary.get("sections"):
            continue
        value = _parse(key, _HINTS[key], form, summary.get(key))
        if value != summary.get(key) and not (value in (None, [], "") and summary.get(key) in (None, [], "")):
            changed[key] = value
    if not changed:
        raise UserError("nothing was changed")
    return json.dumps(changed, ensure_ascii=False)


def _blank(value: Any) -> bool:
    return value in (None, "", []) or (isinstance(value, dict) and all(
        _blank(v) or isinstance(v, (bool, float)) for v in value.values()))


def _parse(name: str, hint: Any, form: Mapping[str, str], current: Any) -> Any:
    optional = _optional(hint)
    hint = optional or hint
    if get_origin(hint) is Literal or hint is str:
        text = form.get(name, "").strip()
        return None if optional is not None and not text else text
    if hint is bool:
        return form.get(name, "no") == "yes"
    if get_origin(hint) is list and get_args(hint)[0] is str:
        return [line.strip() for line in form.get(name, "").splitlines() if line.strip()]
    if get_origin(hint) is list:
        items = []
        for index in range(len(current or []) + _BLANK_ITEMS):
            item = _parse(f"{name}.{index}", get_args(hint)[0], form, None)
            if not _blank(item):
                items.append(item)
        return items
    if get_origin(hint) is dict:
        return {key: _parse(f"{name}.{key}", list[str], form, None) for key in (current or {})}
    if dataclasses.is_dataclass(hint):
        hints = get_type_hints(hint)
        record = {f.name: _parse(f"{name}.{f.name}", hints[f.name], form, None)
                  for f in dataclasses.fields(hint) if hints[f.name] is not float}
        return None if optional is not None and _blank(record) else record
    raise TypeError(f"no form widget for {name}")
