"""Domain exceptions: the kinds of error every service raises. The CLI maps `UserError` to exit code 2;
`aftercall.core.rpc` maps each kind to a gRPC status code (the table is there, in one place). A service's own errors
(e.g. aftercall.siprec.errors) subclass one of these kinds, so they map without the core knowing them."""

from __future__ import annotations

import errno
import sqlite3
from contextlib import contextmanager
from typing import Iterator


class AftercallError(Exception):
    """Base of every error aftercall raises on purpose."""


class UserError(AftercallError):
    """Something the caller supplied is wrong: bad input, bad config. Never a bug of ours."""


class AudioFormatError(UserError):
    """Audio that is corrupt, truncated, empty or in a format outside the audio contract."""


class TranscriptFormatError(UserError):
    """A transcript JSON that does not follow the transcript schema."""


class ConfigError(UserError):
    """A config file or taxonomy that fails validation; the message names the key."""


class MalformedRequestError(UserError):
    """A gRPC request whose bytes do not decode as the method's message (random bytes, a string that is not UTF-8)."""


class AlreadyExistsError(UserError):
    """A call id that is already known."""


class NotFoundError(UserError):
    """No such call or summary."""


class ConflictError(UserError):
    """Someone else changed the record first (optimistic locking)."""


class StateError(UserError):
    """The operation does not apply in the record's current state (e.g. editing an approved summary)."""


class StreamTimeoutError(AftercallError):
    """A client that stopped sending mid-call."""


class AuthenticationError(AftercallError):
    """A request without the API key a server requires, or with a wrong one."""


class BackendUnavailableError(AftercallError):
    """A backend server (Riva, Triton) could not be reached or kept failing: the message names it and how often."""


class CallFailedError(AftercallError):
    """A call that could not be summarised after every attempt; it stays on disk (state failed) for an operator."""


class CapacityError(AftercallError):
    """Over a configured limit (active calls, pending calls, disk): retry later or elsewhere."""


class DiskFullError(CapacityError):
    """A write the request needed (audio, a database row, an audit entry) found the data disk full."""


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC or EDQUOT from a file write, SQLite's SQLITE_FULL ("database or disk is full"), PostgreSQL's
    disk_full (SQLSTATE 53100)."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(exc, sqlite3.Error):
        return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_FULL
    return getattr(exc, "sqlstate", None) == "53100"


@contextmanager
def disk_full_is_capacity(message: str) -> Iterator[None]:
    """A write inside that finds the disk full raises DiskFullError(message) instead."""
    try:
        yield
    except Exception as exc:
        if is_disk_full(exc):
            raise DiskFullError(message) from exc
        raise


class ModelIntegrityError(AftercallError):
    """A model file is missing or does not match its pinned sha256: refuse to run it."""


class RecordUnreadableError(AftercallError):
    """A stored record cannot be decrypted: altered, truncated, or its key retired or missing. Nothing is guessed."""


class PermissionDeniedError(AftercallError):
    """The caller is known but their role does not allow this."""
