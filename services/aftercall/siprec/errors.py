"""The SIPREC recording server's errors: both are bad input from a peer (UserError)."""

from __future__ import annotations

from aftercall.core.errors import UserError


class SipMessageError(UserError):
    """A SIP message (or a body it carries) that cannot be accepted; `status` is the SIP response that says why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class RtpPacketError(UserError):
    """A datagram on a media port that is not an RTP packet we can use; it is counted and dropped, never answered."""
