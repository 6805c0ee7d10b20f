"""The CallIngest proto's enums as aftercall's own values, in one place for the service and its client."""

from __future__ import annotations

from aftercall.core.audio import Encoding
from aftercall.v1 import ingest_pb2 as pb

ENCODINGS = {pb.AUDIO_ENCODING_MULAW: Encoding.MULAW, pb.AUDIO_ENCODING_ALAW: Encoding.ALAW,
             pb.AUDIO_ENCODING_LINEAR_PCM: Encoding.LINEAR_PCM}
ROLES = {pb.CHANNEL_ROLE_AGENT: "agent", pb.CHANNEL_ROLE_CUSTOMER: "customer"}
ENCODING_CODES = {encoding: code for code, encoding in ENCODINGS.items()}
ROLE_CODES = {role: code for code, role in ROLES.items()}
