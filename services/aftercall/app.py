"""`aftercall serve`: the appliance's services, all in one process or one per process, built the same way.

Config -> logging -> adapters (database, spool, pipeline, metrics) injected into the servicers -> one gRPC server
with health and reflection -> on SIGTERM/SIGINT: health NOT_SERVING, in-flight calls get `server.shutdown_grace_s`,
then whatever is unfinished is left on disk for the next start to resume.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from aftercall.core.config import Config, parse_address
from aftercall.core.database import lock_data_dir
from aftercall.core.errors import ConfigError
from aftercall.core.metrics import Metrics, serve_metrics
from aftercall.core.rpc import GrpcServer, check_listen_security, is_loopback, read_api_key
from aftercall.ingest.processor import CallProcessor
from aftercall.ingest.service import CallIngestService
from aftercall.asr.service import RivaCompatibleAsr
from aftercall.confirm.letter import LetterTemplate
from aftercall.confirm.mailer import Mailer
from aftercall.console.app import Confirmations, Console, ConsoleServer, start_console
from aftercall.console.auth import ConsoleAuth
from aftercall.crm.outbox import Outbox
from aftercall.crm.webhook import WebhookDelivery, read_secret
from aftercall.pipeline import Pipeline, build_embedded_transcriber, build_pipeline, build_redactor
from aftercall.review.desk import ReviewDesk
from aftercall.review.service import SummariesService
from aftercall.siprec.server import SiprecServer, start_siprec
from aftercall.stores import open_stores
from aftercall.summarise.taxonomy import load_taxonomy
from aftercall.vault.access import AccessPolicy

logger = logging.getLogger(__name__)

# What `aftercall serve` runs with no SERVICE named; `asr` (the Riva-compatible recogniser) is started on its own,
# `triton` (a tritonserver process) only on its own; `siprec` (the SIPREC recording server, a client of ingest) on
# its own or beside ingest; `console` (the review console, HTTPS on console.listen) on its own or beside the others.
SERVICES = ("ingest", "summaries")
KNOWN_SERVICES = (*SERVICES, "console", "asr", "siprec", "triton")
_STORING = {"ingest", "summaries", "console"}  # the services that open the summary store


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "aftercall"


@dataclass
class Appliance:
    server: GrpcServer | None  # None: the console alone
    listen: str
    port: int
    metrics: Metrics
    metrics_port: int | None
    processor: CallProcessor | None
    _closers: list
    console: ConsoleServer | None = None
    crm_delivery: WebhookDelivery | None = None

    async def stop(self, grace: float) -> bool:
        """Stop within `grace` seconds: streams in flight keep being served (the processor keeps working for them)
        until they end or the grace runs out. True when a call was still being processed (it resumes at next start)."""
        deadline = time.monotonic() + grace
        if self.console is not None:
            await self.console.stop()
        if self.crm_delivery is not None:
            await self.crm_delivery.stop()
        if self.server is not None:
            await self.server.stop(grace)
        abandoned = False
        if self.processor is not None:
            abandoned = await self.processor.stop(deadline)
        for close in self._closers:
            close()
        return abandoned


async def start_appliance(config: Config, services: tuple[str, ...], data_dir: Path, listen: str | None = None,
                          metrics_listen: str | None = None, registry: CollectorRegistry | None = None,
                          pipeline: Pipeline | None = None, asr_transcriber=None) -> Appliance:
    """Build and start the services. `metrics_listen=""` serves no metrics endpoint (tests read the registry)."""
    unknown = [s for s in services if s not in KNOWN_SERVICES]
    if unknown:
        raise ConfigError(f"unknown service {unknown[0]!r} (known: {', '.join(KNOWN_SERVICES)})")
    alone_asr = services == ("asr",)
    listen = listen or (config.asr_server.listen if alone_asr else config.server.listen)
    if metrics_listen is None:
        metrics_listen = config.asr_server.metrics_listen if alone_asr else config.server.metrics_listen
    if metrics_listen:
        check_listen_security(metrics_listen, config.server, "server.metrics_listen")
    check_listen_security(listen, config.server, "server.listen")
    access = AccessPolicy(config.access)
    exposed = [] if alone_asr else [(listen, "--listen")]
    if "console" in services:
        exposed.append((config.console.listen, "config console.listen"))
    for address, key in exposed:
        if not access.enforced and not is_loopback(parse_address(address, key)[0]):
            raise ConfigError(f"config access: no roles are set, so anyone who reaches {address} could read and "
                              "change every summary; list who is who under [access] (pbx, agent, supervisor, "
                              "auditor, admin), or listen on loopback")
    closers: list = []
    metrics = Metrics(registry)
    metrics_port = console = outbox = crm_delivery = stores = summaries = None
    try:
        # Metrics first: a taken port then fails before any call could be accepted.
        if metrics_listen:
            http_server, _ = serve_metrics(metrics, metrics_listen, config.server)
            metrics_port = http_server.server_port
            closers.append(http_server.shutdown)
        if _STORING & set(services):  # `serve asr` alone stores nothing
            stores = open_stores(config, data_dir, create_keys=True)
            closers.append(stores.close)
            summaries = stores.summaries
            access = AccessPolicy(config.access, stores.vault.keys)  # now it can verify signed tokens
            if config.crm.endpoints:
                # Every process that stores or approves summaries writes their events and helps deliver them (the
                # outbox leases each attempt, so two processes never send one event at once).
                outbox = Outbox(stores.store_db, stores.vault, config.crm, metrics)
                summaries.subscribe(outbox.enqueue)
                crm_delivery = WebhookDelivery(outbox, config.crm, metrics, read_secret(config.crm.secret_file))
        bindings, processor = [], None
        if "ingest" in services:
            # One ingest per data directory: another would take this one's live calls for crashed ones.
            closers.append(lock_data_dir(data_dir, "ingest"))
            calls, spool = stores.calls, stores.spool
            pipeline = pipeline or build_pipeline(config)
            processor = CallProcessor(pipeline, calls, summaries, spool, metrics, config.ingest.workers,
                                      config.ingest.max_attempts, config.ingest.disk_reserve_bytes)
            ingest = CallIngestService(config, calls, spool, processor, metrics, pipeline, access)
            closers.insert(0, ingest.close)
            bindings.append(ingest.binding())
        desk = None
        if {"summaries", "console"} & set(services):
            redactor = pipeline.redactor if pipeline is not None else build_redactor(config)
            desk = ReviewDesk(summaries, access, metrics, redactor)
        if "summaries" in services:
            bindings.append(SummariesService(desk).binding())
        if "console" in services:  # before the gRPC server: a port it cannot bind leaves nothing running
            taxonomy = pipeline.taxonomy if pipeline is not None else load_taxonomy(
                Path(config.summarise.taxonomy) if config.summarise.taxonomy else None)
            confirmations = None
            if config.smtp.host:
                confirmations = Confirmations(LetterTemplate.load(config.smtp), Mailer(config.smtp))
            console = await start_console(Console(desk, ConsoleAuth(access, stores.vault.keys,
                                                              config.console.session_hours),
                                                  taxonomy, outbox, confirmations), config)
        if "asr" in services:
            # As many decodes in the model as the server runs requests at once.
            recogniser = asr_transcriber or build_embedded_transcriber(
                config, max(config.asr.parallel_decodes, config.asr_server.workers))
            api_key = read_api_key(config.asr_server.api_key_file, "asr_server.api_key_file")
            bindings.append(RivaCompatibleAsr(recogniser, config.asr_server, metrics, api_key).binding())
        largest_mb = max(config.ingest.max_recording_mb if "ingest" in services else 4,
                         config.asr_server.max_request_mb if "asr" in services else 4)
        server = None
        if services != ("console",):
            server = GrpcServer(bindings, config.server, listen, metrics.rpc_error,
                                max_message_bytes=(largest_mb + 1) * 1024 * 1024)
        if processor is not None:
            await processor.start()  # resume before a new call could be taken for a crashed one
        port = await server.start() if server is not None else 0
        if crm_delivery is not None:
            crm_delivery.start()
    except BaseException:
        if console is not None:
            await console.stop()
        for close in closers:
            close()
        raise
    return Appliance(server, listen, port, metrics, metrics_port, processor, closers, console, crm_delivery)


async def start_recorder(config: Config, appliance: Appliance | None,
                         metrics_listen: str | None = None) -> tuple[SiprecServer, int | None]:
    """The SIPREC recording server, feeding this process's ingest or siprec.ingest_server. On its own it serves its
    metrics on siprec.metrics_listen (`metrics_listen=""`: none); beside the appliance, on the appliance's."""
    siprec = config.siprec
    if appliance is not None:
        metrics, metrics_port = appliance.metrics, None
        own = f"{appliance.listen.rpartition(':')[0]}:{appliance.port}"
        ingest = siprec.ingest_server or own
    else:
        metrics, metrics_port = Metrics(), None
        ingest = siprec.ingest_server or config.server.listen
        metrics_listen = siprec.metrics_listen if metrics_listen is None else metrics_listen
        if metrics_listen:
            check_listen_security(metrics_listen, config.server, "siprec.metrics_listen")
            http_server, _ = serve_metrics(metrics, metrics_listen, config.server)
            metrics_port = http_server.server_port
    return await start_siprec(siprec, metrics, ingest), metrics_port


async def serve(config: Config, services: tuple[str, ...], data_dir: Path, listen: str | None,
                metrics_listen: str | None) -> bool:
    """Run until SIGTERM/SIGINT. Returns True when work was left for the next start."""
    appliance_services = tuple(service for service in services if service != "siprec")
    appliance = recorder = None
    if appliance_services:
        appliance = await start_appliance(config, appliance_services, data_dir, listen, metrics_listen)
        host = appliance.listen.rpartition(":")[0]
        metrics_note = f", metrics on port {appliance.metrics_port}" if appliance.metrics_port else ""
        rpc_services = [service for service in appliance_services if service != "console"]
        # One line on stderr per listener that scripts (and the tests) read the bound port from.
        if rpc_services:
            print(f"aftercall: serving {', '.join(rpc_services)} on {host}:{appliance.port}{metrics_note}; data in "
                  f"{data_dir}", file=sys.stderr, flush=True)
        if appliance.console is not None:
            console_host = config.console.listen.rpartition(":")[0]
            print(f"aftercall: serving console on {appliance.console.scheme}://{console_host}:"
                  f"{appliance.console.port}/", file=sys.stderr, flush=True)
    if "siprec" in services:
        try:
            recorder, metrics_port = await start_recorder(config, appliance, None if appliance else metrics_listen)
        except BaseException:
            if appliance is not None:
                await appliance.stop(0)
            raise
        where = [f"udp+tcp {config.siprec.listen.rpartition(':')[0]}:{recorder.sip_port}"] if recorder.sip_port else []
        where += [f"tls port {recorder.tls_port}"] if recorder.tls_port else []
        metrics_note = f", metrics on port {metrics_port}" if metrics_port else ""
        print(f"aftercall: serving siprec on {', '.join(where)}{metrics_note}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    logger.warning("stopping: no new calls; %.0f s for calls in flight", config.server.shutdown_grace_s)
    if recorder is not None:  # first, so that its recordings end while ingest can still take them
        await recorder.stop(config.server.shutdown_grace_s)
    return await appliance.stop(config.server.shutdown_grace_s) if appliance is not None else False


def serve_triton(config: Config, data_dir: Path, listen: str | None) -> int:
    """Run tritonserver on the model repository until SIGTERM/SIGINT; its exit code."""
    from aftercall.tritonserver import StartCancelled, start_triton

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        triton = start_triton(config, listen or config.triton.url, data_dir / "triton", cancel=stop)
    except StartCancelled:
        print("aftercall: stopped while tritonserver was starting", file=sys.stderr)
        return 0
    print(f"aftercall: serving triton on {triton.grpc_address} (HTTP port {config.triton.http_port}, metrics port "
          f"{config.triton.metrics_port}); log in {triton.log}", file=sys.stderr, flush=True)
    while not stop.wait(0.5):
        if triton.process.poll() is not None:
            print(f"aftercall: tritonserver exited with code {triton.process.returncode}:\n{triton.log_tail()}",
                  file=sys.stderr)
            return 1
    triton.stop()
    return 0
