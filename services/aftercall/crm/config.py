"""The [crm] section: summaries pushed to the site's CRM as signed webhooks."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from aftercall.core.config import Section, is_loopback, setting
from aftercall.core.errors import ConfigError


@dataclass(frozen=True)
class CrmConfig(Section):
    """Summaries pushed to the site's CRM or ticketing system: a signed webhook per event, from a durable outbox."""

    # The receivers' URLs (https://, or http:// on loopback); each gets every event. Empty: no push.
    endpoints: tuple[str, ...] = ()
    # A 0600 file holding the shared secret the receivers check X-Aftercall-Signature (HMAC-SHA256) with.
    secret_file: str = ""
    # Which events are pushed: "approved" (a person approved the summary) and "draft" (the AI draft, once stored).
    events: tuple[str, ...] = ("approved",)
    # "SUMMARY_FIELD=CRM_FIELD": the name each summary field is sent under; fields not listed keep their names.
    field_map: tuple[str, ...] = ()
    # Only the mapped fields are sent (and the event's own keys); false: every field.
    mapped_only: bool = False
    # Delivery attempts before an event is a dead letter (shown in the console and the metrics, retried by hand).
    max_attempts: int = setting(8, between=(1, 1000))
    # The first retry waits this long, each next one twice as long, up to max_backoff_s.
    backoff_s: float = setting(2.0, between=(0.1, 3600.0))
    # The longest wait between two attempts.
    max_backoff_s: float = setting(600.0, between=(1.0, 86400.0))
    # The longest wait for a receiver to answer one webhook.
    timeout_s: float = setting(10.0, between=(1.0, 600.0))
    # Trust this CA for https:// receivers; empty: the system's CAs.
    ca_file: str = ""

    def validate(self) -> None:
        if self.endpoints and not self.secret_file:
            raise ConfigError("config crm.secret_file: the webhooks are signed; name the file holding the shared "
                              "secret")
        for url in self.endpoints:
            try:
                parts = urlsplit(url)
                host = parts.hostname
            except ValueError:
                host = None
            if parts.scheme not in ("https", "http") or not host:
                raise ConfigError(f"config crm.endpoints: {url!r} is not an http(s):// URL")
            if parts.scheme == "http" and not is_loopback(host):
                raise ConfigError(f"config crm.endpoints: {url!r} would send summaries in the clear; use https://")
        unknown = [event for event in self.events if event not in ("draft", "approved")]
        if unknown or not self.events:
            raise ConfigError(f"config crm.events: draft and/or approved, got {', '.join(self.events) or 'none'}")
        self.field_mapping()
        if self.max_backoff_s < self.backoff_s:
            raise ConfigError("config crm.max_backoff_s: must be at least crm.backoff_s")

    def field_mapping(self) -> dict[str, str]:
        """field_map as summary field -> CRM field name."""
        mapping: dict[str, str] = {}
        for entry in self.field_map:
            source, sep, target = (part.strip() for part in entry.partition("="))
            if not sep or not source or not target:
                raise ConfigError(f"config crm.field_map: {entry!r} must be SUMMARY_FIELD=CRM_FIELD")
            if source in mapping:
                raise ConfigError(f"config crm.field_map: {source!r} is mapped twice")
            mapping[source] = target
        if len(set(mapping.values())) != len(mapping):
            raise ConfigError("config crm.field_map: two summary fields map to one CRM field")
        return mapping
