"""The CRM webhook: each outbox event POSTed to its receiver, signed, and tried again with a growing backoff until the
receiver takes it or it becomes a dead letter.

What a receiver gets, and how it checks it (`verify_signature` does exactly this; a site's receiver does the same):

    POST <a crm.endpoints URL>
    Content-Type: application/json
    X-Aftercall-Event-Id: <the body's event_id>
    X-Aftercall-Timestamp: <unix seconds when this attempt was sent>
    X-Aftercall-Signature: v1=<hex HMAC-SHA256, keyed with crm.secret_file's secret, of the bytes
                           "<timestamp>.<event id>." followed by the body exactly as received>

1. Compute the HMAC over the raw body (before parsing it) and compare it in constant time.
2. Refuse a timestamp more than 5 minutes from your clock: a recorded request replayed later then fails.
3. Answer 2xx once the event is stored. Anything else (another status, a redirect: never followed, no answer within
   crm.timeout_s) is a failed attempt, tried again later; so an event may arrive more than once, and events may
   arrive out of order: deduplicate by event_id, and keep a call's highest version.

The body: {"event_id", "type" ("summary.draft" or "summary.approved"), "occurred_at" (ISO 8601, UTC), "call_id",
"version", "state", "agent_id", "queue", "tenant", "disposition_code", "approved_by", "summary"}, the summary's
fields under the names crm.field_map gives them (only those, with crm.mapped_only). Its text is redacted.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import ssl
import stat
import time
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import urlsplit

import aiohttp

from aftercall.core.errors import ConfigError
from aftercall.core.logsetup import logging_call
from aftercall.crm.config import CrmConfig
from aftercall.crm.metrics import CrmMetrics
from aftercall.crm.outbox import DEAD, PENDING, Outbox, OutboxEvent

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Aftercall-Signature"
TIMESTAMP_HEADER = "X-Aftercall-Timestamp"
EVENT_ID_HEADER = "X-Aftercall-Event-Id"
MIN_SECRET_BYTES = 16  # a shorter HMAC key is guessable
# Attempts in flight per receiver: a slow or hanging one fills only its own slots, never another's.
SLOTS_PER_ENDPOINT = 4
# A claimed event's lease is an attempt's longest (crm.timeout_s) plus this: never sent twice at once, and after a
# crash mid-attempt it is due again this long after the attempt's end at the latest.
LEASE_MARGIN_S = 30.0


def sign(secret: bytes, timestamp: str, event_id: str, body: bytes) -> str:
    """X-Aftercall-Signature's value: "v1=" and the hex HMAC-SHA256 of "<timestamp>.<event id>." + body."""
    return "v1=" + hmac.new(secret, f"{timestamp}.{event_id}.".encode("utf-8") + body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, headers: Mapping[str, str], body: bytes, tolerance_s: float = 300,
                     now: float | None = None) -> bool:
    """A receiver's check (see the module's docstring): the request's signature was made with `secret` over this
    body and event id, at a timestamp within `tolerance_s` of `now` (default: this machine's clock). Header names
    in any case."""
    found = {name.lower(): value for name, value in headers.items()}
    timestamp = found.get(TIMESTAMP_HEADER.lower(), "")
    event_id = found.get(EVENT_ID_HEADER.lower(), "")
    signature = found.get(SIGNATURE_HEADER.lower(), "")
    if not (timestamp.isascii() and timestamp.isdigit()) or not event_id:
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance_s:
        return False
    expected = sign(secret, timestamp, event_id, body)
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace"))


def read_secret(path: str | Path) -> bytes:
    """crm.secret_file's secret, without the whitespace around it (a trailing newline is not part of it). The file
    must be owner-only: whoever reads it can sign what the CRM trusts."""
    if not path:
        raise ConfigError("config crm.secret_file: the webhooks are signed; name the file holding the shared secret")
    file = Path(path)
    try:
        mode = stat.S_IMODE(file.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(f"config crm.secret_file: {file} is open to other users (mode {mode:o}); chmod 600 it")
        secret = file.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"config crm.secret_file: cannot read {file} ({exc.strerror})") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"config crm.secret_file: {file} holds {'no' if not secret else 'too short a'} secret; "
                          f"put at least {MIN_SECRET_BYTES} random bytes in it (e.g. `openssl rand -hex 32`)")
    return secret


class WebhookDelivery:
    """Sends the outbox's due events: `start()` in the serving event loop, `await stop()` at shutdown. Woken at once
    when events become due (the outbox calls `wake`), else it looks every `poll_s` (events another appliance
    sharing the store wrote) and when the next retry is due."""

    def __init__(self, outbox: Outbox, config: CrmConfig, metrics: CrmMetrics, secret: bytes, poll_s: float = 5.0,
                 clock: Callable[[], float] = time.time):
        if not secret:
            raise ConfigError("config crm.secret_file: an empty secret signs nothing")
        if poll_s <= 0:
            raise ValueError(f"poll_s must be positive, got {poll_s}")
        self._outbox = outbox
        self._config = config
        self._metrics = metrics
        self._secret = secret
        self._poll_s = poll_s
        self._clock = clock  # the X-Aftercall-Timestamp of each attempt
        self._tls = _tls_context(config.ca_file)
        self._lease_s = config.timeout_s + LEASE_MARGIN_S
        self._in_flight: dict[str, set[asyncio.Task]] = {endpoint: set() for endpoint in outbox.endpoints}
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the CRM webhook delivery is already running")
        self._loop = asyncio.get_running_loop()
        self._outbox.on_due = self.wake
        self._task = asyncio.create_task(self._run(), name="crm-webhook-delivery")

    async def stop(self) -> None:
        """Attempts in flight are abandoned: their events are due again at the next start, no attempt counted."""
        if self._task is None:
            return
        self._outbox.on_due = None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    def wake(self) -> None:
        """Look for due events now rather than at the next poll. Safe from any thread (the store may write from a
        worker thread)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wakeup.set)

    async def _run(self) -> None:
        connector = aiohttp.TCPConnector(ssl=self._tls)
        timeout = aiohttp.ClientTimeout(total=self._config.timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            try:
                while True:
                    self._wakeup.clear()
                    try:
                        delay = self._dispatch(session)
                    except Exception:  # noqa: BLE001 - a busy or full database: look again at the next poll
                        logger.exception("CRM outbox: cannot read the due events; looking again in %g s", self._poll_s)
                        delay = self._poll_s
                    # A timer rather than asyncio.wait_for, which (before Python 3.12) can swallow stop()'s
                    # cancellation when a wake-up lands at the same moment, so the task would never end.
                    timer = asyncio.get_running_loop().call_later(delay, self._wakeup.set)
                    try:
                        await self._wakeup.wait()
                    finally:
                        timer.cancel()
            finally:
                await self._abandon_in_flight()

    def _dispatch(self, session: aiohttp.ClientSession) -> float:
        """Start an attempt for each due event whose receiver has a free slot; returns how long to wait before
        looking again (a finished attempt frees a slot and wakes the loop)."""
        self._outbox.publish_counts()  # events enqueued in the store's transactions are counted from here
        with_free_slots = []
        for endpoint, running in self._in_flight.items():
            free = SLOTS_PER_ENDPOINT - len(running)
            if free > 0:
                for event in self._outbox.claim_due(endpoint, free, self._lease_s):
                    attempt = asyncio.create_task(self._attempt(session, event))
                    running.add(attempt)
                    attempt.add_done_callback(functools.partial(self._finished, running))
            if len(running) < SLOTS_PER_ENDPOINT:
                with_free_slots.append(endpoint)
        until = self._outbox.seconds_until_due(with_free_slots)
        return self._poll_s if until is None else min(until, self._poll_s)

    def _finished(self, running: set[asyncio.Task], attempt: asyncio.Task) -> None:
        running.discard(attempt)
        self._wakeup.set()

    async def _attempt(self, session: aiohttp.ClientSession, event: OutboxEvent) -> None:
        with logging_call(event.call_id):
            try:
                error = await self._post(session, event)
            except asyncio.CancelledError:
                self._outbox.release(event)
                raise
            try:
                self._record(event, error)
            except Exception:  # noqa: BLE001 - the event stays leased and is sent again when the lease ends
                logger.exception("CRM event %s: cannot record the attempt's outcome; it will be sent again",
                                 event.event_id)

    def _record(self, event: OutboxEvent, error: str | None) -> None:
        receiver = _receiver(event.endpoint)
        if error is None:
            self._outbox.delivered(event)
            self._metrics.crm_deliveries.labels(outcome="delivered").inc()
            logger.info("CRM event %s (%s) delivered to %s", event.event_id, event.event_type, receiver)
            return
        state = self._outbox.failed(event, error)
        if state == PENDING:
            self._metrics.crm_deliveries.labels(outcome="retry").inc()
            logger.info("CRM event %s to %s failed (%s); it will be tried again", event.event_id, receiver, error)
        elif state == DEAD:
            self._metrics.crm_deliveries.labels(outcome="dead").inc()
            logger.warning("CRM event %s to %s failed (%s) %d times: now a dead letter", event.event_id, receiver,
                           error, self._config.max_attempts)

    async def _post(self, session: aiohttp.ClientSession, event: OutboxEvent) -> str | None:
        """None when the receiver took the event; else what went wrong, for the console."""
        timestamp = str(int(self._clock()))
        headers = {"Content-Type": "application/json", EVENT_ID_HEADER: event.event_id, TIMESTAMP_HEADER: timestamp,
                   SIGNATURE_HEADER: sign(self._secret, timestamp, event.event_id, event.body)}
        try:
            # Redirects are not followed: a 307 would send the summary wherever the receiver points.
            async with session.post(event.endpoint, data=event.body, headers=headers,
                                    allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    return None
                # The status only: the answer's body (or reason phrase) could echo the summary.
                redirect = " (redirects are not followed)" if 300 <= response.status < 400 else ""
                return f"HTTP {response.status}{redirect}"
        except asyncio.TimeoutError:  # the builtin TimeoutError only from Python 3.11
            return f"no answer within {self._config.timeout_s:g} s"
        except aiohttp.ClientError as exc:
            return _describe(exc)

    async def _abandon_in_flight(self) -> None:
        attempts = [attempt for running in self._in_flight.values() for attempt in running]
        for attempt in attempts:
            attempt.cancel()
        await asyncio.gather(*attempts, return_exceptions=True)


def _tls_context(ca_file: str) -> ssl.SSLContext | bool:
    """True: aiohttp verifies https:// receivers against the system's CAs; with crm.ca_file, against it only."""
    if not ca_file:
        return True
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"config crm.ca_file: cannot load {ca_file} ({exc.strerror or exc})") from None


def _describe(exc: aiohttp.ClientError) -> str:
    """The exception's class and, for a network error, its reason (refused, unreachable, certificate not trusted):
    nothing the receiver wrote."""
    reason = exc.strerror if isinstance(exc, OSError) else None
    return f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__


def _receiver(endpoint: str) -> str:
    """The receiver as logs name it: host and port, without any credentials or path the URL carries."""
    return urlsplit(endpoint).netloc.rpartition("@")[2]
