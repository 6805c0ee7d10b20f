"""`--format text`: the wrap-up note an agent can paste into the CRM."""

from __future__ import annotations

import textwrap
from typing import Any


def _wrap(text: str, indent: str = "  ") -> str:
    return textwrap.fill(text, width=100, initial_indent=indent, subsequent_indent=indent)


def render_text(summary: dict[str, Any]) -> str:
    lines = [f"Call {summary['call_id']}"]
    disposition = summary["disposition"]
    label = disposition.get("label", "")
    lines.append(f"Disposition: {disposition['code']}{f' ({label})' if label else ''}, "
                 f"confidence {disposition['confidence']:.2f}")
    resolution = summary["resolution"]
    lines.append(f"Status: {resolution['status']}   Sentiment: {summary['sentiment']['start']} -> "
                 f"{summary['sentiment']['end']}")
    if summary["escalation"]["required"]:
        lines.append(f"ESCALATION: {summary['escalation']['reason']}")
    lines += ["", "Summary:", _wrap(summary["narrative"]), "", "Reason for contact:", _wrap(summary["reason_for_contact"])]
    if summary["issue"] != summary["reason_for_contact"]:
        lines += ["Issue:", _wrap(summary["issue"])]
    if summary["actions_taken"]:
        lines.append("Actions taken:")
        lines += [_wrap(f"- {a}") for a in summary["actions_taken"]]
    lines += ["Resolution:", _wrap(f"{resolution['status']}: {resolution['detail']}")]
    if summary["follow_ups"]:
        lines.append("Follow-ups:")
        for item in summary["follow_ups"]:
            due = f" (due: {item['due']})" if item["due"] else ""
            lines.append(_wrap(f"- [{item['owner']}] {item['action']}{due}"))
    if summary["entities"]:
        lines.append("Entities: " + "; ".join(f"{e['type']}={e['value']}" for e in summary["entities"]))
    if summary["redactions"]:
        lines.append("Redacted: " + ", ".join(f"{r['type']} x{r['count']}" for r in summary["redactions"]))
    return "\n".join(lines) + "\n"
