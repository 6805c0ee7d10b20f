"""Who is at the console, and that a form came from the console's own page.

A person is known, in this order, by their client certificate (mutual TLS, as on gRPC), by the session a signed
token started (`aftercall tokens issue`, entered once on the sign-in page), or, where `[access]` believes it, by
the user name a local proxy on loopback asserts (X-Aftercall-User). With no roles configured (single-user mode, on
loopback only) nobody needs to sign in.

The session lives in a Secure, HttpOnly, SameSite=Strict cookie holding signed claims (the user and the expiry):
nothing to store on the server, and only the key file can make one. Every form carries a CSRF token bound to a
random per-browser cookie and to the person, checked on every POST together with the Origin header.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from aftercall.core.config import is_loopback
from aftercall.core.errors import AuthenticationError, PermissionDeniedError
from aftercall.core.rpc import USER_METADATA_KEY
from aftercall.vault.access import AccessPolicy
from aftercall.vault.keys import KeyRing
from aftercall.vault.tokens import sign_claims, signed_claims, verify_token

SESSION_COOKIE = "aftercall_session"
CSRF_COOKIE = "aftercall_csrf"
CSRF_FIELD = "csrf"
# A browser's first request has no CSRF cookie yet: the token made for it is kept here, for that page's forms.
NEW_BROWSER_TOKEN = web.RequestKey("new_browser_token", str)
_SESSION_PURPOSE = b"aftercall console sessions"
_CSRF_PURPOSE = b"aftercall console csrf"


@dataclass(frozen=True)
class Visitor:
    identity: str | None  # None only in single-user mode
    role: str | None
    via: str  # certificate, session, loopback or single-user
    csrf: str  # the token this person's forms carry


def _certificate_name(request: web.Request) -> str | None:
    """The verified client certificate's CN, else its first DNS name (as gRPC reads it)."""
    transport = request.transport
    certificate = transport.get_extra_info("peercert") if transport is not None else None
    if not certificate:
        return None
    for rdn in certificate.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return next((value for kind, value in certificate.get("subjectAltName", ()) if kind == "DNS"), None)


class ConsoleAuth:
    def __init__(self, access: AccessPolicy, keys: KeyRing, session_hours: float, clock=time.time):
        self._access = access
        self._keys = keys
        self._session_s = session_hours * 3600
        self._csrf_key = hmac.new(keys.index_key, _CSRF_PURPOSE, hashlib.sha256).digest()
        self._clock = clock

    @property
    def session_max_age(self) -> int:
        return int(self._session_s)

    def visitor(self, request: web.Request) -> Visitor | None:
        """Who sent the request; None when nobody is signed in and someone must be."""
        identity, via = _certificate_name(request), "certificate"
        if identity is None:
            identity, via = self._session_user(request), "session"
        if identity is None and self._access.believes_loopback_user and request.remote and is_loopback(
                request.remote):
            identity, via = request.headers.get(USER_METADATA_KEY) or None, "loopback"
        if identity is None:
            if self._access.enforced:
                return None
            via = "single-user"
        return Visitor(identity, self._access.role(identity), via, self.csrf_token(request, identity))

    def _session_user(self, request: web.Request) -> str | None:
        claims = signed_claims(self._keys, _SESSION_PURPOSE, request.cookies.get(SESSION_COOKIE, ""))
        if claims is None or claims.get("exp", 0) < self._clock():
            return None
        return str(claims["sub"])

    def sign_in(self, token: str) -> tuple[str, str]:
        """(user, session cookie value) for a valid identity token; AuthenticationError otherwise. A user with no
        role is refused here, not on every page after."""
        user = verify_token(self._keys, token.strip(), self._clock())
        if self._access.enforced and self._access.role(user) is None:
            raise PermissionDeniedError(f"{user!r} has no role on this appliance (config [access])")
        claims = {"sub": user, "exp": int(self._clock() + self._session_s), "sid": secrets.token_urlsafe(9)}
        return user, sign_claims(self._keys, _SESSION_PURPOSE, claims)

    def csrf_token(self, request: web.Request, identity: str | None) -> str:
        browser = request.cookies.get(CSRF_COOKIE) or request.get(NEW_BROWSER_TOKEN, "")
        message = f"{browser}\0{identity or ''}".encode()
        return hmac.new(self._csrf_key, message, hashlib.sha256).hexdigest()

    def check_form(self, request: web.Request, form, identity: str | None) -> None:
        """A POST from the console's own page: the same origin, and the token of this browser and person."""
        origin = request.headers.get("Origin")
        if origin is not None and (origin == "null" or urlsplit(origin).netloc != request.host):
            raise PermissionDeniedError("the form was sent from another site")
        if not request.cookies.get(CSRF_COOKIE) or not hmac.compare_digest(
                str(form.get(CSRF_FIELD, "")), self.csrf_token(request, identity)):
            raise AuthenticationError("the form has expired or did not come from this console: reload the page")


def new_browser_token() -> str:
    return secrets.token_urlsafe(32)
