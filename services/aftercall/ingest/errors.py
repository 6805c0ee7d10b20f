"""The ingest service's own errors."""

from __future__ import annotations

from aftercall.core.errors import UserError


class StreamProtocolError(UserError):
    """A call stream out of order: audio before CallStart, a sequence gap, an oversized chunk, ..."""
