"""The CRM push: the outbox written in the store's transactions, and the signed webhook delivered to a real receiver
on loopback that fails some attempts: retried with backoff, dead-lettered, retried by hand, resumed after a restart."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from aftercall.core.database import open_store_database
from aftercall.core.errors import ConfigError
from aftercall.core.logsetup import call_id_var
from aftercall.crm.config import CrmConfig
from aftercall.crm.metrics import CrmMetrics
from aftercall.crm.outbox import Outbox
from aftercall.crm.webhook import (EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookDelivery, read_secret,
                                   sign, verify_signature)
from aftercall.evaluation.scratch import free_port
from conftest import run_cli
from aftercall.review.store import SummaryStore
from aftercall.vault.envelope import Vault
from aftercall.vault.keys import KeyRing
from aftercall.vault.rotation import count_by_kek, rewrap_rows

SECRET = b"a-shared-secret-of-32-bytes-long"
ISSUE = "the customer's parrot Zanzibar-Quetzal-7731 ate the renewal letter"  # found nowhere on disk in the clear
NOWHERE = ("http://127.0.0.1:9/a", "http://127.0.0.1:9/b")  # receivers of tests that deliver nothing


class Receiver:
    """A CRM on 127.0.0.1 that checks every request's signature, then answers as the request's path says:

    /ok takes every event; /flaky answers 503 to the first two attempts at each event; /broken answers 400 while
    `rejecting` (echoing the request's body, as a careless receiver might); /hold keeps each request open while
    `holding` (until the test ends)."""

    def __init__(self):
        self.accepted: dict[str, list[dict]] = collections.defaultdict(list)  # path -> events taken, in order
        self.attempts: dict[tuple[str, str], list[float]] = collections.defaultdict(list)  # (path, event) -> times
        self.forged = 0  # requests whose signature or event id did not check out
        self.rejecting = True
        self.holding = True
        self.held = 0
        self.ended = asyncio.Event()
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        event = json.loads(body) if verify_signature(SECRET, request.headers, body) else {}
        if not event or event.get("event_id") != request.headers.get(EVENT_ID_HEADER):
            self.forged += 1
            return web.Response(status=401)
        path = request.match_info["path"]
        tries = self.attempts[(path, event["event_id"])]
        tries.append(time.monotonic())
        if path == "broken" and self.rejecting:
            return web.Response(status=400, body=body)
        if path == "flaky" and len(tries) <= 2:
            return web.Response(status=503)
        if path == "hold" and self.holding:
            self.held += 1
            await self.ended.wait()
            return web.Response(status=503)
        self.accepted[path].append(event)
        return web.Response(status=204)


async def _listen(crm: Receiver, tls: ssl.SSLContext | None = None) -> web.AppRunner:
    app = web.Application()
    app.router.add_post("/{path}", crm.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
    crm.port = runner.addresses[0][1]
    return runner


@pytest.fixture
async def receiver():
    crm = Receiver()
    runner = await _listen(crm)
    yield crm
    crm.ended.set()
    await runner.cleanup()


@dataclass
class Run:
    """One appliance run's store, outbox and (not yet started) delivery."""

    db: object
    vault: Vault
    store: SummaryStore
    outbox: Outbox
    delivery: WebhookDelivery
    metrics: CrmMetrics

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


@pytest.fixture
def backend() -> str:
    """Where the store lives; tests that should hold on PostgreSQL too parametrize it."""
    return "sqlite"


@pytest.fixture
def store_location(request, tmp_path, backend) -> tuple[str, Path]:
    """(server.database_url, where the store's bytes lie on disk)."""
    if backend == "postgresql":
        url, cluster = request.getfixturevalue("postgres_database")
        return url, Path(cluster)
    return "", tmp_path / "data"


@pytest.fixture
async def appliance(tmp_path, store_location):
    """Opens a run on the test's store (a restart is another call): its crm config is the arguments, with small
    backoffs so retries take a fraction of a second."""
    url = store_location[0]
    KeyRing.create(tmp_path / "keys.json")
    runs: list[Run] = []

    def open_run(data: str = "data", **crm) -> Run:
        metrics = CrmMetrics()
        db = open_store_database(url, tmp_path / data)
        vault = Vault(KeyRing.load(tmp_path / "keys.json"))
        config = CrmConfig(**{"secret_file": "unused", "backoff_s": 0.1, "max_backoff_s": 0.4, "timeout_s": 30.0,
                              **crm})
        store = SummaryStore(db, vault)
        outbox = Outbox(db, vault, config, metrics)
        store.subscribe(outbox.enqueue)
        run = Run(db, vault, store, outbox, WebhookDelivery(outbox, config, metrics, SECRET, poll_s=0.5), metrics)
        runs.append(run)
        return run

    yield open_run
    for run in runs:
        await run.delivery.stop()
        run.db.close()


def _summary(call_id: str) -> dict:
    return {"call_id": call_id, "reason_for_contact": "Renewal letter lost", "issue": ISSUE,
            "narrative": "The customer asked for a new renewal letter. The agent sent one.",
            "disposition": {"code": "RENEWAL_LETTER", "confidence": 0.91, "label": "Renewal letter"},
            "actions_taken": ["Sent a new renewal letter"]}


def _approve(run: Run, call_id: str = "call-1") -> None:
    run.store.create_draft(_summary(call_id), {"agent_id": "agent-7", "queue": "renewals", "tenant": "acme"}, True,
                           "ai")
    run.store.approve(call_id, 1, "supervisor-3")


def _claim_all(outbox: Outbox) -> list[dict]:
    return [json.loads(event.body) for endpoint in outbox.endpoints for event in outbox.claim_due(endpoint, 100, 60)]


async def _until(condition, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.01)


# -- the outbox ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.service)])
async def test_an_approval_and_its_events_commit_together_or_not_at_all(appliance):
    run = appliance(endpoints=NOWHERE)

    def failing(event, stored):
        if event == "approved":
            raise RuntimeError("a listener after the outbox fails")

    run.store.subscribe(failing)
    run.store.create_draft(_summary("call-1"), {}, True, "ai")
    assert run.outbox.counts() == {"pending": 0, "dead": 0}, "drafts are not pushed unless crm.events says so"
    with pytest.raises(RuntimeError, match="listener after the outbox"):
        run.store.approve("call-1", 1, "supervisor-3")
    assert run.store.get("call-1").state == "draft"
    assert run.outbox.counts() == {"pending": 0, "dead": 0}, "the failed approval's events were rolled back with it"

    sound = SummaryStore(run.db, run.vault)  # the same approval where every listener succeeds
    sound.subscribe(run.outbox.enqueue)
    sound.approve("call-1", 1, "supervisor-3")
    assert run.outbox.counts() == {"pending": 2, "dead": 0}
    events = _claim_all(run.outbox)
    assert len(events) == 2 and events[0] == events[1], "one payload, one event id, for every receiver"
    assert events[0]["type"] == "summary.approved" and events[0]["approved_by"] == "supervisor-3"


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.service)])
async def test_drafts_are_pushed_only_when_configured(appliance):
    approved_only = appliance(endpoints=NOWHERE[:1])
    approved_only.store.create_draft(_summary("call-1"), {}, True, "ai")
    assert approved_only.outbox.counts()["pending"] == 0
    both = appliance(endpoints=NOWHERE[:1], events=("draft", "approved"))
    both.store.create_draft(_summary("call-2"), {}, True, "ai")
    both.store.approve("call-2", 1, "supervisor-3")
    events = sorted(_claim_all(both.outbox), key=lambda event: event["type"])
    assert [(e["type"], e["state"], e["call_id"]) for e in events] == [("summary.approved", "approved", "call-2"),
                                                                       ("summary.draft", "draft", "call-2")]
    assert events[0]["event_id"] != events[1]["event_id"]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.service)])
async def test_the_payload_is_sealed_on_disk(appliance, store_location, backend):
    run = appliance(endpoints=NOWHERE[:1])
    _approve(run, "call-zanzibar-1")
    assert run.outbox.counts()["pending"] == 1
    if backend == "postgresql":
        run.db.execute("CHECKPOINT")  # the rows in the table's files as well as in the write-ahead log
    on_disk = b"".join(path.read_bytes() for path in store_location[1].rglob("*") if path.is_file())
    assert b"Zanzibar-Quetzal" not in on_disk and b"call-zanzibar-1" not in on_disk
    [event] = _claim_all(run.outbox)
    assert event["summary"]["issue"] == ISSUE and event["call_id"] == "call-zanzibar-1"  # it is there, sealed


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.service)])
async def test_events_of_a_receiver_no_longer_configured_become_dead_letters(appliance):
    before = appliance(endpoints=NOWHERE)
    _approve(before)
    after = appliance(endpoints=NOWHERE[1:])  # the site removed the first receiver
    assert after.outbox.counts() == {"pending": 1, "dead": 1}
    [dead] = after.outbox.dead_letters()
    assert dead.endpoint == NOWHERE[0] and "no longer in crm.endpoints" in dead.last_error
    assert after.outbox.retry(dead.event_id) == 0, "never sent to a receiver the site took away"
    assert after.outbox.discard(dead.event_id, NOWHERE[0]) == 1
    assert after.outbox.counts() == {"pending": 1, "dead": 0}
    assert after.sample("aftercall_crm_outbox_events", state="dead") == 0


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.service)])
async def test_erasing_a_call_deletes_its_events(appliance):
    run = appliance(endpoints=NOWHERE, events=("draft", "approved"))
    _approve(run, "call-1")
    _approve(run, "call-2")
    assert run.outbox.erase("call-1") == 4  # draft and approval, to two receivers
    assert {event["call_id"] for event in _claim_all(run.outbox)} == {"call-2"}
    assert run.sample("aftercall_crm_outbox_events", state="pending") == 4


def test_the_admin_commands_erase_and_rewrap_the_outbox_without_its_config(appliance, tmp_path):
    run = appliance(endpoints=NOWHERE, events=("draft", "approved"))
    _approve(run, "call-1")
    _approve(run, "call-2")
    admin = ["--data-dir", str(tmp_path / "data")]
    env = {"AFTERCALL_VAULT__KEY_FILE": str(tmp_path / "keys.json")}  # and no [crm]: the commands need none
    rotated = run_cli("keys", "rotate", *admin, env=env)
    assert rotated.returncode == 0, rotated.stderr
    active = KeyRing.load(tmp_path / "keys.json").active.id
    assert count_by_kek([run.outbox.sealed_rows]) == {active: 8}
    erased = run_cli("erase", "--call-id", "call-1", *admin, env=env)
    assert erased.returncode == 0, erased.stderr
    assert {event["call_id"] for event in _claim_all(run.outbox)} == {"call-2"}, "call-1's events went with it"


async def test_key_rotation_rewraps_the_outbox_and_a_payload_that_does_not_open_is_a_dead_letter(appliance):
    run = appliance(endpoints=NOWHERE[:1])
    _approve(run, "call-1")
    _approve(run, "call-2")
    fresh = run.vault.keys.rotate()
    assert rewrap_rows(run.vault, [(run.db, run.outbox.sealed_rows)]) == 2
    assert count_by_kek([run.outbox.sealed_rows]) == {fresh.id: 2}
    row = run.db.execute("SELECT event_id, payload FROM crm_outbox LIMIT 1").fetchone()
    altered = bytearray(row["payload"])
    altered[-5] ^= 0xFF
    run.db.execute("UPDATE crm_outbox SET payload = ? WHERE event_id = ?", (bytes(altered), row["event_id"]))
    [readable] = run.outbox.claim_due(NOWHERE[0], 10, 60)
    assert readable.event_id != row["event_id"] and json.loads(readable.body)["summary"]["issue"] == ISSUE
    [dead] = run.outbox.dead_letters()
    assert dead.event_id == row["event_id"] and dead.call_id == "" and "does not open" in dead.last_error


async def test_the_backoff_doubles_up_to_its_ceiling(appliance):
    run = appliance(endpoints=NOWHERE[:1], backoff_s=2.0, max_backoff_s=600.0, max_attempts=1000)
    assert [run.outbox.backoff_s(n) for n in (1, 2, 3, 9, 10, 1000)] == [2.0, 4.0, 8.0, 512.0, 600.0, 600.0]


# -- the webhook -----------------------------------------------------------------------------------------------------
def test_the_signature_matches_a_known_answer_and_the_check_refuses_the_rest():
    # openssl: printf '1700000000.evt-1.{"type":"summary.approved"}' | openssl dgst -sha256 -hmac <SECRET>
    assert sign(SECRET, "1700000000", "evt-1", b'{"type":"summary.approved"}') == \
        "v1=987b3bd061816c69a9f8efbf9c479c36a4b800408066e3c3785f4c29b808b663"
    body, sent = b'{"event_id":"evt-1"}', 1_700_000_000
    headers = {TIMESTAMP_HEADER: str(sent), EVENT_ID_HEADER: "evt-1",
               SIGNATURE_HEADER: sign(SECRET, str(sent), "evt-1", body)}
    assert verify_signature(SECRET, headers, body, now=sent + 299)
    assert verify_signature(SECRET, {name.lower(): value for name, value in headers.items()}, body, now=sent)
    assert not verify_signature(SECRET, headers, body, now=sent + 301), "a replay after the tolerance"
    assert not verify_signature(SECRET, headers, body + b" ", now=sent), "another body"
    assert not verify_signature(b"another-secret-of-32-bytes-long!", headers, body, now=sent)
    assert not verify_signature(SECRET, {**headers, EVENT_ID_HEADER: "evt-2"}, body, now=sent), "another event id"
    assert not verify_signature(SECRET, {**headers, TIMESTAMP_HEADER: "1.7e9"}, body, now=sent)
    assert not verify_signature(SECRET, {**headers, SIGNATURE_HEADER: "v1=é"}, body, now=sent)
    assert not verify_signature(SECRET, {TIMESTAMP_HEADER: str(sent), EVENT_ID_HEADER: "evt-1"}, body, now=sent)


def test_the_secret_file_must_be_owner_only_and_hold_a_secret(tmp_path):
    path = tmp_path / "crm.secret"
    path.write_bytes(SECRET + b"\n")
    path.chmod(0o600)
    assert read_secret(path) == SECRET
    path.chmod(0o640)
    with pytest.raises(ConfigError, match=r"crm.secret_file: .* open to other users \(mode 640\)"):
        read_secret(path)
    path.chmod(0o600)
    for content, problem in ((b"\n", "holds no secret"), (b"short", "holds too short a secret")):
        path.write_bytes(content)
        with pytest.raises(ConfigError, match=f"crm.secret_file: .* {problem}"):
            read_secret(path)
    with pytest.raises(ConfigError, match="crm.secret_file: cannot read .*missing"):
        read_secret(tmp_path / "missing")
    with pytest.raises(ConfigError, match="crm.secret_file: the webhooks are signed"):
        read_secret("")


@pytest.mark.service
@pytest.mark.parametrize("mapped_only", [False, True])
async def test_an_approval_is_delivered_signed_under_the_sites_field_names(appliance, receiver, mapped_only):
    run = appliance(endpoints=(receiver.url("ok"),), field_map=("narrative = description", "issue=subject"),
                    mapped_only=mapped_only)
    run.delivery.start()
    _approve(run)
    await _until(lambda: run.sample("aftercall_crm_deliveries_total", outcome="delivered") == 1, "delivered")
    [event] = receiver.accepted["ok"]
    assert receiver.forged == 0
    assert {key: event[key] for key in ("type", "call_id", "version", "state", "agent_id", "queue", "tenant",
                                        "disposition_code", "approved_by")} == {
        "type": "summary.approved", "call_id": "call-1", "version": 1, "state": "approved", "agent_id": "agent-7",
        "queue": "renewals", "tenant": "acme", "disposition_code": "RENEWAL_LETTER", "approved_by": "supervisor-3"}
    assert event["occurred_at"].endswith("Z")
    summary = event["summary"]
    assert summary["subject"] == ISSUE and summary["description"].startswith("The customer asked")
    if mapped_only:
        assert set(summary) == {"description", "subject"}
    else:
        assert "narrative" not in summary and "issue" not in summary
        assert summary["disposition"]["code"] == "RENEWAL_LETTER" and summary["call_id"] == "call-1"
    assert run.outbox.counts() == {"pending": 0, "dead": 0}, "a delivered event leaves the outbox"
    assert run.sample("aftercall_crm_outbox_events", state="pending") == 0


@pytest.mark.service
async def test_failed_attempts_are_retried_with_backoff_and_one_receiver_down_delays_no_other(appliance, receiver):
    refused = f"http://127.0.0.1:{free_port()}/refused"
    run = appliance(endpoints=(receiver.url("flaky"), receiver.url("hold"), refused, receiver.url("ok")),
                    max_attempts=3)
    run.delivery.start()
    _approve(run)
    await _until(lambda: receiver.accepted["ok"] and receiver.accepted["flaky"], "delivered to ok and to flaky")
    assert receiver.held == 1 and not receiver.accepted["hold"], "the receiver that hangs held up neither"
    event_id = receiver.accepted["ok"][0]["event_id"]
    assert receiver.accepted["flaky"][0]["event_id"] == event_id
    first, second, third = receiver.attempts[("flaky", event_id)]
    assert second - first >= 0.09 and third - second >= 0.19, "backoff_s (0.1 s), then twice that"

    await _until(lambda: run.sample("aftercall_crm_deliveries_total", outcome="delivered") == 2
                 and run.sample("aftercall_crm_deliveries_total", outcome="dead") == 1,
                 "delivered to ok and flaky, given up on the unreachable receiver")
    assert run.sample("aftercall_crm_deliveries_total", outcome="retry") == 4  # flaky twice, refused twice
    [dead] = run.outbox.dead_letters()
    assert (dead.endpoint, dead.event_id, dead.call_id, dead.attempts) == (refused, event_id, "call-1", 3)
    assert dead.last_error.startswith("ClientConnectorError")
    assert run.outbox.counts() == {"pending": 1, "dead": 1}  # the held attempt's event, still leased
    assert run.sample("aftercall_crm_outbox_events", state="dead") == 1


@pytest.mark.service
async def test_a_dead_letter_is_listed_without_the_summary_and_delivered_when_retried(appliance, receiver):
    run = appliance(endpoints=(receiver.url("broken"),), max_attempts=2)
    run.delivery.start()
    _approve(run)
    await _until(lambda: run.sample("aftercall_crm_deliveries_total", outcome="dead") == 1, "a dead letter")
    [dead] = run.outbox.dead_letters()
    assert (dead.event_type, dead.call_id, dead.attempts) == ("summary.approved", "call-1", 2)
    assert dead.last_error == "HTTP 400", "the status only, never the answer's body (this one echoes the summary)"
    assert run.sample("aftercall_crm_deliveries_total", outcome="retry") == 1
    assert run.sample("aftercall_crm_outbox_events", state="dead") == 1

    receiver.rejecting = False
    assert run.outbox.retry(dead.event_id) == 1
    assert run.outbox.retry(dead.event_id) == 0, "pending again, no longer dead"
    assert run.sample("aftercall_crm_outbox_events", state="dead") == 0
    await _until(lambda: receiver.accepted["broken"], "the retried event delivered")
    assert receiver.accepted["broken"][0]["event_id"] == dead.event_id
    assert len(receiver.attempts[("broken", dead.event_id)]) == 3
    await _until(lambda: run.outbox.counts() == {"pending": 0, "dead": 0}, "the outbox empty")


@pytest.mark.service
async def test_an_attempt_without_an_answer_times_out(appliance, receiver):
    run = appliance(endpoints=(receiver.url("hold"),), timeout_s=0.3, max_attempts=1)
    run.delivery.start()
    _approve(run)
    await _until(lambda: run.outbox.counts()["dead"] == 1, "the unanswered event a dead letter")
    assert run.outbox.dead_letters()[0].last_error == "no answer within 0.3 s"


@pytest.mark.service
async def test_a_restart_delivers_what_was_pending_and_what_was_in_flight(appliance, receiver):
    first = appliance(endpoints=(receiver.url("hold"),))
    first.delivery.start()
    _approve(first, "call-1")
    await _until(lambda: receiver.held == 1, "call-1's event in flight")
    await first.delivery.stop()  # the attempt in flight is abandoned, not counted
    _approve(first, "call-2")  # no delivery running: it waits in the outbox
    assert first.outbox.counts() == {"pending": 2, "dead": 0}
    first.db.close()

    receiver.holding = False
    second = appliance(endpoints=(receiver.url("hold"),))
    second.delivery.start()
    await _until(lambda: len(receiver.accepted["hold"]) == 2, "both events delivered after the restart")
    assert sorted(event["call_id"] for event in receiver.accepted["hold"]) == ["call-1", "call-2"]
    call_1 = next(event["event_id"] for event in receiver.accepted["hold"] if event["call_id"] == "call-1")
    assert len(receiver.attempts[("hold", call_1)]) == 2, "at least once: the same event id again"
    await _until(lambda: second.outbox.counts() == {"pending": 0, "dead": 0}, "the outbox empty")


@pytest.mark.service
async def test_https_receivers_are_trusted_through_crm_ca_file_only(appliance, pki, tmp_path):
    crm = Receiver()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(pki["server_cert"], pki["server_key"])
    runner = await _listen(crm, tls)
    endpoint = f"https://127.0.0.1:{crm.port}/ok"
    try:
        trusting = appliance(endpoints=(endpoint,), ca_file=pki["ca"])
        trusting.delivery.start()
        _approve(trusting)
        await _until(lambda: crm.accepted["ok"], "delivered over TLS")

        system_cas = appliance(data="elsewhere", endpoints=(endpoint,), max_attempts=1)
        system_cas.delivery.start()
        _approve(system_cas)
        await _until(lambda: system_cas.outbox.counts()["dead"] == 1, "refused: the receiver's CA is not trusted")
        assert system_cas.outbox.dead_letters()[0].last_error.startswith("ClientConnectorCertificateError")
        assert len(crm.accepted["ok"]) == 1
    finally:
        await runner.cleanup()
    with pytest.raises(ConfigError, match="crm.ca_file: cannot load"):
        WebhookDelivery(trusting.outbox, CrmConfig(ca_file=str(tmp_path / "missing.pem")), CrmMetrics(), SECRET)


@pytest.mark.service
async def test_info_logs_name_the_call_and_event_never_the_summary(appliance, receiver, caplog):
    seen: list[tuple[str, str]] = []  # (message, the call id the production handler would stamp on it)

    def remember(record: logging.LogRecord) -> bool:
        seen.append((record.getMessage(), call_id_var.get()))
        return True

    caplog.set_level(logging.INFO, logger="aftercall.crm")
    caplog.handler.addFilter(remember)
    run = appliance(endpoints=(receiver.url("ok"),))
    run.delivery.start()
    _approve(run)
    await _until(lambda: run.sample("aftercall_crm_deliveries_total", outcome="delivered") == 1, "delivered")
    [(message, call_id)] = [entry for entry in seen if "delivered" in entry[0]]
    assert receiver.accepted["ok"][0]["event_id"] in message and call_id == "call-1"
    logged = "\n".join(message for message, _ in seen)
    assert "Zanzibar" not in logged and "agent-7" not in logged and "acme" not in logged
