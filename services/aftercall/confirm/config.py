"""The [smtp] section: the mail relay the customer's written confirmation is sent through."""

from __future__ import annotations

from dataclasses import dataclass

from aftercall.core.config import Section, is_loopback, setting
from aftercall.core.errors import ConfigError


@dataclass(frozen=True)
class SmtpConfig(Section):
    """The site's mail relay, for the written confirmation an agent sends the customer. Empty host: no e-mail."""

    # The relay's host name or address; empty: no confirmation e-mails.
    host: str = ""
    # The relay's SMTP port (587: mail submission).
    port: int = setting(587, between=(1, 65535))
    # STARTTLS before authenticating or sending (refused when the relay does not offer it); false only on loopback.
    starttls: bool = True
    # Trust this CA for the relay's certificate; empty: the system's CAs.
    ca_file: str = ""
    # Empty: no authentication. The password is read from a 0600 file, never written here.
    username: str = ""
    # The 0600 file holding username's password.
    password_file: str = ""
    # The letters' From: address (needed with host); its domain also names their Message-IDs.
    from_address: str = ""
    # The letter (a Jinja2 template, sandboxed); empty: the one shipped with aftercall.
    template_file: str = ""
    # The letter's subject line, which the agent may change before sending.
    subject: str = "Your call with us"
    # The longest wait for the relay at each step of sending a letter.
    timeout_s: float = setting(30.0, between=(1.0, 600.0))

    def validate(self) -> None:
        if not self.host:
            return
        if "@" not in self.from_address:
            raise ConfigError("config smtp.from_address: an e-mail address is needed to send confirmations")
        if bool(self.username) != bool(self.password_file):
            raise ConfigError("config smtp.username: authentication needs smtp.password_file too (and the reverse)")
        if not self.starttls and not is_loopback(self.host):
            raise ConfigError(f"config smtp.starttls: the relay {self.host} is not on loopback; letters and the "
                              "password would cross the network in the clear")
