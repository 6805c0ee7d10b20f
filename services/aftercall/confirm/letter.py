"""The confirmation letter: drafted from an approved summary through the site's template (Jinja2, sandboxed), edited
by the agent, and checked again for sensitive values before it is sent.

A template is given these variables (a site's own template, smtp.template_file, as much as the shipped one):

    call_date          "14 March 2026" (the appliance's time zone), or None when the call's start is unknown
    reason, issue      why the customer called and the problem, as the summary says them ("" when nothing is left)
    actions_taken      what was done in the call (list of str)
    resolution         where things stand (str), and resolution_status: resolved, pending, escalated or unresolved
    decisions          what the organisation decided (list of str)
    action_items       what happens next, each with owner ("we will" or "you will"), action, due (the phrase said,
                       "by Friday", or None) and team (the team named in the call, or None)

The agent's id and the call id are internal and never given. Nor is any redacted value: a sentence or an item that
carries a redaction placeholder is left out of the letter entirely.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from aftercall.confirm.config import SmtpConfig
from aftercall.core.errors import ConfigError, StateError, UserError
from aftercall.redact import Redactor
from aftercall.redact.rules import RULES
from aftercall.review.store import APPROVED, StoredSummary

DEFAULT_TEMPLATE = Path(__file__).with_name("default_letter.txt")
# A letter template is a page of text; the cap keeps a wrong file (a log, a binary) from being compiled.
MAX_TEMPLATE_BYTES = 64 * 1024
# A confirmation is a page or two; every character sent is run through the redactor first.
MAX_LETTER_CHARS = 20_000
MAX_SUBJECT_CHARS = 200
# The redactor's placeholders, from its rule table: "[NAME]", "[CARD]", and a card's "[CARD ****0366]".
_KINDS = "|".join(re.escape(rule.placeholder.strip("[]")) for rule in RULES)
REDACTED = re.compile(rf"\[(?P<kind>{_KINDS})(?: \*{{4}}\d{{4}})?\]")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")
_OWNER_WORDS = {"agent": "we will", "organisation": "we will", "customer": "you will"}
# Every variable a template is given, with a value of its type: a template is rendered with these once at load, so a
# misspelt variable or a forbidden construct fails at start-up rather than on an agent's first letter.
_SAMPLE_VARIABLES: dict[str, Any] = {
    "call_date": "14 March 2026", "reason": "A reason.", "issue": "An issue.", "actions_taken": ["An action."],
    "resolution": "A resolution.", "resolution_status": "pending", "decisions": ["A decision."],
    "action_items": [{"owner": "we will", "action": "An action", "due": "by Friday", "team": "a team"}],
}


@dataclass(frozen=True)
class Letter:
    subject: str
    body: str

    def __post_init__(self) -> None:
        # The subject becomes a mail header: one line, or it could add headers of its own.
        if not self.subject.strip() or len(self.subject) > MAX_SUBJECT_CHARS or any(c < " " for c in self.subject):
            raise UserError(f"the subject must be one line of 1 to {MAX_SUBJECT_CHARS} characters")


class _LetterEnvironment(SandboxedEnvironment):
    """The sandbox keeps a template away from Python's internals, not from arithmetic that takes the memory or the
    CPU ("{{ 'x' * 10**9 }}"); a letter needs neither operator, so both are refused."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        raise SecurityError(f"a letter template may not use {operator}")


@dataclass(frozen=True)
class LetterTemplate:
    template: jinja2.Template
    subject: str
    origin: str  # the file it came from, for error messages

    @classmethod
    def load(cls, config: SmtpConfig) -> "LetterTemplate":
        """The site's template (smtp.template_file) or the shipped one, compiled and tried once with sample values;
        ConfigError naming smtp.template_file (and the line) when it is unusable."""
        path = Path(config.template_file) if config.template_file else DEFAULT_TEMPLATE
        try:
            with path.open("rb") as file:
                source = file.read(MAX_TEMPLATE_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"config smtp.template_file: cannot read {path} ({exc.strerror})") from exc
        if len(source) > MAX_TEMPLATE_BYTES:
            raise ConfigError(f"config smtp.template_file: {path} is larger than {MAX_TEMPLATE_BYTES // 1024} KiB; "
                              "a letter template is a page of text")
        try:
            text = source.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config smtp.template_file: {path} is not UTF-8 text ({exc.reason} at byte "
                              f"{exc.start})") from None
        environment = _LetterEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, trim_blocks=True,
                                         lstrip_blocks=True, keep_trailing_newline=True,
                                         finalize=lambda value: "" if value is None else value)
        try:
            template = environment.from_string(text)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(f"config smtp.template_file: {path} line {exc.lineno}: {exc.message}") from None
        try:
            Letter(config.subject, "")
        except UserError as exc:
            raise ConfigError(f"config smtp.subject: {exc}") from None
        loaded = cls(template, config.subject, str(path))
        loaded.render(_SAMPLE_VARIABLES)
        return loaded

    def render(self, variables: Mapping[str, Any]) -> str:
        try:
            return self.template.render(variables)
        except Exception as exc:  # the template's own fault: an unknown variable, a forbidden attribute, 1 / 0, ...
            raise ConfigError(f"config smtp.template_file: {self.origin}: {exc}") from None


def require_approved(stored: StoredSummary) -> None:
    """A confirmation tells the customer what was agreed: only a summary a person approved says that."""
    if stored.state != APPROVED:
        raise StateError(f"the summary of call {stored.call_id!r} is {stored.state}, not approved: a confirmation "
                         "letter is drafted and sent only from an approved summary")


def draft_letter(template: LetterTemplate, stored: StoredSummary) -> Letter:
    """The letter for an approved summary, for the agent to edit before it is sent."""
    require_approved(stored)
    return Letter(template.subject, template.render(letter_variables(stored.summary)))


def letter_variables(summary: Mapping[str, Any]) -> dict[str, Any]:
    """What a template is given (see the module's docstring), with every redacted value left out."""
    resolution = summary.get("resolution") or {}
    action_items = [
        {"owner": _OWNER_WORDS[item["owner"]], "action": item["action"], "due": item.get("due"),
         "team": item.get("team")}
        for item in summary.get("follow_ups") or []
        # An item is one promise: without its redacted part it would say something else, so it goes whole.
        if not any(REDACTED.search(item.get(key) or "") for key in ("action", "due", "team"))]
    return {"call_date": _call_date(summary),
            "reason": _without_redacted(summary.get("reason_for_contact")),
            "issue": _without_redacted(summary.get("issue")),
            "actions_taken": _items_without_redacted(summary.get("actions_taken")),
            "resolution": _without_redacted(resolution.get("detail")),
            "resolution_status": resolution.get("status", ""),
            "decisions": _items_without_redacted(summary.get("decisions")),
            "action_items": action_items}


def _without_redacted(text: str | None) -> str:
    """`text` without the sentences that carry a redaction placeholder: "[CARD ****0366]" means nothing to a
    customer, and the value behind it is never available to put back (by design), so the sentence is dropped."""
    sentences = _SENTENCE_BREAK.split((text or "").strip())
    return " ".join(sentence for sentence in sentences if sentence and not REDACTED.search(sentence))


def _items_without_redacted(items: list[str] | None) -> list[str]:
    return [kept for kept in (_without_redacted(item) for item in items or []) if kept]


def _call_date(summary: Mapping[str, Any]) -> str | None:
    started = (summary.get("call") or {}).get("started_at")
    if not started:
        return None
    try:
        when = datetime.datetime.fromisoformat(started.replace("Z", "+00:00"))
    except ValueError:
        return None
    # Stored in UTC; the customer knows the call by the local date (the appliance runs in the site's time zone).
    local = when.astimezone() if when.tzinfo else when
    return f"{local.day} {local:%B %Y}"


def check_outgoing(letter_text: str, redactor: Redactor) -> None:
    """The letter (or its subject) as the agent will send it: UserError, naming the kinds found and never the values,
    while it holds a value the redactor finds or a redaction placeholder, so the agent takes them out."""
    if not letter_text.strip():
        raise UserError("the letter is empty")
    if len(letter_text) > MAX_LETTER_CHARS:
        raise UserError(f"the letter is {len(letter_text)} characters long, more than {MAX_LETTER_CHARS}")
    kinds = {match["kind"] for match in REDACTED.finditer(letter_text)}
    _, found = redactor.redact_text(letter_text)
    kinds.update(kind for kind, count in found.items() if count)
    if kinds:
        raise UserError(f"the letter holds sensitive values or redaction placeholders ({', '.join(sorted(kinds))}): "
                        "take them out and send it again")
