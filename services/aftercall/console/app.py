"""`aftercall serve console`: the review console, served by the appliance over HTTPS.

Pages (server-rendered HTML, one small script, nothing from the network):
- /queue: the drafts waiting for the person (an agent's own calls, a supervisor's team's);
- /calls/ID: one summary, every field editable, each point's evidence marked in the redacted transcript; save
  (a new version), approve, the version history, the after-call work; from an approved summary, the customer's
  written confirmation;
- /search: summaries by agent, disposition, state, dates, customer reference (blind index);
- /audit: the audit trail and its verification (auditors);
- /outbox: CRM deliveries that failed for good, and retrying them.

Every read and change goes through the review desk, so each role may do exactly what it may do over gRPC.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Awaitable, Callable
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web

from aftercall.confirm.letter import Letter, LetterTemplate, draft_letter, require_approved
from aftercall.confirm.mailer import Mailer, record_sent, send_letter
from aftercall.console.auth import (CSRF_COOKIE, CSRF_FIELD, NEW_BROWSER_TOKEN, SESSION_COOKIE, ConsoleAuth, Visitor,
                                    new_browser_token)
from aftercall.console.forms import changed_fields, summary_widgets
from aftercall.core.config import ServerConfig, parse_address
from aftercall.core.documents import utc_day
from aftercall.core.errors import (AftercallError, AuthenticationError, ConfigError, NotFoundError,
                                   PermissionDeniedError, UserError)
from aftercall.core.rpc import check_listen_security, status_code_for
from aftercall.crm.outbox import Outbox
from aftercall.review.desk import ReviewDesk
from aftercall.review.store import APPROVED, DRAFT, EDITED, MAX_PAGE, StoredSummary, SummaryFilter
from aftercall.summarise.taxonomy import Disposition

logger = logging.getLogger(__name__)

_HERE = Path(__file__).parent
_PAGE = 50
# Security headers on every page: no script or style from anywhere but the console, never framed, never cached (the
# pages hold call content), no referrer (it holds call ids) beyond the console itself. "same-origin" rather than
# "no-referrer": under no-referrer a browser sends `Origin: null` with the console's own forms.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
# HTTP statuses by the gRPC code the same error gets, so one table (core.rpc) decides what an error is.
_HTTP_STATUS = {"INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
                "ALREADY_EXISTS": 409, "ABORTED": 409, "FAILED_PRECONDITION": 409, "RESOURCE_EXHAUSTED": 503,
                "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504}
_STATE_NAMES = {DRAFT: "draft", EDITED: "edited", APPROVED: "approved"}
# Keys a version differs in without anyone writing them (a redraft's run time, the redaction counts).
_BOOKKEEPING = {"timings", "redactions"}

def _http_status(exc: AftercallError) -> int:
    return _HTTP_STATUS.get(status_code_for(exc).name, 500)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Confirmations:
    """The customer's written confirmation: the site's letter template and its mail relay ([smtp])."""

    template: LetterTemplate
    mailer: Mailer


@dataclass
class Console:
    """What the pages use. `outbox` and `confirmations` are None where the site has no CRM push or no SMTP relay."""

    desk: ReviewDesk
    auth: ConsoleAuth
    taxonomy: tuple[Disposition, ...]
    outbox: Outbox | None = None
    confirmations: Confirmations | None = None


CONSOLE = web.AppKey("console", Console)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
# Per request: who sent it, and the form it POSTed (read and checked once, before the handler).
VISITOR = web.RequestKey("visitor", Visitor)
FORM = web.RequestKey("form", object)


def _templates() -> jinja2.Environment:
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(_HERE / "templates"), autoescape=True,
                                     undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters["when"] = _when
    environment.filters["duration"] = _duration
    return environment


def _when(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


def _render(request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
    visitor: Visitor | None = request.get(VISITOR)
    console: Console = request.app[CONSOLE]
    page = request.app[TEMPLATES].get_template(template).render(
        visitor=visitor, csrf_field=CSRF_FIELD, has_outbox=console.outbox is not None, **values)
    return web.Response(text=page, status=status, content_type="text/html", charset="utf-8")


# -- middleware: security headers, the visitor, errors as pages --------------------------------------------------------
@web.middleware
async def _security(request: web.Request, handler: Handler) -> web.StreamResponse:
    browser = request.cookies.get(CSRF_COOKIE)
    if not browser:
        request[NEW_BROWSER_TOKEN] = new_browser_token()  # this page's forms use it; the cookie goes with the response
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects and aiohttp's own errors: a plain response with the headers
        response = web.Response(status=exc.status, headers=exc.headers, text=exc.text)
    response.headers.update(_HEADERS)
    if not browser:
        set_cookie(request, response, CSRF_COOKIE, request[NEW_BROWSER_TOKEN])
    return response


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str,
               max_age: int | None = None) -> None:
    """HttpOnly and SameSite=Strict always; Secure over HTTPS (a browser drops a Secure cookie sent over plain
    HTTP, which the console speaks only on loopback)."""
    response.set_cookie(name, value, secure=request.secure, httponly=True, samesite="Strict", path="/",
                        max_age=max_age)


@web.middleware
async def _visitor(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/static/") or request.path == "/login":
        return await handler(request)
    visitor = request.app[CONSOLE].auth.visitor(request)
    if visitor is None:
        if request.method == "GET":
            raise web.HTTPSeeOther("/login")
        raise web.HTTPUnauthorized(text="sign in first")
    request[VISITOR] = visitor
    if request.method == "POST":
        request[FORM] = await request.post()
        request.app[CONSOLE].auth.check_form(request, request[FORM], visitor.identity)
    return await handler(request)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AftercallError as exc:
        status = _http_status(exc)
        if status >= 500:
            logger.error("console %s %s failed: %s", request.method, request.path, exc)
        return _render(request, "error.html", status=status, message=str(exc))


# -- pages ------------------------------------------------------------------------------------------------------------
async def _home(request: web.Request) -> web.Response:
    visitor: Visitor = request[VISITOR]
    target = {"auditor": "/audit", "admin": "/outbox"}.get(visitor.role or "", "/queue")
    raise web.HTTPSeeOther(target)


def _redirect(location: str) -> web.Response:
    """A 303 to return (rather than raise) where the response sets a cookie."""
    return web.Response(status=303, headers={"Location": location})


async def _login_page(request: web.Request) -> web.Response:
    console: Console = request.app[CONSOLE]
    return _render(request, "login.html", csrf=console.auth.csrf_token(request, None), error="")


async def _login(request: web.Request) -> web.Response:
    console: Console = request.app[CONSOLE]
    form = await request.post()
    try:
        console.auth.check_form(request, form, None)
        user, session = console.auth.sign_in(str(form.get("token", "")))
    except (AuthenticationError, PermissionDeniedError) as exc:
        return _render(request, "login.html", status=_http_status(exc), csrf=console.auth.csrf_token(request, None),
                       error=str(exc))
    logger.info("console: %s signed in", user)
    response = _redirect("/")
    set_cookie(request, response, SESSION_COOKIE, session, console.auth.session_max_age)
    return response


async def _logout(request: web.Request) -> web.Response:
    response = _redirect("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


def _row(console: Console, stored: StoredSummary) -> dict[str, Any]:
    summary = stored.summary
    return {"call_id": stored.call_id, "agent_id": stored.agent_id, "queue": stored.queue,
            "state": _STATE_NAMES[stored.state], "version": stored.version, "created_at": stored.created_at,
            "disposition": stored.disposition_code, "reason": summary.get("reason_for_contact", ""),
            "complete": stored.complete, **console.desk.after_call_work(stored)}


async def _queue(request: web.Request) -> web.Response:
    console: Console = request.app[CONSOLE]
    visitor: Visitor = request[VISITOR]
    rows = []
    for state in (DRAFT, EDITED):
        page, _ = console.desk.search(visitor.identity, SummaryFilter(state=state), MAX_PAGE)
        rows += [_row(console, stored) for stored in page]
    rows.sort(key=lambda row: row["created_at"])  # oldest first: the customer who has waited longest
    return _render(request, "queue.html", rows=rows)


def _history(stored: StoredSummary) -> list[dict[str, Any]]:
    """Each version with the fields it changed from the one before."""
    versions, previous = [], None
    for version in stored.history:
        changed = [key for key, value in version.summary.items()
                   if previous is not None and previous.get(key) != value and key not in _BOOKKEEPING]
        versions.append({"version": version.version, "author": version.author, "created_at": version.created_at,
                         "changed": changed})
        previous = version.summary
    return versions


async def _summary(request: web.Request, error: str = "", status: int = 200) -> web.Response:
    console: Console = request.app[CONSOLE]
    visitor: Visitor = request[VISITOR]
    stored = console.desk.open(visitor.identity, request.match_info["call_id"], include_history=True)
    may_change = console.desk.may_change(visitor.identity, stored)
    summary = stored.summary
    return _render(request, "summary.html", status=status, stored=stored, state=_STATE_NAMES[stored.state],
                   widgets=summary_widgets(summary, console.taxonomy), editable=may_change and stored.state != APPROVED,
                   transcript=summary.get("transcript", []), redactions=summary.get("redactions", []),
                   history=_history(stored), work=console.desk.after_call_work(stored), error=error,
                   notice=request.query.get("notice", ""),
                   can_confirm=may_change and stored.state == APPROVED and console.confirmations is not None)


def _expected_version(form) -> int:
    try:
        return int(form.get("version", ""))
    except ValueError:
        raise UserError("the form lacks the version it was made from: reload the page") from None


async def _edit(request: web.Request) -> web.Response:
    console: Console = request.app[CONSOLE]
    visitor: Visitor = request[VISITOR]
    call_id, form = request.match_info["call_id"], request[FORM]
    stored = console.desk.open(visitor.identity, call_id)
    try:
        fields = changed_fields(stored.summary, form, console.taxonomy)
        edited = console.desk.edit(visitor.identity, call_id, _expected_version(form), fields)
    except UserError as exc:  # the page again, with what was wrong, so the person can fix it
        return await _summary(request, error=str(exc), status=_http_status(exc))
    raise web.HTTPSeeOther(f"/calls/{quote(call_id)}?notice=Saved+as+version+{edited.version}")


async def _approve(request: web.Request) -> web.Response:
    console: Console = request.app[CONSOLE]
    visitor: Visitor = request[VISITOR]
    call_id = request.match_info["call_id"]
    try:
        console.desk.approve(visitor.identity, call_id, _expected_version(request[FORM]))
    except UserError as exc:
        return await _summary(request, error=str(exc), status=_http_status(exc))
    raise web.HTTPSeeOther(f"/calls/{quote(call_id)}?notice=Approved")


def _confirmations(console: Console) -> Confirmations:
    if console.confirmations is None:
        raise web.HTTPNotFound(text="no mail relay is configured ([smtp] host)")
    return console.confirmations


async def _confirmation_page(request: web.Request, letter: Letter | SimpleNamespace | None = None,
                             recipient: str = "", error: str = "", status: int = 200) -> web.Response:
    console: Console = request.app[CONSOLE]
    confirmations = _confirmations(console)
    stored = console.desk.open_to_change(request[VISITOR].identity, request.match_info["call_id"],
                                         "write the customer's confirmation")
    letter = letter or draft_letter(confirmations.template, stored)
    return _render(request, "confirmation.html", status=status, stored=stored, letter=letter, recipient=recipient,
                   error=error)


async def _send_confirmation(request: web.Request) -> web.Response:
    console: Console = request.app[CONSOLE]
    confirmations = _confirmations(console)
    visitor: Visitor = request[VISITOR]
    call_id, form = request.match_info["call_id"], request[FORM]
    recipient, subject, body = (str(form.get(key, "")) for key in ("recipient", "subject", "body"))
    stored = console.desk.open_to_change(visitor.identity, call_id, "write the customer's confirmation")
    require_approved(stored)
    desk = console.desk
    try:
        message_id = await asyncio.to_thread(send_letter, confirmations.mailer, desk.redactor, desk.metrics,
                                             recipient, subject, body)
    except UserError as exc:  # the agent's to fix: the form again, as they wrote it
        if isinstance(exc, ConfigError):
            raise
        written = SimpleNamespace(subject=subject, body=body)
        return await _confirmation_page(request, written, recipient, str(exc), _http_status(exc))
    record_sent(desk.store, visitor.identity or "unidentified", call_id, recipient, message_id)
    raise web.HTTPSeeOther(f"/calls/{quote(call_id)}?notice=Confirmation+sent")


def _date(text: str, key: str, end: bool = False) -> float | None:
    """The start of the day (of the next one for `end`, so the day itself is included); None when empty."""
    if not text:
        return None
    return utc_day(text, key) + (86400 if end else 0)


async def _search(request: web.Request) -> web.Response:
    console: Console = request.app[CONSOLE]
    visitor: Visitor = request[VISITOR]
    query = request.query
    state = query.get("state", "")
    if state and state not in _STATE_NAMES:
        raise UserError(f"state: one of {', '.join(_STATE_NAMES)}, got {state!r}")
    try:
        offset = max(0, int(query.get("offset", "0")))
    except ValueError:
        raise UserError("offset: a number") from None
    where = SummaryFilter(agent_id=query.get("agent", "").strip(),
                          disposition_code=query.get("disposition", "").strip(), state=state,
                          customer_ref=query.get("customer_ref", "").strip(), entity=query.get("entity", "").strip(),
                          created_from=_date(query.get("from", ""), "from"),
                          created_to=_date(query.get("to", ""), "to", end=True))
    searched = any(query.get(key) for key in ("agent", "disposition", "state", "customer_ref", "entity", "from", "to",
                                              "go"))
    rows, next_offset = [], None
    if searched:
        page, next_offset = console.desk.search(visitor.identity, where, _PAGE, offset)
        rows = [_row(console, stored) for stored in page]
    next_query = urlencode({**query, "offset": str(next_offset)}) if next_offset is not None else None
    return _render(request, "search.html", query=dict(query), rows=rows, searched=searched, next_query=next_query,
                   states=list(_STATE_NAMES), taxonomy=console.taxonomy)


def _auditor(console: Console, visitor: Visitor, action: str) -> None:
    console.desk.access.require(visitor.identity, action, "auditor")


async def _audit(request: web.Request) -> web.Response:
    console: Console = request.app[CONSOLE]
    visitor: Visitor = request[VISITOR]
    _auditor(console, visitor, "reading the audit trail")
    audit = console.desk.store.audit
    call_id = request.query.get("call_id", "").strip()
    entries = list(reversed(audit.entries(call_id)))[:500]  # newest first
    audit.record(visitor.identity or "unidentified", "audit-read", call_id)
    return _render(request, "audit.html", entries=entries, call_id=call_id, verdict=None,
                   details=lambda entry: json.dumps({k: v for k, v in entry.items()
                                                     if k not in ("seq", "at", "action", "actor", "target")},
                                                    ensure_ascii=False))


async def _verify(request: web.Request) -> web.Response:
    console: Console = request.app[CONSOLE]
    visitor: Visitor = request[VISITOR]
    _auditor(console, visitor, "verifying the audit trail")
    verdict = console.desk.store.audit.verify()
    return _render(request, "audit.html", entries=[], call_id="", verdict=verdict, details=lambda entry: "")


def _outbox(console: Console, visitor: Visitor, action: str):
    """The CRM outbox, for admins and supervisors (its dead letters name call ids and receivers, no summary)."""
    if console.outbox is None:
        raise web.HTTPNotFound(text="no CRM push is configured ([crm] endpoints)")
    console.desk.access.require(visitor.identity, action, "admin", "supervisor")
    return console.outbox


async def _outbox_page(request: web.Request) -> web.Response:
    console: Console = request.app[CONSOLE]
    outbox = _outbox(console, request[VISITOR], "seeing the CRM outbox")
    return _render(request, "outbox.html", counts=outbox.counts(), letters=outbox.dead_letters(200),
                   notice=request.query.get("notice", ""))


async def _outbox_action(request: web.Request) -> web.Response:
    console: Console = request.app[CONSOLE]
    visitor: Visitor = request[VISITOR]
    action = request.match_info["action"]
    outbox = _outbox(console, visitor, f"{action}ing CRM dead letters")
    form = request[FORM]
    event_id, endpoint = str(form.get("event_id", "")), str(form.get("endpoint", "")) or None
    if not event_id:
        raise UserError("event_id: which dead letter")
    changed = outbox.retry(event_id, endpoint) if action == "retry" else outbox.discard(event_id, endpoint)
    if not changed:
        raise NotFoundError(f"no dead letter {event_id!r} to {action}")
    console.desk.store.audit.record(visitor.identity or "unidentified", f"crm-{action}", "", event_id=event_id,
                                    endpoint=endpoint or "every receiver")
    done = "retried" if action == "retry" else "discarded"
    raise web.HTTPSeeOther(f"/outbox?{urlencode({'notice': f'Event {event_id} {done}'})}")


def build_app(console: Console) -> web.Application:
    app = web.Application(middlewares=[_security, _errors, _visitor], client_max_size=256 * 1024)
    app[CONSOLE] = console
    app[TEMPLATES] = _templates()
    app.add_routes([
        web.get("/", _home),
        web.get("/login", _login_page), web.post("/login", _login), web.post("/logout", _logout),
        web.get("/queue", _queue),
        web.get("/calls/{call_id}", _summary),
        web.post("/calls/{call_id}/edit", _edit), web.post("/calls/{call_id}/approve", _approve),
        web.get("/calls/{call_id}/confirmation", _confirmation_page),
        web.post("/calls/{call_id}/confirmation", _send_confirmation),
        web.get("/search", _search),
        web.get("/audit", _audit), web.post("/audit/verify", _verify),
        web.get("/outbox", _outbox_page), web.post(r"/outbox/{action:retry|discard}", _outbox_action),
        web.static("/static", _HERE / "static"),
    ])
    return app


def _ssl_context(server: ServerConfig) -> ssl.SSLContext | None:
    """The appliance's certificate; with a client CA, certificates are asked for but optional (a person without
    one signs in with a token)."""
    if not server.tls_cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(server.tls_cert_file, server.tls_key_file)
        if server.tls_client_ca_file:
            context.load_verify_locations(server.tls_client_ca_file)
            context.verify_mode = ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"config server.tls_cert_file: cannot load the console's certificate ({exc})") from exc
    return context


class ConsoleServer:
    def __init__(self, runner: web.AppRunner, port: int, scheme: str):
        self._runner = runner
        self.port = port
        self.scheme = scheme

    async def stop(self) -> None:
        await self._runner.cleanup()


async def start_console(console: Console, server: ServerConfig, listen: str) -> ConsoleServer:
    """The console on `listen` (console.listen), with the appliance's TLS files ([server])."""
    check_listen_security(listen, server, "console.listen")
    host, port = parse_address(listen, "config console.listen")
    runner = web.AppRunner(build_app(console), access_log=None)  # the paths hold call ids: no access log
    await runner.setup()
    context = _ssl_context(server)
    try:
        site = web.TCPSite(runner, host, port, ssl_context=context)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"config console.listen: cannot bind {listen} ({exc.strerror})") from exc
    return ConsoleServer(runner, runner.addresses[0][1], "https" if context else "http")
