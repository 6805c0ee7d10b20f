"""The recording sessions in progress: each recording's SIP dialogs (one, or a Cisco call's two legs), its hand-off
to ingest (a StreamCall of its own, opened before the INVITE is answered), its clock (silence fill, the RTP timeout,
ingest failing under it), and its end: the dialogs' BYE, ours or theirs, then CallEnd; what ingest answered is kept
in `completed`."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

import grpc

from aftercall.core.logsetup import logging_call
from aftercall.core.rpc import RemoteError
from aftercall.ingest.wire import ROLE_CODES
from aftercall.siprec.config import SiprecConfig
from aftercall.siprec.errors import SipMessageError
from aftercall.siprec.media import Endpoint, Media
from aftercall.siprec.metadata import RecordingMetadata
from aftercall.siprec.metrics import SiprecMetrics
from aftercall.siprec.recording import IngestFeed, Recording
from aftercall.siprec.sdp import SessionDescription
from aftercall.siprec.sip import SipMessage, header_params
from aftercall.siprec.transport import Peer, SipTransport
from aftercall.v1 import ingest_pb2 as pb

logger = logging.getLogger(__name__)

TICK_S = 0.1
# How long ingest may take to accept a call before the INVITE is refused.
ACCEPT_TIMEOUT_S = 10.0
COMPLETED_KEPT = 100


@dataclass
class Dialog:
    """One recording session's SIP dialog and the RTP endpoints of its streams."""

    sip_call_id: str
    remote_tag: str
    local_tag: str
    peer: Peer
    remote_uri: str  # their From: our requests' To
    local_uri: str  # their To with our tag: our requests' From
    remote_target: str  # their Contact URI: our requests' Request-URI
    route_set: list[str]
    recording: Recording
    channels: dict[int, int]  # m-line index -> recording channel
    endpoints: dict[int, Endpoint]  # m-line index -> (transport, local port)
    payload_type: int
    offer: SessionDescription
    metadata: RecordingMetadata | None
    session_id: int
    sdp_version: int = 1
    local_cseq: int = 0
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False

    def apply_direction(self, index: int, direction: str) -> None:
        """The offer's direction for an m-line: a stream they no longer send (a hold) expects no RTP."""
        self.recording.set_hold(self.channels[index], direction in ("inactive", "recvonly"))


class Sessions:
    """The session table: dialogs by (SIP Call-ID, their tag), the recordings they feed, and every task run for
    them (so that shutdown can end them all)."""

    def __init__(self, config: SiprecConfig, metrics: SiprecMetrics, ingest: grpc.Channel, sip: SipTransport,
                 media: Media):
        self._config = config
        self._metrics = metrics
        self._ingest = ingest
        self._sip = sip
        self._media = media
        self.dialogs: dict[tuple[str, str], Dialog] = {}
        self.recordings: list[Recording] = []
        self.cisco: dict[tuple[str, str], Recording] = {}  # (SBC address, x-refci) -> the call both legs feed
        self.stopping = False
        self._tasks: set[asyncio.Task] = set()
        # The latest calls ingest answered for: (call id, the stored SummaryRecord or the error), oldest first;
        # bounded, so a long-running server holds no more than these.
        self.completed: deque[tuple[str, pb.SummaryRecord | Exception]] = deque(maxlen=COMPLETED_KEPT)

    def spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def dialog_of(self, request: SipMessage) -> Dialog | None:
        remote_tag = header_params(request.header("From") or "").get("tag", "")
        dialog = self.dialogs.get((request.call_id, remote_tag))
        local_tag = header_params(request.header("To") or "").get("tag")
        return dialog if dialog is not None and local_tag == dialog.local_tag else None

    def add(self, dialog: Dialog) -> None:
        """An answered INVITE's dialog: its ports now feed its recording."""
        self._media.attach(dialog)
        self.dialogs[(dialog.sip_call_id, dialog.remote_tag)] = dialog

    # --- the hand-off to ingest ------------------------------------------------------------------------------

    async def open_recording(self, call_id: str, roles: tuple[str, ...], payload_type: int, call_class: str,
                             call_metadata: pb.CallMetadata) -> Recording:
        """Open the call in ingest first: an INVITE that ingest cannot take is refused, never silently lost."""
        start = pb.CallStart(call_id=call_id, encoding=pb.AUDIO_ENCODING_MULAW if payload_type == 0
                             else pb.AUDIO_ENCODING_ALAW, sample_rate_hz=8000,
                             channel_roles=[ROLE_CODES[role] for role in roles], metadata=call_metadata)
        feed = IngestFeed(self._ingest, start)
        try:
            await asyncio.wait_for(asyncio.wrap_future(feed.accepted), ACCEPT_TIMEOUT_S)
        except (RemoteError, asyncio.TimeoutError) as exc:
            feed.abandon()
            code = getattr(exc, "code", None)
            with logging_call(call_id):
                logger.error("ingest did not take the call: %s", exc or "no answer in time")
            raise SipMessageError(f"ingest cannot take the call now ({code.name if code else 'timeout'})",
                                  503 if code in (None, grpc.StatusCode.UNAVAILABLE,
                                                  grpc.StatusCode.RESOURCE_EXHAUSTED) else 500) from None
        recording = Recording(call_id, len(roles), payload_type, call_class, self._metrics, feed)
        self.recordings.append(recording)
        self._metrics.siprec_recordings_active.set(len(self.recordings))
        return recording

    def discard(self, recording: Recording) -> None:
        """Ingest has answered for the call (or it never started): forget it."""
        self.cisco = {key: value for key, value in self.cisco.items() if value is not recording}
        if recording in self.recordings:
            self.recordings.remove(recording)
            self._metrics.siprec_recordings_active.set(len(self.recordings))
        if not recording.feed.finished.done():
            recording.feed.abandon()
            return
        error = recording.feed.finished.exception()
        self.completed.append((recording.call_id, error or recording.feed.finished.result()))
        with logging_call(recording.call_id):
            if error is None:
                logger.info("summary stored")
            elif not recording.received_audio:
                logger.warning("the recording ended before any audio came: nothing to summarise")
            else:
                logger.error("ingest did not summarise the call: %s", error)

    # --- the recordings' clock -------------------------------------------------------------------------------

    async def ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            for recording in list(self.recordings):
                with logging_call(recording.call_id):
                    try:
                        self._tick(recording, now)
                    except Exception:  # one call's fault must not stall the others' audio
                        logger.exception("recording tick failed; ending the recording")
                        self.end_recording(recording, "error")

    def _tick(self, recording: Recording, now: float) -> None:
        if recording.ended:
            if recording.feed.finished.done():
                self.discard(recording)
            return
        if recording.feed.finished.done():  # ingest failed under a live call: tell the SBC
            logger.error("ingest ended the call early: %s", recording.feed.finished.exception())
            self.end_recording(recording, "ingest_error")
            return
        idle = recording.idle_for(now)
        if idle is not None and idle > self._config.rtp_timeout_s:
            logger.warning("no RTP for %.0f s: ending the recording (siprec.rtp_timeout_s)", idle)
            self.end_recording(recording, "rtp_timeout")
            return
        recording.tick(now)

    # --- the end ---------------------------------------------------------------------------------------------

    def end_recording(self, recording: Recording, reason: str) -> None:
        for dialog in [d for d in self.dialogs.values() if d.recording is recording]:
            self.end_dialog(dialog, reason, send_bye=True)
        if not recording.ended:  # e.g. a Cisco call whose second leg never came
            recording.legs_open = 0
            self._finish(recording, reason)

    def end_dialog(self, dialog: Dialog, reason: str, send_bye: bool = False) -> None:
        if dialog.ended:
            return
        dialog.ended = True
        if send_bye:
            self.spawn(self._send_bye(dialog, reason))
        del self.dialogs[(dialog.sip_call_id, dialog.remote_tag)]
        self._media.close(dialog.endpoints.values())
        recording = dialog.recording
        recording.legs_open -= 1
        if recording.legs_open <= 0:
            self._finish(recording, reason)

    def _finish(self, recording: Recording, reason: str) -> None:
        if recording.ended:
            return
        with logging_call(recording.call_id):
            logger.info("recording ended (%s) after %.0f s", reason, time.monotonic() - recording.started)
        recording.finish(reason)
        self._metrics.siprec_recordings.labels(call_class=recording.call_class, end=reason).inc()

    async def _send_bye(self, dialog: Dialog, reason: str) -> None:
        dialog.local_cseq += 1
        branch = "z9hG4bK" + secrets.token_hex(8)
        host, port = dialog.peer.local
        headers = [("Via", f"SIP/2.0/{dialog.peer.transport.upper()} {host}:{port};branch={branch};rport")]
        headers += [("Route", route) for route in dialog.route_set]
        headers += [("Max-Forwards", "70"), ("From", dialog.local_uri), ("To", dialog.remote_uri),
                    ("Call-ID", dialog.sip_call_id), ("CSeq", f"{dialog.local_cseq} BYE"),
                    ("Reason", f'SIP;cause=200;text="{reason}"'), ("User-Agent", "aftercall")]
        await self._sip.request(dialog.peer, SipMessage(method="BYE", uri=dialog.remote_target, headers=headers))

    async def drain(self, grace: float) -> None:
        """No new recordings; the ones in progress end with our BYE, and within `grace` seconds ingest has their
        audio on disk (it summarises them, now or after its own restart). Then every task stops."""
        self.stopping = True
        for recording in list(self.recordings):
            self.end_recording(recording, "shutdown")
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(not (r.feed.durable.done() or r.feed.finished.done())
                                                  for r in self.recordings):
            await asyncio.sleep(TICK_S)
        await asyncio.sleep(0)  # let the BYEs go out
        for task in list(self._tasks):
            task.cancel()
