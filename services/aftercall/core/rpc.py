"""The gRPC skeleton every aftercall server uses: TLS / mutual TLS, health and reflection, the one table that maps
domain exceptions to status codes (with `google.rpc` details), caller identity, and the client channel."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from aftercall.core import errors
from aftercall.core.config import ServerConfig, is_loopback, parse_address
from aftercall.core.errors import ConfigError

logger = logging.getLogger(__name__)

# Most specific first: the first matching class wins.
_STATUS_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (errors.CapacityError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.StreamTimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.AuthenticationError, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (errors.BackendUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (errors.CallFailedError, grpc.StatusCode.ABORTED),
    (errors.AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (errors.NotFoundError, grpc.StatusCode.NOT_FOUND),
    (errors.ConflictError, grpc.StatusCode.ABORTED),
    (errors.StateError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.UserError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ModelIntegrityError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.RecordUnreadableError, grpc.StatusCode.DATA_LOSS),
)
ERROR_DOMAIN = "aftercall"
_STATUS_DETAILS_KEY = "grpc-status-details-bin"
USER_METADATA_KEY = "x-aftercall-user"
TOKEN_METADATA_KEY = "x-aftercall-token"

ErrorHook = Callable[[str, grpc.StatusCode], None]


def status_code_for(exc: BaseException) -> grpc.StatusCode:
    for cls, code in _STATUS_CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _trailing_details(code: grpc.StatusCode, message: str, reason: str) -> tuple[tuple[str, bytes], ...]:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=[detail])
    return ((_STATUS_DETAILS_KEY, status.SerializeToString()),)


def error_reason(error: grpc.RpcError) -> str | None:
    """The `ErrorInfo.reason` a client gets with an aftercall error (e.g. "StreamProtocolError")."""
    trailing = error.trailing_metadata() or ()
    for key, value in trailing:
        if key == _STATUS_DETAILS_KEY:
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    return None


class RemoteError(errors.AftercallError):
    """A server refused or failed a request: its status code and message."""

    def __init__(self, error: grpc.RpcError):
        self.code = error.code()
        super().__init__(f"{self.code.name}: {error.details()}")


# What a request's bytes become when they do not decode as the method's message. The handler is then refused
# before the servicer sees anything: a deserializer that raised would reach the client as UNKNOWN naming the Python
# exception (a unary request) or, read inside the servicer, as INTERNAL (a stream).
_UNDECODABLE = object()


def _decoding(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # noqa: BLE001 - DecodeError, or whatever else bytes that are not the message cause
            return _UNDECODABLE
    return decode


def _undecodable(method: str) -> errors.MalformedRequestError:
    return errors.MalformedRequestError(f"{method}: a request message could not be decoded (not a valid protobuf "
                                        "message of this method's type)")


async def _decoded_stream(requests: AsyncIterator[Any], method: str) -> AsyncIterator[Any]:
    async for request in requests:
        if request is _UNDECODABLE:
            raise _undecodable(method)
        yield request


# A status message travels twice in the trailing metadata (grpc-message and the google.rpc.Status); a client refuses
# trailers over 16 KB and reports only "Stream removed" as RESOURCE_EXHAUSTED, so a message that quotes a long value
# (a 70,000-character call id) is cut well below that.
_MAX_MESSAGE_CHARS = 1000


def _bounded_message(message: str) -> str:
    return message if len(message) <= _MAX_MESSAGE_CHARS else f"{message[:_MAX_MESSAGE_CHARS]}... (cut)"


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Every handler's domain exceptions become one status code + message; anything else is INTERNAL, logged with
    its traceback but never echoed to the client. Requests that do not decode are INVALID_ARGUMENT."""

    def __init__(self, on_error: ErrorHook | None = None):
        self._on_error = on_error

    async def _abort(self, context: grpc.aio.ServicerContext, method: str, exc: BaseException) -> None:
        if errors.is_disk_full(exc):  # any write that found the data disk full: out of capacity, not our bug
            exc = errors.DiskFullError("the data disk is full; the request could not be stored, retry later")
        code = status_code_for(exc)
        if code is grpc.StatusCode.INTERNAL:
            logger.exception("%s failed", method, exc_info=exc)
            message = "internal error; the server log has the details"
        else:
            message = _bounded_message(str(exc))
        if self._on_error is not None:
            self._on_error(method, code)
        await context.abort(code, message, trailing_metadata=_trailing_details(code, message, type(exc).__name__))

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        deserializer = _decoding(handler.request_deserializer)

        def decoded(request: Any) -> Any:
            if handler.request_streaming:
                return _decoded_stream(request, method)
            if request is _UNDECODABLE:
                raise _undecodable(method)
            return request

        if handler.unary_unary or handler.stream_unary:
            behaviour = handler.unary_unary or handler.stream_unary

            async def single(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    return await behaviour(decoded(request), context)
                except (grpc.aio.AbortError, grpc.aio.UsageError):
                    raise
                except Exception as exc:  # noqa: BLE001 - the one place errors become status codes
                    await self._abort(context, method, exc)

            wrap = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
            return wrap(single, deserializer, handler.response_serializer)
        behaviour = handler.unary_stream or handler.stream_stream

        async def streaming(request: Any, context: grpc.aio.ServicerContext):
            try:
                async for response in behaviour(decoded(request), context):
                    yield response
            except (grpc.aio.AbortError, grpc.aio.UsageError):
                raise
            except Exception as exc:  # noqa: BLE001
                await self._abort(context, method, exc)

        wrap = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
        return wrap(streaming, deserializer, handler.response_serializer)


# The range protobuf's Timestamp allows (0001-01-01 to 9999-12-31, whole nanoseconds): past it the library raises.
_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)


def timestamp_seconds(stamp: Any, where: str) -> float:
    """A request's google.protobuf.Timestamp as seconds since 1970, or UserError naming `where` when it is not a
    valid one (nanos outside 0-999999999, a year outside 1-9999)."""
    if not (_TIMESTAMP_SECONDS[0] <= stamp.seconds <= _TIMESTAMP_SECONDS[1] and 0 <= stamp.nanos < 1_000_000_000):
        raise errors.UserError(f"{where} is not a valid time stamp ({stamp.seconds} s and {stamp.nanos} ns after "
                               "1970)")
    return stamp.seconds + stamp.nanos / 1e9


def read_secret_file(path: str, key: str) -> bytes:
    """A private key's bytes; refused (naming the config `key`) when other users could read the file."""
    try:
        mode = os.stat(path).st_mode
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"config {key}: cannot read {path} ({exc.strerror})") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"config {key}: {path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
                          "chmod 600 it")
    return data


def _read_file(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"config {key}: cannot read {path} ({exc.strerror})") from exc


def read_api_key(path: str, key: str) -> str | None:
    """An API key from its file (systemd credential); empty path: none. gRPC metadata takes one line of visible
    ASCII, anything else would fail every call with a vague INTERNAL, so it is refused here, naming the key."""
    if not path:
        return None
    try:
        value = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config {key}: cannot read {path} ({getattr(exc, 'strerror', None) or exc})") from exc
    if not value or not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        raise ConfigError(f"config {key}: {path} does not hold one API key (one line, no spaces)")
    return value


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    if not config.tls_cert_file:
        return None
    chain = _read_file(config.tls_cert_file, "server.tls_cert_file")
    key = read_secret_file(config.tls_key_file, "server.tls_key_file")
    client_ca = _read_file(config.tls_client_ca_file, "server.tls_client_ca_file") if config.tls_client_ca_file \
        else None
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca, require_client_auth=bool(client_ca))


def check_listen_security(listen: str, config: ServerConfig, key: str) -> None:
    """`key`: the setting that named the address (server.listen, console.listen, ...)."""
    host, _ = parse_address(listen, f"config {key}")
    if not config.tls_cert_file and not is_loopback(host) and not config.allow_plaintext_remote:
        raise ConfigError(f"config {key}: {listen} is not loopback and TLS is off; set server.tls_cert_file "
                          "and server.tls_key_file (or server.allow_plaintext_remote = true on a trusted network)")


def _peer_is_loopback(context: grpc.aio.ServicerContext) -> bool:
    peer = context.peer() or ""  # "ipv4:127.0.0.1:5555", "ipv6:[::1]:5555", "unix:..."
    if peer.startswith("unix:"):
        return True
    host = peer.partition(":")[2].rpartition(":")[0].strip("[]")
    return is_loopback(host)


def caller_identity(context: grpc.aio.ServicerContext, loopback_metadata: bool = True) -> str | None:
    """Who is calling. Under mutual TLS only the client certificate counts (its CN, else its first DNS SAN);
    otherwise the `x-aftercall-user` metadata is believed only from loopback (a local UI or proxy that did the
    authentication), and only when `loopback_metadata`. None when neither applies."""
    auth = context.auth_context()
    if auth.get("transport_security_type", [b""])[0] == b"ssl" and context.peer_identities():
        names = auth.get("x509_common_name") or auth.get("x509_subject_alternative_name") or []
        return names[0].decode() if names else None
    if loopback_metadata and _peer_is_loopback(context):
        for key, value in context.invocation_metadata() or ():
            if key == USER_METADATA_KEY and value:
                return str(value)[:128]
    return None


def require_identity(context: grpc.aio.ServicerContext, action: str, loopback_metadata: bool = True) -> str:
    identity = caller_identity(context, loopback_metadata)
    if identity is None:
        # Only the ways this server believes: where loopback users are not trusted, naming the user metadata would
        # send the caller after something that cannot work.
        ways = ["a client certificate (mutual TLS)", f"a signed token ({TOKEN_METADATA_KEY}, `aftercall tokens issue`)"]
        ways += [f"from loopback, the {USER_METADATA_KEY} metadata"] if loopback_metadata else []
        raise errors.AuthenticationError(f"{action} needs to know who you are: {', '.join(ways[:-1])} or {ways[-1]}")
    return identity


@dataclass(frozen=True)
class ServiceBinding:
    """One servicer to mount: its full proto name (for health and reflection) and how to add it."""

    name: str
    add: Callable[[grpc.aio.Server], None]


class GrpcServer:
    """A started `grpc.aio` server with health (overall and per service) and reflection."""

    def __init__(self, bindings: list[ServiceBinding], config: ServerConfig, listen: str,
                 on_error: ErrorHook | None = None, max_message_bytes: int = 4 * 1024 * 1024):
        check_listen_security(listen, config, "server.listen")
        self._listen = listen
        self._bindings = bindings
        self._credentials = server_credentials(config)
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(
            interceptors=[ErrorInterceptor(on_error)],
            options=[("grpc.max_receive_message_length", max_message_bytes),
                     ("grpc.max_send_message_length", max_message_bytes),
                     ("grpc.so_reuseport", 0)],
        )
        for binding in bindings:
            binding.add(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [b.name for b in bindings] + [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                                              reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, self.server)
        self.port = 0

    async def start(self) -> int:
        try:
            if self._credentials is None:
                self.port = self.server.add_insecure_port(self._listen)
            else:
                self.port = self.server.add_secure_port(self._listen, self._credentials)
        except RuntimeError as exc:  # what grpc raises when the address is taken or not ours
            await self.server.stop(None)
            raise ConfigError(f"config server.listen: cannot bind {self._listen} (in use, or not an address "
                              "of this machine)") from exc
        await self.server.start()
        for name in ["", *(b.name for b in self._bindings)]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def stop(self, grace: float) -> None:
        """Health goes NOT_SERVING first so load balancers stop sending, then in-flight RPCs get `grace` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


class _IdentityMetadata(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds who is calling to every call: `x-aftercall-user` (believed from loopback only) and/or a signed
    `x-aftercall-token`."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]):
        self._metadata = metadata

    def _details(self, details):
        return details._replace(metadata=tuple(details.metadata or ()) + self._metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)


def client_channel(address: str, ca_file: str = "", cert_file: str = "", key_file: str = "",
                   user: str = "", token: str = "") -> grpc.Channel:
    """A channel to an aftercall server: plaintext, TLS (ca_file) or mutual TLS (plus cert_file and key_file).

    The CLI's clients are synchronous on purpose: a grpc.aio client that is still writing when the server ends a
    stream early reports INTERNAL instead of the server's status (grpc/grpc#36066); the sync client does not.
    """
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    if not ca_file:
        channel = grpc.insecure_channel(address, options=options)
    else:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(ca_file).read_bytes(),
            private_key=Path(key_file).read_bytes() if key_file else None,
            certificate_chain=Path(cert_file).read_bytes() if cert_file else None,
        )
        channel = grpc.secure_channel(address, credentials, options=options)
    identity = tuple((key, value) for key, value in ((USER_METADATA_KEY, user), (TOKEN_METADATA_KEY, token)) if value)
    return grpc.intercept_channel(channel, _IdentityMetadata(identity)) if identity else channel
