"""Recording metadata (RFC 7865): who the participants are and which labelled stream each one sends, read the way
SBCs actually write it (namespace with or without `:1`, `dataMode` or `datamode`, send/recv inside the participant
as in the drafts or in `participantstreamassoc`); and the Cisco UCM Built-in-Bridge legs, which carry no metadata
body but `x-refci` / `x-nearend` / `x-farend` parameters in the From URI."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field

from aftercall.siprec.errors import SipMessageError
from aftercall.siprec.sip import uri_params

MAX_METADATA_BYTES = 32768


@dataclass
class Participant:
    participant_id: str
    aors: list[str] = field(default_factory=list)
    name: str | None = None
    sends: list[str] = field(default_factory=list)  # ids of the streams that carry this participant's voice


@dataclass
class RecordingMetadata:
    datamode: str | None  # "complete", or "partial" for an update to merge into what a session already has
    participants: dict[str, Participant]
    stream_labels: dict[str, str]  # stream id -> SDP label

    def sender_of(self, label: str) -> Participant | None:
        """The participant who sends the stream with this SDP label (the one whose voice it carries)."""
        stream_ids = {stream_id for stream_id, known in self.stream_labels.items() if known == label}
        return next((p for p in self.participants.values() if stream_ids & set(p.sends)), None)


def _local(tag: str) -> str:
    """`{urn:ietf:params:xml:ns:recording:1}participantStreamAssoc` -> `participantstreamassoc`."""
    return tag.rsplit("}", 1)[-1].lower()


def _attribute(element: ElementTree.Element, name: str) -> str | None:
    wanted = name.lower()
    return next((value for key, value in element.attrib.items() if _local(key) == wanted), None)


def _children(element: ElementTree.Element, name: str) -> list[ElementTree.Element]:
    return [child for child in element if _local(child.tag) == name]


def _text(element: ElementTree.Element | None) -> str | None:
    return element.text.strip() if element is not None and element.text and element.text.strip() else None


def parse_metadata(body: bytes) -> RecordingMetadata:
    if len(body) > MAX_METADATA_BYTES:
        raise SipMessageError(f"recording metadata of {len(body)} bytes is over the limit of {MAX_METADATA_BYTES}",
                              413)
    # No DTDs: entity expansion ("billion laughs") and external entities have no place in recording metadata.
    if re.search(rb"<!(?:DOCTYPE|ENTITY)", body, re.IGNORECASE):
        raise SipMessageError("recording metadata with a DOCTYPE or ENTITY declaration is refused", 400)
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise SipMessageError(f"recording metadata is not well-formed XML: {exc}", 400) from None
    if _local(root.tag) != "recording":
        raise SipMessageError(f"recording metadata root is <{_local(root.tag)}>, not <recording>", 400)

    participants: dict[str, Participant] = {}
    for element in _children(root, "participant"):
        participant_id = _attribute(element, "participant_id") or _attribute(element, "id")
        if not participant_id:
            raise SipMessageError("a <participant> without a participant_id", 400)
        participant = participants.setdefault(participant_id, Participant(participant_id))
        for name_id in _children(element, "nameid"):
            if aor := _attribute(name_id, "aor"):
                participant.aors.append(aor)
            participant.name = participant.name or _text(next(iter(_children(name_id, "name")), None))
        for aor in _children(element, "aor"):  # the drafts' form
            if value := _text(aor):
                participant.aors.append(value)
        _add_sent_streams(element, participant)
    for association in _children(root, "participantstreamassoc"):
        participant_id = _attribute(association, "participant_id")
        if participant_id:
            _add_sent_streams(association, participants.setdefault(participant_id, Participant(participant_id)))

    labels: dict[str, str] = {}
    for stream in _children(root, "stream"):
        stream_id = _attribute(stream, "stream_id") or _attribute(stream, "id")
        label = _text(next(iter(_children(stream, "label")), None))
        if stream_id and label:
            labels[stream_id] = label
    datamode = _text(next(iter(_children(root, "datamode")), None))
    return RecordingMetadata(datamode.lower() if datamode else None, participants, labels)


def _add_sent_streams(element: ElementTree.Element, participant: Participant) -> None:
    participant.sends += [value for child in _children(element, "send")
                          if (value := _text(child)) and value not in participant.sends]


@dataclass(frozen=True)
class CiscoLeg:
    """One INVITE of a Cisco UCM Built-in-Bridge recording: the voice of one side of the call. Two legs with the
    same `refci` make one call."""

    refci: str
    near_end: bool  # the near end is the recorded phone (the agent's); the far end is the other party
    far_end_refci: str | None
    far_end_address: str | None  # the other party's number, as UCM knows it


def cisco_leg(from_header: str) -> CiscoLeg | None:
    params = uri_params(from_header)
    refci = params.get("x-refci")
    if not refci or ("x-nearend" in params) == ("x-farend" in params):
        return None
    return CiscoLeg(refci, "x-nearend" in params, params.get("x-farendrefci"), params.get("x-farendaddr"))
