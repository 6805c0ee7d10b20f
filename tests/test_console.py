"""The review console: a real appliance serving it over HTTPS (the test PKI), real HTTP clients, and a real headless
Chromium driven by Playwright for what a person does: sign in, edit, see the evidence, approve with the keyboard."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import ssl
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from aftercall.app import start_appliance
from aftercall.config import Config
from aftercall.console.config import ConsoleConfig
from aftercall.core.config import ServerConfig
from aftercall.core.database import open_database
from aftercall.crm.config import CrmConfig
from aftercall.pipeline import Pipeline
from aftercall.review.store import SummaryStore
from aftercall.summarise.taxonomy import load_taxonomy
from aftercall.vault.config import AccessConfig, VaultConfig
from aftercall.vault.envelope import Vault
from aftercall.vault.keys import open_key_ring
from aftercall.vault.tokens import issue_token
from test_confirm import inbox, relay, smtp_config  # noqa: F401 - fixtures: a real SMTP relay
from test_crm import SECRET, Receiver, _listen, _until

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ACCESS = AccessConfig(agent=("agent.ann", "agent.bob"), supervisor=("supervisor.sam",), auditor=("auditor.ada",),
                      admin=("admin.al",), teams=("supervisor.sam: agent.ann",))


@pytest.fixture(scope="module")
def text_pipeline(summariser):
    return Pipeline(Config(), load_taxonomy(), summariser, transcriber_factory=lambda: None)


@pytest.fixture
async def site(tmp_path, pki, text_pipeline):
    """`await site(**sections)`: the appliance serving summaries and the console over TLS (client certificates
    optional), with config sections replaced (crm=CrmConfig(...)) and two agents' drafts summarised from the demo
    transcript. Returns (base URL, key ring, the appliance); stopped after the test."""
    started = []

    async def start(**sections):
        server = ServerConfig(tls_cert_file=pki["server_cert"], tls_key_file=pki["server_key"],
                              tls_client_ca_file=pki["ca"])
        config = dataclasses.replace(Config(), server=server, access=ACCESS,
                                     console=ConsoleConfig(listen="127.0.0.1:0"), **sections)
        appliance = await start_appliance(config, ("summaries", "console"), tmp_path / "data", "127.0.0.1:0", "",
                                          CollectorRegistry(), text_pipeline)
        started.append(appliance)
        db = open_database(tmp_path / "data")
        keys = open_key_ring(VaultConfig(), create_missing=False)
        store = SummaryStore(db, Vault(keys))
        transcript = text_pipeline.load(ROOT / "samples" / "demo_call.json", None)
        for call_id, agent in (("call-ann-1", "agent.ann"), ("call-bob-1", "agent.bob")):
            summary = text_pipeline.run(transcript, ("agent", "customer"), call_id=call_id)
            store.create_draft(summary, {"agent_id": agent, "queue": "cards"}, True, "ai")
        db.close()
        return f"https://127.0.0.1:{appliance.console.port}", keys, appliance

    yield start
    for appliance in started:
        await appliance.stop(1)


@pytest.fixture
async def console(site):
    return await site()


def _client_tls(pki, certificate: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki["ca"])
    if certificate:
        context.load_cert_chain(pki["client_cert"], pki["client_key"])
    return context


def _browser(pki, certificate: bool = False) -> aiohttp.ClientSession:
    """An HTTP client that keeps cookies like a browser (for 127.0.0.1 too, which aiohttp's jar skips by default)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_client_tls(pki, certificate)),
                                 cookie_jar=aiohttp.CookieJar(unsafe=True))


def _csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)


@contextlib.asynccontextmanager
async def _signed_in(base: str, keys, user: str, pki) -> AsyncIterator[aiohttp.ClientSession]:
    async with _browser(pki) as session:
        async with session.get(f"{base}/login") as response:
            token_form = _csrf(await response.text())
        async with session.post(f"{base}/login", data={"csrf": token_form, "token": issue_token(keys, user, 600)},
                                allow_redirects=False) as response:
            assert response.status == 303, await response.text()
        yield session


@pytest.mark.service
async def test_sign_in_sets_a_strict_session_and_every_page_is_locked_down(console, pki):
    base, keys, _ = console
    async with _browser(pki) as anonymous:
        async with anonymous.get(f"{base}/queue", allow_redirects=False) as response:
            assert response.status == 303 and response.headers["Location"] == "/login"
        async with anonymous.get(f"{base}/login") as response:
            form_token = _csrf(await response.text())
            headers = response.headers
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Frame-Options"] == "DENY" and headers["Cache-Control"] == "no-store"
        forged = issue_token(keys, "agent.ann", 600)[:-3] + "abc"
        async with anonymous.post(f"{base}/login", data={"csrf": form_token, "token": forged}) as response:
            assert response.status == 401 and "not a token this appliance" in await response.text()
        async with anonymous.post(f"{base}/login", data={"csrf": form_token,
                                                         "token": issue_token(keys, "stranger", 600)}) as response:
            assert response.status == 403 and "no role" in await response.text()
        async with anonymous.post(f"{base}/login", data={"csrf": form_token, "token": issue_token(keys, "agent.ann",
                                                                                                  600)},
                                  allow_redirects=False) as response:
            assert response.status == 303
            cookie = next(value for key, value in response.headers.items()
                          if key == "Set-Cookie" and value.startswith("aftercall_session="))
        assert all(flag in cookie for flag in ("Secure", "HttpOnly", "SameSite=Strict"))


@pytest.mark.service
async def test_roles_are_the_grpc_roles(console, pki):
    base, keys, _ = console
    async with _signed_in(base, keys, "agent.ann", pki) as ann, _signed_in(base, keys, "agent.bob", pki) as bob:
        async with ann.get(f"{base}/queue") as response:
            queue = await response.text()
        assert "call-ann-1" in queue and "call-bob-1" not in queue
        async with ann.get(f"{base}/calls/call-bob-1") as response:
            assert response.status == 403 and "may not read" in await response.text()
        async with ann.get(f"{base}/audit") as response:
            assert response.status == 403
        async with bob.get(f"{base}/search", params={"go": "1"}) as response:
            found = await response.text()
        assert "call-bob-1" in found and "call-ann-1" not in found
    # The supervisor's client certificate (CN supervisor.sam) is enough: no sign-in, their team's calls only.
    async with _browser(pki, certificate=True) as sam:
        async with sam.get(f"{base}/calls/call-ann-1") as response:
            assert response.status == 200 and "supervisor.sam (supervisor)" in await response.text()
        async with sam.get(f"{base}/calls/call-bob-1") as response:
            assert response.status == 403
    async with _signed_in(base, keys, "auditor.ada", pki) as auditor:
        async with auditor.get(f"{base}/calls/call-ann-1") as response:
            page = await response.text()
        assert response.status == 200 and 'id="approve"' not in page, "auditors read, never change"
        async with auditor.get(f"{base}/audit") as response:
            trail = await response.text()
        assert "supervisor.sam" in trail and "read" in trail
        async with auditor.post(f"{base}/audit/verify", data={"csrf": _csrf(trail)}) as response:
            assert "Intact" in await response.text()


@pytest.mark.service
async def test_a_form_from_elsewhere_is_refused(console, pki):
    base, keys, _ = console
    async with _signed_in(base, keys, "agent.ann", pki) as ann, _signed_in(base, keys, "agent.bob", pki) as bob:
        async with ann.get(f"{base}/calls/call-ann-1") as response:
            page = await response.text()
        edit = {"version": "1", "narrative": "Changed by a forged form."}
        async with ann.post(f"{base}/calls/call-ann-1/edit", data=edit) as response:
            assert response.status == 401 and "did not come from this console" in await response.text()
        async with ann.post(f"{base}/calls/call-ann-1/edit", data={**edit, "csrf": _csrf(page)},
                            headers={"Origin": "https://evil.example"}) as response:
            assert response.status == 403
        async with bob.get(f"{base}/queue") as response:
            bobs_token = _csrf(await response.text())
        # A token from another person's page (here bob's) does not fit ann's session.
        async with ann.post(f"{base}/calls/call-ann-1/approve", data={"version": "1", "csrf": bobs_token}) as r:
            assert r.status == 401
        async with ann.get(f"{base}/calls/call-ann-1") as response:
            assert "version 1" in await response.text() and "draft" in await response.text(), "nothing changed"


@pytest.mark.service
async def test_edit_conflict_and_bad_values_are_shown_on_the_page(console, pki):
    base, keys, _ = console
    async with _signed_in(base, keys, "agent.ann", pki) as ann:
        async with ann.get(f"{base}/calls/call-ann-1") as response:
            token = _csrf(await response.text())
        async with ann.post(f"{base}/calls/call-ann-1/edit",
                            data={"csrf": token, "version": "1", "narrative": "My card 4539 1488 0343 6467 was used.",
                                  "follow_ups.0.owner": "nobody"}) as response:
            page = await response.text()
        assert response.status == 400 and "follow_ups[0].owner must be one of" in page
        async with ann.post(f"{base}/calls/call-ann-1/edit",
                            data={"csrf": token, "version": "1",
                                  "narrative": "Card 4539 1488 0343 6467 reported stolen."}) as response:
            page = await response.text()
        assert response.status == 200 and "Saved as version 2" in page
        assert "4539 1488 0343 6467" not in page, "an agent's typed card number is redacted like the caller's"
        async with ann.post(f"{base}/calls/call-ann-1/approve", data={"csrf": token, "version": "1"}) as response:
            assert response.status == 409 and "at version 2, not 1" in await response.text()


@pytest.fixture
async def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium")
        pytest.skip("Debian's chromium is not installed (make system-deps)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        # Flags for a closed network: no background connections, no component updates (they would only fail).
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        context = await chromium.new_context(ignore_https_errors=True)
        yield await context.new_page()
        await chromium.close()


@pytest.mark.e2e
async def test_an_agent_edits_sees_the_evidence_and_approves_with_the_keyboard_alone(console, browser):
    base, keys, appliance = console
    page = browser
    await page.goto(f"{base}/queue")
    assert page.url.endswith("/login")
    await page.fill("#token", issue_token(keys, "agent.ann", 600))
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{base}/queue")
    await page.click("text=call-ann-1")
    await page.wait_for_url(re.compile(r".*/calls/call-ann-1$"))

    # The evidence of a point lights up in the transcript when its field has focus.
    await page.focus("[name='reason_for_contact']")
    highlighted = await page.eval_on_selector_all(".turn.evidence", "turns => turns.map(t => t.id)")
    expected = await page.get_attribute("[name='reason_for_contact'] >> xpath=..", "data-evidence")
    assert highlighted and sorted(highlighted) == sorted(f"turn-{n}" for n in expected.split())

    await page.fill("[name='narrative']", "The customer reported a stolen debit card; it was blocked.")
    # The empty fieldset under the follow-ups adds one.
    added = await page.locator("[name^='follow_ups.'][name$='.action']").count() - 1
    await page.select_option(f"[name='follow_ups.{added}.owner']", "organisation")
    await page.fill(f"[name='follow_ups.{added}.action']", "Post the replacement card")
    await page.fill(f"[name='follow_ups.{added}.due']", "within five working days")
    await page.click("#save")
    await page.wait_for_selector("#notice")
    assert "Saved as version 2" in await page.inner_text("#notice")
    assert "The customer reported a stolen debit card" in await page.input_value("[name='narrative']")
    assert await page.input_value(f"[name='follow_ups.{added}.action']") == "Post the replacement card"

    # Approve without a mouse: Tab through the page until the approve button has focus, then Enter.
    for _ in range(400):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "approve":
            break
    else:
        pytest.fail("the approve button cannot be reached with the keyboard")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#notice >> text=Approved")
    assert await page.locator(".state-approved").count() >= 1
    history = await page.inner_text(".history")
    assert "Version 2 by agent.ann" in history and "narrative" in history
    assert "After-call work" in await page.inner_text("main")
    assert await page.locator("#approve").count() == 0, "an approved summary can no longer change"
    # The after-call work is measured: hang-up (the summary's store time, for a transcript) to approval, and review.
    registry = appliance.metrics.registry
    for metric in ("aftercall_review_hangup_to_approval_seconds", "aftercall_review_duration_seconds"):
        assert registry.get_sample_value(f"{metric}_count") == 1, metric
        assert 0 < registry.get_sample_value(f"{metric}_sum") < 600, metric


@pytest.mark.service
async def test_an_approval_reaches_the_crm_and_a_dead_letter_is_retried_from_the_console(site, pki, tmp_path):
    crm = Receiver()
    runner = await _listen(crm)
    secret = tmp_path / "crm.secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    try:
        base, keys, appliance = await site(crm=CrmConfig(
            endpoints=(crm.url("ok"), crm.url("broken")), secret_file=str(secret), max_attempts=2, backoff_s=0.1,
            field_map=("reason_for_contact=Subject",)))
        async with _signed_in(base, keys, "agent.ann", pki) as ann:
            async with ann.get(f"{base}/calls/call-ann-1") as response:
                token = _csrf(await response.text())
            async with ann.post(f"{base}/calls/call-ann-1/approve", data={"csrf": token, "version": "1"}) as r:
                assert r.status == 200 and "Approved" in await r.text()
        registry = appliance.metrics.registry
        await _until(lambda: registry.get_sample_value("aftercall_crm_outbox_events", {"state": "dead"}) == 1,
                     "the broken receiver's event a dead letter", timeout=20)
        (event,) = crm.accepted["ok"]
        assert event["type"] == "summary.approved" and event["call_id"] == "call-ann-1"
        assert event["approved_by"] == "agent.ann" and "Subject" in event["summary"]

        async with _signed_in(base, keys, "admin.al", pki) as admin:
            async with admin.get(f"{base}/outbox") as response:
                page = await response.text()
            assert response.status == 200 and "HTTP 400" in page and crm.url("broken") in page
            assert event["event_id"] in page and "call-ann-1" in page
            crm.rejecting = False  # the receiver is mended
            form = {"csrf": _csrf(page), "event_id": event["event_id"], "endpoint": crm.url("broken")}
            async with admin.post(f"{base}/outbox/retry", data=form) as response:
                assert "retried" in await response.text()
        await _until(lambda: len(crm.accepted["broken"]) == 1, "the retried event delivered", timeout=20)
        assert crm.accepted["broken"][0]["event_id"] == event["event_id"], "the same event, deduplicable"
        assert crm.forged == 0
        async with _signed_in(base, keys, "agent.ann", pki) as ann:
            async with ann.get(f"{base}/outbox") as response:
                assert response.status == 403, "agents do not see the outbox"
    finally:
        crm.ended.set()
        await runner.cleanup()



@pytest.mark.e2e
async def test_an_approved_summary_becomes_the_customers_written_confirmation(site, browser, smtp_config, inbox,
                                                                              tmp_path):
    base, keys, appliance = await site(smtp=smtp_config)
    page = browser
    await page.goto(f"{base}/login")
    await page.fill("#token", issue_token(keys, "agent.ann", 600))
    await page.click("button:has-text('Sign in')")
    await page.wait_for_url(f"{base}/queue")
    await page.goto(f"{base}/calls/call-ann-1")
    assert await page.locator("#confirmation").count() == 0, "only an approved summary is confirmed in writing"
    await page.click("#approve")
    await page.wait_for_selector("#notice >> text=Approved")
    await page.click("#confirmation")
    letter = await page.input_value("#body")
    assert letter.startswith("Hello,") and "Next steps:" in letter
    assert "call-ann-1" not in letter and "agent.ann" not in letter

    # A card number typed into the letter stops it; the agent's text comes back to fix.
    await page.fill("#recipient", "daniel.h@example.org")
    await page.fill("#body", letter + "\nYour new card is 4539 1488 0343 6467.\n")
    await page.click("#send")
    await page.wait_for_selector("#error")
    assert "CARD" in await page.inner_text("#error") and not inbox.messages
    assert "4539 1488 0343 6467" in await page.input_value("#body")

    await page.fill("#body", letter + "\nWe will write again once the claim is decided.\n")
    await page.click("#send")
    await page.wait_for_selector("#notice >> text=Confirmation sent")
    (message,) = inbox.messages
    assert message.recipients == ["daniel.h@example.org"] and message.encrypted and message.authenticated
    assert b"We will write again once the claim is decided." in message.content
    db = open_database(tmp_path / "data")
    try:
        entries = [e for e in SummaryStore(db, Vault(keys)).audit.entries("call-ann-1")
                   if e["action"] == "confirmation_sent"]
    finally:
        db.close()
    assert len(entries) == 1 and entries[0]["actor"] == "agent.ann" and entries[0]["recipient_domain"] == "example.org"
    assert appliance.metrics.registry.get_sample_value("aftercall_review_confirmations_total", {"outcome": "sent"}) == 1
