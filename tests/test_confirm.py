"""The customer's confirmation e-mail: the letter drafted from an approved summary, the agent's letter checked again,
and its delivery through a real SMTP relay on loopback (aiosmtpd, STARTTLS and AUTH required)."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import ssl
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Iterator

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from prometheus_client import CollectorRegistry

from aftercall.confirm.config import SmtpConfig
from aftercall.confirm.letter import MAX_TEMPLATE_BYTES, Letter, LetterTemplate, check_outgoing, draft_letter
from aftercall.confirm.mailer import Mailer, send_confirmation
from aftercall.core.database import open_store_database
from aftercall.core.errors import BackendUnavailableError, ConfigError, StateError, UserError
from aftercall.redact import Redactor
from aftercall.review.metrics import ReviewMetrics
from aftercall.review.store import StoredSummary, SummaryStore
from aftercall.vault.envelope import Vault
from aftercall.vault.keys import KeyRing
from conftest import free_port

RELAY_USER, RELAY_PASSWORD = "aftercall", "relay-s3cret"
SENDER = "Northgate Customer Care <care@northgate.example>"
CUSTOMER = "daniel.h@example.org"
SUMMARY = {
    "call_id": "PBX-call-8812",
    "reason_for_contact": "The customer's debit card was stolen. It was taken from a bag in [LOCATION].",
    "issue": "There is a payment of 200 pounds the customer does not recognise.",
    "actions_taken": ["The agent cancelled the card [CARD ****0366].", "The agent raised a fraud claim."],
    "resolution": {"status": "pending", "detail": "The fraud team will look into the payment."},
    "follow_ups": [
        {"owner": "organisation", "action": "Send a new card", "due": "within five working days", "team": None},
        {"owner": "customer", "action": "Check the statement for other payments", "due": None, "team": None},
        {"owner": "organisation", "action": "Call back about the claim", "due": "by Friday",
         "team": "the fraud team"},
        {"owner": "agent", "action": "Ring [NAME] on [PHONE]", "due": "by Monday", "team": None},
    ],
    "decisions": ["Refunded the 200 pound payment while the fraud claim is open."],
    "narrative": "Mr [NAME] called because his card was stolen.",
    "disposition": {"code": "CARD_LOST_STOLEN", "confidence": 0.9, "label": "Card lost or stolen"},
    "call": {"started_at": "2026-03-14T12:05:00+00:00", "duration_s": 312.0, "participants": []},
    "transcript": [{"speaker": "customer", "text": "My card was stolen.", "start": 0.0, "end": 1.5}],
}


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


@pytest.fixture
def store(tmp_path) -> Iterator[SummaryStore]:
    db = open_store_database("", tmp_path / "data")
    yield SummaryStore(db, Vault(KeyRing.create(tmp_path / "keys.json")))
    db.close()


def _stored(store: SummaryStore, approved: bool = True) -> StoredSummary:
    store.create_draft(SUMMARY, {"agent_id": "agent-4711"}, True, "aftercall")
    if approved:
        store.approve(SUMMARY["call_id"], 1, "supervisor.sam")
    return store.get(SUMMARY["call_id"])


def _metrics() -> tuple[ReviewMetrics, CollectorRegistry]:
    registry = CollectorRegistry()
    return ReviewMetrics(registry), registry


def _confirmations(registry: CollectorRegistry, outcome: str) -> float:
    return registry.get_sample_value("aftercall_review_confirmations_total", {"outcome": outcome})


# -- the relay ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Received:
    recipients: list[str]
    content: bytes
    encrypted: bool
    authenticated: bool


class Inbox:
    """The relay's handler: keeps each message it accepts, with how its session was secured; refuses nobody@."""

    def __init__(self):
        self.messages: list[Received] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nobody@"):
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        # As a reader sees it: the wire's CRLF line ends as newlines.
        self.messages.append(Received(list(envelope.rcpt_tos), envelope.content.replace(b"\r\n", b"\n"),
                                      session.ssl is not None, session.authenticated))
        return "250 Message accepted"


def _authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    accepted = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        RELAY_USER.encode(), RELAY_PASSWORD.encode())
    return AuthResult(success=accepted, handled=False)  # not handled: aiosmtpd answers 535 itself


@contextmanager
def _relay(**smtp_parameters) -> Iterator[tuple[int, Inbox]]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), **smtp_parameters)
    controller.start()
    try:
        yield controller.port, inbox
    finally:
        controller.stop()


@pytest.fixture
def relay(pki) -> Iterator[tuple[int, Inbox]]:
    """A relay like a site's: STARTTLS before anything else (a certificate of the test CA), then AUTH."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(pki["server_cert"], pki["server_key"])
    with _relay(tls_context=tls, require_starttls=True, authenticator=_authenticate, auth_require_tls=True,
                auth_required=True) as running:
        yield running


@pytest.fixture
def inbox(relay) -> Inbox:
    return relay[1]


def _password_file(tmp_path, password: str = RELAY_PASSWORD, mode: int = 0o600, name: str = "smtp-password") -> str:
    path = tmp_path / name
    path.write_text(password + "\n")
    path.chmod(mode)
    return str(path)


@pytest.fixture
def smtp_config(relay, pki, tmp_path) -> SmtpConfig:
    return SmtpConfig(host="127.0.0.1", port=relay[0], ca_file=pki["ca"], username=RELAY_USER,
                      password_file=_password_file(tmp_path), from_address=SENDER, timeout_s=5.0)


# -- the letter -----------------------------------------------------------------------------------------------------
def test_the_default_letter_has_the_key_points_decisions_and_action_items(store, redactor):
    letter = draft_letter(LetterTemplate.load(SmtpConfig()), _stored(store))

    assert letter.subject == "Your call with us"
    body = letter.body
    assert body.startswith("Hello,\n\nThank you for speaking with us on 14 March 2026.")
    for point in ("The customer's debit card was stolen.", "a payment of 200 pounds",
                  "- The agent raised a fraud claim.", "Where things stand: The fraud team will look into the payment.",
                  "- Refunded the 200 pound payment while the fraud claim is open.",
                  "- We will: Send a new card (within five working days)\n",
                  "- You will: Check the statement for other payments\n",
                  "- We will (the fraud team): Call back about the claim (by Friday)\n"):
        assert point in body
    # Internal identifiers stay inside: the agent's id, the call id, the transcript.
    for internal in ("agent-4711", "PBX-call-8812", "supervisor.sam", "My card was stolen"):
        assert internal not in body
    check_outgoing(body, redactor)  # the draft as it stands can be sent


def test_a_sentence_or_item_with_a_redacted_value_is_left_out(store):
    body = draft_letter(LetterTemplate.load(SmtpConfig()), _stored(store)).body

    assert "[" not in body and "****0366" not in body
    assert "taken from a bag" not in body  # the reason's second sentence, not its first
    assert "cancelled the card" not in body
    # A promise is left out whole, not told without its redacted part.
    assert "Ring" not in body and "by Monday" not in body


def test_a_site_template_is_used(store, tmp_path):
    site_letter = tmp_path / "letter.txt"
    site_letter.write_text("About our call of {{ call_date }}:\n"
                           "{% for item in action_items %}{{ item.owner }}: {{ item.action }}\n{% endfor %}")
    config = SmtpConfig(template_file=str(site_letter), subject="Our call today")

    letter = draft_letter(LetterTemplate.load(config), _stored(store))

    assert letter == Letter("Our call today", "About our call of 14 March 2026:\nwe will: Send a new card\n"
                                              "you will: Check the statement for other payments\n"
                                              "we will: Call back about the claim\n")


@pytest.mark.parametrize(("source", "error"), [
    ("{% for item in action_items %}\n{{ item.action }\n", r"letter\.txt line 2: unexpected '}'"),
    ("Dear {{ customer_name }},", "'customer_name' is undefined"),
    ("{{ reason.__class__.__mro__ }}", "unsafe"),
    ("{{ 'x' * 1000000000 }}", r"may not use \*"),
    ("x" * (MAX_TEMPLATE_BYTES + 1), "larger than 64 KiB"),
])
def test_a_template_that_does_not_compile_or_run_is_a_config_error(tmp_path, source, error):
    site_letter = tmp_path / "letter.txt"
    site_letter.write_text(source)
    with pytest.raises(ConfigError, match=f"config smtp.template_file: .*{error}"):
        LetterTemplate.load(SmtpConfig(template_file=str(site_letter)))


def test_a_template_file_that_is_missing_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="config smtp.template_file: cannot read .*absent.txt"):
        LetterTemplate.load(SmtpConfig(template_file=str(tmp_path / "absent.txt")))


def test_a_summary_not_yet_approved_gets_no_letter(store):
    with pytest.raises(StateError, match="is draft, not approved"):
        draft_letter(LetterTemplate.load(SmtpConfig()), _stored(store, approved=False))


# -- sending --------------------------------------------------------------------------------------------------------
@pytest.mark.service
def test_the_letter_is_delivered_over_starttls_with_auth_and_audited(store, redactor, smtp_config, inbox):
    stored = _stored(store)
    letter = draft_letter(LetterTemplate.load(smtp_config), stored)
    body = letter.body.replace("Hello,", "Hello again,")  # the agent's edit
    metrics, registry = _metrics()

    message_id = send_confirmation(Mailer(smtp_config), store, redactor, metrics, "agent-4711", stored.call_id,
                                   CUSTOMER, letter.subject, body)

    [received] = inbox.messages
    assert received.encrypted and received.authenticated and received.recipients == [CUSTOMER]
    message = email.message_from_bytes(received.content, policy=email.policy.default)
    assert (message["From"], message["To"], message["Subject"]) == (SENDER, CUSTOMER, "Your call with us")
    assert message["Message-ID"] == message_id and message_id.endswith("@northgate.example>")
    assert message["Date"].datetime is not None
    assert message.get_content_type() == "text/plain"
    assert message.get_content().rstrip("\n") == body.rstrip("\n")
    entry = store.audit.entries(stored.call_id)[-1]
    assert (entry["action"], entry["actor"], entry["message_id"], entry["recipient_domain"]) == (
        "confirmation_sent", "agent-4711", message_id, "example.org")
    assert CUSTOMER not in json.dumps(store.audit.entries(stored.call_id))  # the domain only
    assert (_confirmations(registry, "sent"), _confirmations(registry, "failed")) == (1, 0)


@pytest.mark.service
@pytest.mark.parametrize(("typed", "kind", "value"), [
    ("We have cancelled the card 4111 1111 1111 1111 for you.", "CARD", "4111"),
    ("We have cancelled the card [CARD ****0366] for you.", "CARD", "0366"),
    ("We will also write to daniel.h@example.org about it.", "EMAIL", "daniel.h"),
    ("We checked your date of birth, 14/03/1982, on the call.", "DOB", "1982"),
])
def test_a_sensitive_value_typed_into_the_letter_is_refused_and_nothing_is_sent(store, redactor, smtp_config, inbox,
                                                                               typed, kind, value):
    stored = _stored(store)
    letter = draft_letter(LetterTemplate.load(smtp_config), stored)
    metrics, registry = _metrics()

    with pytest.raises(UserError, match=f"sensitive values or redaction placeholders \\(.*{kind}") as refused:
        send_confirmation(Mailer(smtp_config), store, redactor, metrics, "agent-4711", stored.call_id, CUSTOMER,
                          letter.subject, letter.body + "\n" + typed)

    assert value not in str(refused.value)
    assert inbox.messages == []
    assert "confirmation_sent" not in [e["action"] for e in store.audit.entries(stored.call_id)]
    assert (_confirmations(registry, "sent"), _confirmations(registry, "failed")) == (0, 0)


@pytest.mark.service
def test_a_summary_not_yet_approved_is_not_confirmed(store, redactor, smtp_config, inbox):
    stored = _stored(store, approved=False)
    with pytest.raises(StateError, match="not approved"):
        send_confirmation(Mailer(smtp_config), store, redactor, _metrics()[0], "agent-4711", stored.call_id,
                          CUSTOMER, "Your call with us", "Thank you for your call.")
    assert inbox.messages == []


@pytest.mark.service
@pytest.mark.parametrize("recipient", [
    f"{CUSTOMER}\r\nBcc: collector@evil.example", f"{CUSTOMER}\nBcc: collector@evil.example",
    f"{CUSTOMER}, collector@evil.example", f"Daniel <{CUSTOMER}>", "daniel.h@", "daniel.h.example.org",
    "daniel.h@localhost", "", "d" * 250 + "@example.org",
])
def test_a_recipient_that_is_not_one_plain_address_is_refused(smtp_config, inbox, recipient):
    with pytest.raises(UserError, match="must be one e-mail address"):
        Mailer(smtp_config).send(recipient, Letter("Your call with us", "Thank you for your call."))
    assert inbox.messages == []


def test_a_subject_of_more_than_one_line_is_refused():
    with pytest.raises(UserError, match="subject must be one line"):
        Letter("Your call\r\nBcc: collector@evil.example", "Thank you for your call.")


@pytest.mark.service
def test_a_relay_without_starttls_gets_nothing_in_the_clear(store, redactor, pki, tmp_path):
    stored = _stored(store)
    metrics, registry = _metrics()
    with _relay() as (port, inbox):
        config = SmtpConfig(host="127.0.0.1", port=port, ca_file=pki["ca"], username=RELAY_USER,
                            password_file=_password_file(tmp_path), from_address=SENDER, timeout_s=5.0)
        with pytest.raises(BackendUnavailableError, match="does not offer STARTTLS"):
            send_confirmation(Mailer(config), store, redactor, metrics, "agent-4711", stored.call_id, CUSTOMER,
                              "Your call with us", "Thank you for your call.")
    assert inbox.messages == []
    assert (_confirmations(registry, "sent"), _confirmations(registry, "failed")) == (0, 1)


@pytest.mark.service
def test_a_wrong_password_is_a_clear_config_error(smtp_config, inbox, tmp_path):
    config = replace(smtp_config, password_file=_password_file(tmp_path, "not-the-password", name="wrong-password"))
    with pytest.raises(ConfigError, match="smtp.password_file: the mail relay .* refused the login of 'aftercall'"):
        Mailer(config).send(CUSTOMER, Letter("Your call with us", "Thank you for your call."))
    assert inbox.messages == []


@pytest.mark.service
def test_a_recipient_the_relay_refuses_is_the_agents_to_correct(smtp_config, inbox):
    with pytest.raises(UserError, match=r"refused the recipient address \(SMTP 550\)") as refused:
        Mailer(smtp_config).send("nobody@example.org", Letter("Your call with us", "Thank you for your call."))
    assert "nobody" not in str(refused.value) and inbox.messages == []


@pytest.mark.service
def test_a_relay_certificate_of_another_ca_is_refused(smtp_config, inbox):
    with pytest.raises(ConfigError, match="smtp.ca_file: the certificate of the mail relay .* is not trusted"):
        Mailer(replace(smtp_config, ca_file="")).send(CUSTOMER, Letter("Your call with us", "Thanks."))
    assert inbox.messages == []


@pytest.mark.service
def test_a_relay_that_is_down_or_silent_is_unavailable(smtp_config):
    letter = Letter("Your call with us", "Thank you for your call.")
    with pytest.raises(BackendUnavailableError, match="cannot reach the mail relay .*Connection refused"):
        Mailer(replace(smtp_config, port=free_port())).send(CUSTOMER, letter)
    with socket.socket() as silent:  # accepts connections (the kernel does) and never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with pytest.raises(BackendUnavailableError, match="did not answer within 0.2 s"):
            Mailer(replace(smtp_config, port=silent.getsockname()[1], timeout_s=0.2)).send(CUSTOMER, letter)


def test_a_password_file_others_can_read_is_refused(tmp_path):
    config = SmtpConfig(host="127.0.0.1", username=RELAY_USER, password_file=_password_file(tmp_path, mode=0o640),
                        from_address=SENDER)
    with pytest.raises(ConfigError, match="config smtp.password_file: .* readable by other users .*chmod 600"):
        Mailer(config)
