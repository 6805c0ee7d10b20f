"""What each SIP request does to the recording sessions (RFC 7866 as an SRS): an INVITE opens a recording (streams
mapped to agent and customer by the metadata and siprec.trunks, a Cisco Built-in-Bridge leg paired with its other
leg, a plain INVITE recorded as one mixed stream), a re-INVITE or UPDATE changes its metadata or puts a stream on
hold, BYE ends it; CANCEL, ACK, OPTIONS and INFO get what RFC 3261 asks. A request that fails is answered with its
error's status and never takes another call down."""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass

from aftercall.core.errors import CapacityError
from aftercall.core.logsetup import logging_call
from aftercall.siprec.config import SiprecConfig
from aftercall.siprec.errors import SipMessageError
from aftercall.siprec.media import Media
from aftercall.siprec.metadata import RecordingMetadata, cisco_leg, parse_metadata
from aftercall.siprec.roles import agent_stream, parse_trunks, trunk_for
from aftercall.siprec.sdp import SessionDescription, choose_streams, parse_sdp
from aftercall.siprec.sessions import Dialog, Sessions
from aftercall.siprec.sip import BodyPart, SipMessage, body_parts, header_params
from aftercall.siprec.transport import TRANSACTION_TIMEOUT_S, Peer, SipTransport, branch_of, log_fault, resend_until
from aftercall.v1 import ingest_pb2 as pb

logger = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"
METADATA_TYPES = ("application/rs-metadata+xml", "application/rs-metadata", "application/xml")
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._:-]+")
# What the SRS takes from the recording metadata is cut to this length, the least `ingest.max_metadata_chars` can be:
# an SBC's long display name must not cost the recording.
_MAX_METADATA_CHARS = 64


@dataclass
class _PendingInvite:
    cancelled: bool = False


class Signalling:
    """The SIP requests of the recording sessions, each handled in a task of its own."""

    def __init__(self, config: SiprecConfig, sip: SipTransport, media: Media, sessions: Sessions):
        self._config = config
        self._sip = sip
        self._media = media
        self._sessions = sessions
        self._trunks = parse_trunks(config.trunks)
        self._pending: dict[str, _PendingInvite] = {}  # INVITE branch -> not yet answered

    def receive(self, request: SipMessage, peer: Peer) -> None:
        """A new request (retransmissions of answered ones never come here)."""
        method = request.method
        if method == "INVITE" and branch_of(request) in self._pending:
            self._sip.respond(request, peer, 100)
            return
        handler = {"INVITE": self._invite, "ACK": self._ack, "BYE": self._bye, "CANCEL": self._cancel,
                   "OPTIONS": self._options, "UPDATE": self._update, "INFO": self._info}.get(method)
        if handler is None:
            self._sip.respond(request, peer, 405, headers=[("Allow", ALLOW)])
            return
        self._sessions.spawn(self._handle(handler, request, peer))

    async def _handle(self, handler, message: SipMessage, peer: Peer) -> None:
        try:
            await handler(message, peer)
        except SipMessageError as exc:
            log_fault(f"{message.method} from {peer.address[0]} refused with {exc.status}", exc)
            if message.method != "ACK":
                retry = [("Retry-After", "30")] if exc.status == 503 else None
                self._sip.respond(message, peer, exc.status, headers=retry, warning=str(exc))
        except CapacityError as exc:
            logger.warning("%s from %s refused with 503: %s", message.method, peer.address[0], exc)
            self._sip.respond(message, peer, 503, headers=[("Retry-After", "30")], warning=str(exc))
        except Exception:  # one bad request never takes the server (or another call) down
            logger.exception("%s from %s failed", message.method, peer.address[0])
            if message.method != "ACK":
                self._sip.respond(message, peer, 500)

    async def _options(self, request: SipMessage, peer: Peer) -> None:
        self._sip.respond(request, peer, 200, headers=[
            ("Allow", ALLOW), ("Supported", "siprec"),
            ("Accept", "application/sdp, multipart/mixed, " + ", ".join(METADATA_TYPES))])

    async def _info(self, request: SipMessage, peer: Peer) -> None:
        self._sip.respond(request, peer, 200 if self._sessions.dialog_of(request) else 481)

    async def _cancel(self, request: SipMessage, peer: Peer) -> None:
        pending = self._pending.get(branch_of(request))
        if pending is None:
            self._sip.respond(request, peer, 481)
            return
        pending.cancelled = True
        self._sip.respond(request, peer, 200)

    async def _ack(self, request: SipMessage, peer: Peer) -> None:
        if (dialog := self._sessions.dialog_of(request)) is not None:
            dialog.acked.set()

    async def _bye(self, request: SipMessage, peer: Peer) -> None:
        dialog = self._sessions.dialog_of(request)
        if dialog is None:
            self._sip.respond(request, peer, 481)
            return
        self._sip.respond(request, peer, 200)
        self._sessions.end_dialog(dialog, "bye")

    async def _update(self, request: SipMessage, peer: Peer) -> None:
        dialog = self._sessions.dialog_of(request)
        if dialog is None:
            self._sip.respond(request, peer, 481)
            return
        self._sip.respond(request, peer, 200, headers=[("Contact", peer.contact)],
                          body=self._renegotiate(dialog, request))

    # --- INVITE ----------------------------------------------------------------------------------------------

    async def _invite(self, request: SipMessage, peer: Peer) -> None:
        if header_params(request.header("To") or "").get("tag"):
            dialog = self._sessions.dialog_of(request)
            if dialog is None:
                self._sip.respond(request, peer, 481)
                return
            body = self._renegotiate(dialog, request)
            dialog.acked.clear()
            self._answer(dialog, request, peer, body)
            return
        # INVITEs still being answered count: they wait on ingest before their recording exists, and a burst of
        # them would otherwise all pass this check together.
        stopping = self._sessions.stopping
        if stopping or len(self._sessions.recordings) + len(self._pending) >= self._config.max_sessions:
            self._sip.respond(request, peer, 503, headers=[("Retry-After", "30")],
                              warning="shutting down" if stopping else "siprec.max_sessions reached")
            return
        required = request.option_tags("Require")
        if unsupported := sorted(required - {"siprec"}):
            self._sip.respond(request, peer, 420, headers=[("Unsupported", ", ".join(unsupported))])
            return
        parts = body_parts(request)
        offer, metadata = self._offer(parts), self._metadata(parts)
        leg = cisco_leg(request.header("From") or "")
        if "siprec" not in required and leg is None and not self._config.accept_plain_calls:
            raise SipMessageError("only SIPREC recording sessions (Require: siprec) are accepted here "
                                  "(siprec.accept_plain_calls is off)", 488)
        branch = branch_of(request)
        self._pending[branch] = pending = _PendingInvite()
        self._sip.respond(request, peer, 100)
        try:
            await self._start_recording(request, peer, offer, metadata, leg, pending)
        finally:
            del self._pending[branch]

    @staticmethod
    def _offer(parts: list[BodyPart]) -> SessionDescription:
        sdp = [part for part in parts if part.content_type == "application/sdp"]
        for part in parts:
            if part.content_type != "application/sdp" and part.content_type not in METADATA_TYPES \
                    and "handling=required" in part.headers.get("content-disposition", "").replace(" ", ""):
                raise SipMessageError(f"a required body part of type {part.content_type} is not understood", 415)
        if not sdp:
            raise SipMessageError("the INVITE carries no SDP offer (application/sdp)", 488)
        return parse_sdp(sdp[0].body)

    @staticmethod
    def _metadata(parts: list[BodyPart]) -> RecordingMetadata | None:
        found = [part for part in parts if part.content_type in METADATA_TYPES]
        return parse_metadata(found[0].body) if found else None

    async def _start_recording(self, request: SipMessage, peer: Peer, offer: SessionDescription,
                               metadata: RecordingMetadata | None, leg, pending: _PendingInvite) -> None:
        chosen = choose_streams(offer, self._config.codecs)
        if not chosen:
            raise SipMessageError("no audio stream offers PCMU or PCMA at 8 kHz over RTP/AVP "
                                  f"(accepted: {', '.join(self._config.codecs)})", 488)
        rule = trunk_for(self._trunks, peer.address[0])
        call_class = rule.name if rule is not None else "default"
        local_tag = secrets.token_hex(6)
        recording, feed_is_new = None, True
        if leg is not None:  # Cisco Built-in-Bridge: one direction per INVITE; the near end is the agent
            index, payload_type = chosen[0]
            channels = {index: 0 if leg.near_end else 1}
            recording = self._sessions.cisco.get((peer.address[0], leg.refci))
            if recording is not None:
                if recording.ended:
                    raise SipMessageError(f"the recording of Cisco call {leg.refci} has already ended", 481)
                if recording.payload_type != payload_type:
                    raise SipMessageError("the other leg of this call is recorded with another codec", 488)
                feed_is_new = False
            roles, call_id = ("agent", "customer"), f"cisco-{_safe_id(leg.refci)}"
            call_metadata = pb.CallMetadata(ani=(leg.far_end_address or "")[:_MAX_METADATA_CHARS])
        elif len(chosen) == 1:  # one mixed stream: the recogniser tells the speakers apart
            index, payload_type = chosen[0]
            channels, roles = {index: 0}, ("agent",)
            call_id = f"sip-{_safe_id(request.call_id)}-{local_tag[:6]}"
            call_metadata = pb.CallMetadata()
        else:
            labels = [offer.streams[index].label for index, _ in chosen]
            agent = agent_stream(labels, metadata, rule)
            customer = next(i for i in range(len(chosen)) if i != agent)
            payload_type = chosen[agent][1]
            if chosen[customer][1] != payload_type:
                raise SipMessageError("the two recorded streams must use the same G.711 law", 488)
            channels, roles = {chosen[agent][0]: 0, chosen[customer][0]: 1}, ("agent", "customer")
            call_id = f"siprec-{_safe_id(request.call_id)}-{local_tag[:6]}"
            call_metadata = _call_metadata(metadata, labels[agent], labels[customer])
        endpoints = await self._media.open(len(channels))
        ports = dict(zip(sorted(channels), endpoints))
        try:
            if recording is None:
                recording = await self._sessions.open_recording(call_id, roles, payload_type, call_class,
                                                                call_metadata)
                if leg is not None:
                    self._sessions.cisco[(peer.address[0], leg.refci)] = recording
            if pending.cancelled:
                raise SipMessageError("cancelled", 487)
        except BaseException:
            self._media.close(endpoints)
            if recording is not None and feed_is_new:
                self._sessions.discard(recording)
            raise
        if not feed_is_new:  # the second leg of a Cisco call
            recording.legs_open += 1
        dialog = Dialog(
            request.call_id, header_params(request.header("From") or "").get("tag", ""), local_tag, peer,
            request.header("From") or "", f"{request.header('To')};tag={local_tag}",
            _contact_uri(request.header("Contact")) or request.uri or "", request.header_values("Record-Route"),
            recording, channels, ports, payload_type, offer, metadata, secrets.randbelow(2 ** 31))
        for index in ports:
            dialog.apply_direction(index, offer.streams[index].direction)
        self._sessions.add(dialog)
        with logging_call(recording.call_id):
            logger.info("recording from %s (%s, %s): %d stream(s)", peer.address[0], call_class, peer.transport,
                        len(channels))
        self._answer(dialog, request, peer, self._media.answer(dialog))

    def _answer(self, dialog: Dialog, request: SipMessage, peer: Peer, body: bytes) -> None:
        headers = [("Contact", peer.contact), ("Allow", ALLOW), ("Supported", "siprec")]
        if "siprec" in request.option_tags("Require"):
            headers.append(("Require", "siprec"))
        payload = self._sip.respond(request, peer, 200, dialog.local_tag, headers, body)
        if peer.transport == "udp":  # a 2xx is ours to retransmit until the ACK (RFC 3261 13.3.1.4)
            self._sessions.spawn(self._retransmit_until_ack(dialog, payload))

    async def _retransmit_until_ack(self, dialog: Dialog, payload: bytes) -> None:
        await resend_until(dialog.acked, dialog.peer.write, payload, lambda: not dialog.ended)
        if not dialog.acked.is_set() and not dialog.ended:
            with logging_call(dialog.recording.call_id):
                logger.warning("no ACK for our 200 OK in %.0f s: ending the session", TRANSACTION_TIMEOUT_S)
            self._sessions.end_dialog(dialog, "no_ack", send_bye=True)

    # --- re-INVITE / UPDATE: metadata changes and hold ------------------------------------------------------

    def _renegotiate(self, dialog: Dialog, request: SipMessage) -> bytes:
        """Apply a new offer (hold, resume, a stream moved) and metadata; the answer keeps our ports."""
        parts = body_parts(request)
        # Both read before either is applied: a refused offer (a port out of range) leaves the session as it was.
        offer = self._offer(parts) if any(part.content_type == "application/sdp" for part in parts) else None
        if (metadata := self._metadata(parts)) is not None:
            dialog.metadata = _merge(dialog.metadata, metadata)
            with logging_call(dialog.recording.call_id):
                logger.info("recording metadata updated (%d participants)", len(dialog.metadata.participants))
        if offer is None:
            return self._media.answer(dialog) if request.method == "INVITE" else b""
        for index, stream in enumerate(offer.streams):
            if index in dialog.channels:
                if stream.port == 0 or stream.codec(self._config.codecs) != dialog.payload_type:
                    dialog.apply_direction(index, "inactive")
                else:
                    dialog.apply_direction(index, stream.direction)
        dialog.offer = offer
        dialog.sdp_version += 1
        return self._media.answer(dialog)


def _safe_id(text: str) -> str:
    return _UNSAFE_ID.sub("-", text).strip("-.:_")[:80] or "call"


def _contact_uri(contact: str | None) -> str | None:
    if not contact:
        return None
    inside = re.search(r"<([^>]*)>", contact)
    return inside.group(1) if inside else contact.split(";", 1)[0].strip()


def _user(aor: str) -> str:
    """`sip:+441632960001@sbc.example;user=phone` -> `+441632960001`."""
    return aor.split(":", 1)[-1].split("@", 1)[0].split(";", 1)[0]


def _call_metadata(metadata: RecordingMetadata | None, agent_label: str | None,
                   customer_label: str | None) -> pb.CallMetadata:
    if metadata is None:
        return pb.CallMetadata()
    agent = metadata.sender_of(agent_label) if agent_label else None
    customer = metadata.sender_of(customer_label) if customer_label else None
    agent_id = (agent.name or (_user(agent.aors[0]) if agent.aors else "")) if agent else ""
    ani = _user(customer.aors[0]) if customer and customer.aors else ""
    return pb.CallMetadata(agent_id=agent_id[:_MAX_METADATA_CHARS], ani=ani[:_MAX_METADATA_CHARS])


def _merge(current: RecordingMetadata | None, update: RecordingMetadata) -> RecordingMetadata:
    """A `partial` update adds to what the session has; anything else replaces it."""
    if current is None or (update.datamode or "complete").lower() != "partial":
        return update
    return RecordingMetadata(current.datamode, {**current.participants, **update.participants},
                             {**current.stream_labels, **update.stream_labels})
