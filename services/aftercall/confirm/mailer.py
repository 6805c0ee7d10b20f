"""Sending the confirmation through the site's mail relay (STARTTLS, authenticated), and `send_confirmation`, the
one call the console makes: approved summary, letter re-checked, sent, audited, counted.

Neither the letter nor the customer's address is ever put in an error or a log record: the relay's own replies can
quote the address, so errors carry its status code only.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import re
import smtplib
import ssl
from email.message import EmailMessage

from aftercall.confirm.config import SmtpConfig
from aftercall.confirm.letter import Letter, check_outgoing, require_approved
from aftercall.core.errors import BackendUnavailableError, ConfigError, UserError, disk_full_is_capacity
from aftercall.core.rpc import read_secret_file
from aftercall.redact import Redactor
from aftercall.review.metrics import ReviewMetrics
from aftercall.review.store import SummaryStore

logger = logging.getLogger(__name__)

# RFC 5321 bounds a path at 256 octets, so an address at 254.
_MAX_ADDRESS = 254
# One plain address: a dot-atom local part (RFC 5322's atext) and a DNS name with a top-level label. No display name,
# no list, no quoting, nothing outside ASCII (a relay may not speak SMTPUTF8): nothing that could add a recipient or
# a header past this check.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\.)+[A-Za-z]{{2,63}}")


def checked_recipient(address: str) -> str:
    """The customer's address as typed (spaces around it dropped), or UserError."""
    address = address.strip(" ")
    if len(address) > _MAX_ADDRESS or not _ADDRESS.fullmatch(address):
        raise UserError("the recipient must be one e-mail address such as name@example.com (no name, no second "
                        "address, no line breaks)")
    return address


class Mailer:
    """The site's relay (config smtp). Holds nothing that changes, and each letter gets its own connection: safe to
    call from several threads at once (asyncio.to_thread)."""

    def __init__(self, config: SmtpConfig):
        if not config.host:
            raise ConfigError("config smtp.host: no mail relay is configured, so confirmations cannot be sent")
        self._config = config
        self._relay = f"{config.host}:{config.port}"
        self._password = _read_password(config.password_file) if config.password_file else ""
        self._tls = _tls_context(config.ca_file) if config.starttls else None
        # Message-IDs under our mail domain rather than this host's name, which the customer has no need to see.
        self._domain = email.utils.parseaddr(config.from_address)[1].rpartition("@")[2]

    def send(self, recipient: str, letter: Letter) -> str:
        """Deliver `letter` to `recipient`; returns its Message-ID. Blocks for up to smtp.timeout_s per step."""
        message = self._message(checked_recipient(recipient), letter)
        try:
            with contextlib.closing(smtplib.SMTP(self._config.host, self._config.port,
                                                 timeout=self._config.timeout_s)) as relay:
                self._open_session(relay)
                relay.send_message(message)
                # The relay has the letter: a goodbye that fails must not report it unsent.
                with contextlib.suppress(OSError):  # smtplib's errors are OSErrors too
                    relay.quit()
        except smtplib.SMTPRecipientsRefused as exc:
            code = next(iter(exc.recipients.values()))[0]
            if code >= 500:
                raise UserError(f"the mail relay refused the recipient address (SMTP {code}): check it with the "
                                "customer") from None
            raise BackendUnavailableError(f"the mail relay {self._relay} put the recipient off for now (SMTP {code}); "
                                          "the letter was not sent, try again later") from None
        except smtplib.SMTPAuthenticationError as exc:
            raise ConfigError(f"config smtp.password_file: the mail relay {self._relay} refused the login of "
                              f"{self._config.username!r} (SMTP {exc.smtp_code}); check smtp.username and the "
                              "password") from None
        except smtplib.SMTPSenderRefused as exc:
            raise ConfigError(f"config smtp.from_address: the mail relay {self._relay} refused it as the sender "
                              f"(SMTP {exc.smtp_code})") from None
        except smtplib.SMTPResponseException as exc:  # its limits, its filters, a busy relay
            raise BackendUnavailableError(f"the mail relay {self._relay} answered SMTP {exc.smtp_code}; the letter "
                                          "was not sent") from None
        except ssl.SSLCertVerificationError as exc:
            raise ConfigError(f"config smtp.ca_file: the certificate of the mail relay {self._relay} is not trusted "
                              f"({exc.verify_message})") from exc
        except OSError as exc:  # refused or dropped connections, TLS failures, timeouts; smtplib's errors too
            # smtplib reports a reply that timed out as a disconnection, with the timeout as its context.
            if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
                raise BackendUnavailableError(f"the mail relay {self._relay} did not answer within "
                                              f"{self._config.timeout_s:g} s; the letter was not sent") from exc
            raise BackendUnavailableError(f"cannot reach the mail relay {self._relay} ({exc.strerror or exc}); the "
                                          "letter was not sent") from exc
        return message["Message-ID"]

    def _open_session(self, relay: smtplib.SMTP) -> None:
        """Greet, STARTTLS (refused when the relay does not offer it) and log in, before anything of the letter."""
        relay.ehlo()
        if self._tls is not None:  # smtp.starttls = false is allowed on loopback only (config validation)
            if not relay.has_extn("starttls"):
                raise BackendUnavailableError(f"the mail relay {self._relay} does not offer STARTTLS, which "
                                              "smtp.starttls requires: the letter was not sent in the clear")
            relay.starttls(context=self._tls)
            relay.ehlo()  # the relay's extensions again, as it offers them over TLS
        if self._config.username:
            if not relay.has_extn("auth"):
                raise ConfigError(f"config smtp.username: the mail relay {self._relay} offers no authentication "
                                  "(AUTH); leave smtp.username and smtp.password_file empty for it")
            relay.login(self._config.username, self._password)

    def _message(self, recipient: str, letter: Letter) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self._config.from_address
        message["To"] = recipient
        message["Subject"] = letter.subject
        message["Date"] = email.utils.formatdate(localtime=True)
        message["Message-ID"] = email.utils.make_msgid(domain=self._domain)
        message.set_content(letter.body)
        return message


def _read_password(path: str) -> str:
    try:
        password = read_secret_file(path, "smtp.password_file").decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"config smtp.password_file: {path} is not UTF-8 text") from None
    if not password:
        raise ConfigError(f"config smtp.password_file: {path} is empty")
    return password


def _tls_context(ca_file: str) -> ssl.SSLContext:
    """The relay's certificate checked against `ca_file` (or the system's CAs) and its host name."""
    try:
        context = ssl.create_default_context(cafile=ca_file or None)
    except OSError as exc:  # a missing file, or one that holds no certificate (ssl.SSLError)
        raise ConfigError(f"config smtp.ca_file: cannot load {ca_file} ({exc.strerror or exc})") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def send_letter(mailer: Mailer, redactor: Redactor, metrics: ReviewMetrics, recipient: str, subject: str,
                body: str) -> str:
    """The agent's letter re-checked and sent; its Message-ID. Blocking (the redactor and the relay) and free of the
    database, so a server runs it in a thread while its event loop keeps the store."""
    recipient = checked_recipient(recipient)
    letter = Letter(subject, body)
    check_outgoing(letter.subject, redactor)
    check_outgoing(letter.body, redactor)
    try:
        message_id = mailer.send(recipient, letter)
    except Exception:
        metrics.confirmations.labels(outcome="failed").inc()
        raise
    metrics.confirmations.labels(outcome="sent").inc()
    return message_id


def record_sent(store: SummaryStore, actor: str, call_id: str, recipient: str, message_id: str) -> None:
    """The audit entry of a confirmation the relay took (the customer's domain, not their address)."""
    logger.info("confirmation e-mail for call %s sent as %s", call_id, message_id)
    with disk_full_is_capacity(f"the confirmation was sent as {message_id}, but the data disk is full and its audit "
                               "entry could not be written"):
        store.audit.record(actor, "confirmation_sent", call_id, message_id=message_id,
                           recipient_domain=recipient.strip().rpartition("@")[2].lower())


def send_confirmation(mailer: Mailer, store: SummaryStore, redactor: Redactor, metrics: ReviewMetrics, actor: str,
                      call_id: str, recipient: str, subject: str, body: str) -> str:
    """Send the agent's letter for the approved summary of `call_id`, all in this thread; returns its Message-ID.
    The caller has checked that `actor` may act on the call."""
    require_approved(store.get(call_id))
    message_id = send_letter(mailer, redactor, metrics, recipient, subject, body)
    record_sent(store, actor, call_id, recipient, message_id)
    return message_id
