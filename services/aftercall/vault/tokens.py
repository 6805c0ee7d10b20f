"""Signed identity tokens, for clients that cannot hold a client certificate (a web UI behind the site's single
sign-on, say): `aftercall tokens issue USER` prints one, the client sends it as `x-aftercall-token` metadata, and
the server believes the user it names until it expires. HMAC-SHA256 with a key derived from the key file, so every
appliance sharing the key file accepts the same tokens and nobody without the key file can make one."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from aftercall.core.errors import AuthenticationError
from aftercall.vault.keys import KeyRing

_MAX_TTL_S = 7 * 86400
_IDENTITY = b"aftercall identity tokens"


def _key(keys: KeyRing, purpose: bytes) -> bytes:
    return hmac.new(keys.index_key, purpose, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_claims(keys: KeyRing, purpose: bytes, claims: dict) -> str:
    """`claims` (JSON) and their HMAC under a key for `purpose` alone: a token of one kind is never another kind."""
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{payload}.{_b64(hmac.new(_key(keys, purpose), payload.encode(), hashlib.sha256).digest())}"


def signed_claims(keys: KeyRing, purpose: bytes, token: str) -> dict | None:
    """The claims of a token `sign_claims` made for `purpose`; None when it was not (or was altered)."""
    payload, _, signature = token.partition(".")
    expected = _b64(hmac.new(_key(keys, purpose), payload.encode(), hashlib.sha256).digest())
    if not signature or not hmac.compare_digest(signature, expected):
        return None
    return json.loads(_unb64(payload))


def issue_token(keys: KeyRing, user: str, ttl_s: float, now: float | None = None) -> str:
    if not user or not 0 < ttl_s <= _MAX_TTL_S:
        raise ValueError(f"a token names a user and lives between 1 s and {_MAX_TTL_S // 86400} days")
    issued = time.time() if now is None else now
    return sign_claims(keys, _IDENTITY, {"sub": user, "exp": int(issued + ttl_s)})


def verify_token(keys: KeyRing, token: str, now: float | None = None) -> str:
    """The user a valid, unexpired token names; AuthenticationError otherwise (never a guess)."""
    claims = signed_claims(keys, _IDENTITY, token)
    if claims is None:
        raise AuthenticationError("x-aftercall-token: not a token this appliance's key file signed")
    if claims["exp"] < (time.time() if now is None else now):
        raise AuthenticationError("x-aftercall-token: expired; ask for a new one")
    return str(claims["sub"])
