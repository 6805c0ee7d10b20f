"""The metrics mechanism: one Prometheus registry per process (tests build a fresh one each), each service's metrics
on it (aftercall/<service>/metrics.py, gathered by aftercall.metrics), the errors every gRPC server returns, and the
/metrics endpoint.

Names follow `aftercall_<subsystem>_<name>_<unit>`; labels are bounded (stage, type, status code, source), never a
call id or an agent id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, start_http_server

from aftercall.core.config import ServerConfig, parse_address
from aftercall.core.errors import ConfigError


class MetricSet:
    """Base of a service's metrics: registered on the process's registry, or on a fresh one of their own."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()


class RpcMetrics(MetricSet):
    """Errors the gRPC servers return, counted by `aftercall.core.rpc.ErrorInterceptor`."""

    def __init__(self, registry: CollectorRegistry | None = None):
        super().__init__(registry)
        self.errors = Counter("aftercall_errors_total", "Errors returned to clients, by service and status code.",
                              ["service", "code"], registry=self.registry)

    def rpc_error(self, method: str, code) -> None:
        """Hook for `aftercall.core.rpc.ErrorInterceptor`: "/aftercall.v1.CallIngest/StreamCall" -> CallIngest."""
        service = method.strip("/").split("/")[0].rsplit(".", 1)[-1]
        self.errors.labels(service=service, code=code.name).inc()


def serve_metrics(registry: CollectorRegistry, listen: str, config: ServerConfig):
    """The /metrics endpoint, over TLS (and mutual TLS) when the gRPC listener has it. Returns (server, thread)."""
    host, port = parse_address(listen, "config server.metrics_listen")
    try:
        return _start_http_server(host, port, registry, config)
    except OSError as exc:
        raise ConfigError(f"config server.metrics_listen: cannot bind {listen} ({exc.strerror})") from exc


def _start_http_server(host: str, port: int, registry: CollectorRegistry, config: ServerConfig):
    return start_http_server(
        port, addr=host, registry=registry,
        certfile=config.tls_cert_file or None, keyfile=config.tls_key_file or None,
        client_cafile=config.tls_client_ca_file or None, client_auth_required=bool(config.tls_client_ca_file))
