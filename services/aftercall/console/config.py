"""The [console] section: `aftercall serve console`, the review console in a browser."""

from __future__ import annotations

from dataclasses import dataclass

from aftercall.core.config import Section, parse_address, setting


@dataclass(frozen=True)
class ConsoleConfig(Section):
    """`aftercall serve console`: the review console in a browser. HTTPS (and client certificates) with the
    server.tls_* files, like every listener; plain HTTP only on loopback unless server.allow_plaintext_remote."""

    # Where the console is served, HOST:PORT: HTTPS with the server.tls_* files; plain HTTP only on loopback
    # unless server.allow_plaintext_remote.
    listen: str = "127.0.0.1:8443"
    # How long a sign-in lasts (the life of the session cookie); then the person signs in again.
    session_hours: float = setting(10.0, between=(0.1, 168.0))

    def validate(self) -> None:
        parse_address(self.listen, "config console.listen")
