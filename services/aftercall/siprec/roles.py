"""Which recorded stream is the agent and which the customer. A site names its trunks in config, one string each:

    "NAME: source=ADDRESS[,ADDRESS...] [agent=label:LABEL | agent=aor:REGEX | agent=first | agent=second]"

`source` is the SBC's address or network (CIDR) the recording comes from. `agent=label:1` takes the stream with SDP
label 1; `agent=aor:^sip:[0-9]{4}@` the stream sent by the participant whose address matches (the metadata says who
sends what); `first`/`second` the m-line order. Without a matching trunk, or when the rule finds nothing, the first
stream is the agent's (the brief's stereo default). Cisco Built-in-Bridge legs need no rule: the near end is the
recorded phone, the agent."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from aftercall.core.errors import ConfigError
from aftercall.siprec.metadata import RecordingMetadata

@dataclass(frozen=True)
class TrunkRule:
    name: str
    sources: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    agent_by: str  # "label", "aor", "first" or "second"
    agent_value: str | None = None

    def matches(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.sources)


def parse_trunks(entries: tuple[str, ...] | list[str], key: str = "siprec.trunks") -> list[TrunkRule]:
    rules, names = [], set()
    for entry in entries:
        name, colon, rest = entry.partition(":")
        name = name.strip()
        if not colon or not re.fullmatch(r"[\w.-]+", name):
            raise ConfigError(f"config {key}: {entry!r} must start with 'NAME:'")
        if name in names:
            raise ConfigError(f"config {key}: trunk {name!r} is named twice")
        names.add(name)
        options = {}
        for item in rest.split():
            option, equals, value = item.partition("=")
            if not equals or option not in ("source", "agent") or option in options:
                raise ConfigError(f"config {key}: trunk {name!r}: {item!r} is not source=... or agent=... "
                                  "(each at most once)")
            options[option] = value
        if "source" not in options:
            raise ConfigError(f"config {key}: trunk {name!r} needs source=ADDRESS[,ADDRESS...]")
        try:
            sources = tuple(ipaddress.ip_network(s, strict=False) for s in options["source"].split(","))
        except ValueError as exc:
            raise ConfigError(f"config {key}: trunk {name!r}: {exc}") from None
        rules.append(TrunkRule(name, sources, *_agent_selector(options.get("agent", "first"), name, key)))
    return rules


def _agent_selector(value: str, name: str, key: str) -> tuple[str, str | None]:
    by, colon, argument = value.partition(":")
    if by in ("first", "second") and not colon:
        return by, None
    if by == "label" and argument:
        return by, argument
    if by == "aor" and argument:
        try:
            re.compile(argument)
        except re.error as exc:
            raise ConfigError(f"config {key}: trunk {name!r}: agent=aor:{argument!r} is not a valid pattern: {exc}") \
                from None
        return by, argument
    raise ConfigError(f"config {key}: trunk {name!r}: agent={value!r} must be label:LABEL, aor:REGEX, first or second")


def trunk_for(rules: list[TrunkRule], address: str) -> TrunkRule | None:
    return next((rule for rule in rules if rule.matches(address)), None)


def agent_stream(labels: list[str | None], metadata: RecordingMetadata | None, rule: TrunkRule | None) -> int:
    """Which of the recorded streams (their SDP labels, in m-line order) carries the agent's voice; the other is the
    customer's."""
    if rule is None or rule.agent_by == "first":
        return 0
    if rule.agent_by == "second":
        return 1 if len(labels) > 1 else 0
    if rule.agent_by == "label":
        return labels.index(rule.agent_value) if rule.agent_value in labels else 0
    pattern = re.compile(rule.agent_value or "")
    for index, label in enumerate(labels):
        sender = metadata.sender_of(label) if metadata is not None and label is not None else None
        if sender is not None and any(pattern.search(aor) for aor in sender.aors):
            return index
    return 0
