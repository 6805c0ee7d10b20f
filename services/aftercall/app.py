"""The assembly: the one place that wires the services together, for `aftercall serve` (all in one process or one
per process) and the tests alike.

`build_appliance()`: config -> the data directory's stores (aftercall.stores) -> the pipeline, the review desk, the
CRM outbox -> the servicers, each handed only what it uses. `Appliance.start()` then binds: the metrics endpoint
first (a taken port fails before any call is accepted), the console, the processor (which resumes calls a crash left
behind), the gRPC server with health and reflection. `Appliance.stop()`: in-flight calls get
`server.shutdown_grace_s`, then whatever is unfinished stays on disk for the next start.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry

from aftercall.asr.service import RivaCompatibleAsr
from aftercall.config import Config
from aftercall.confirm.letter import LetterTemplate
from aftercall.confirm.mailer import Mailer
from aftercall.console.app import Confirmations, Console, ConsoleServer, start_console
from aftercall.console.auth import ConsoleAuth
from aftercall.core.config import parse_address
from aftercall.core.database import lock_data_dir
from aftercall.core.errors import ConfigError
from aftercall.core.metrics import serve_metrics
from aftercall.core.rpc import GrpcServer, check_listen_security, is_loopback, read_api_key
from aftercall.crm.outbox import Outbox
from aftercall.crm.webhook import WebhookDelivery, read_secret
from aftercall.ingest.processor import CallProcessor
from aftercall.ingest.service import CallIngestService
from aftercall.metrics import Metrics
from aftercall.pipeline import Pipeline, build_embedded_transcriber, build_pipeline, build_redactor
from aftercall.review.desk import ReviewDesk
from aftercall.review.service import SummariesService
from aftercall.siprec.server import SiprecServer, start_siprec
from aftercall.stores import Stores, open_stores
from aftercall.summarise.taxonomy import load_taxonomy
from aftercall.vault.access import AccessPolicy

# What `aftercall serve` runs with no SERVICE named; `asr` (the Riva-compatible recogniser) is started on its own,
# `triton` (a tritonserver process) only on its own; `siprec` (the SIPREC recording server, a client of ingest) on
# its own or beside ingest; `console` (the review console, HTTPS on console.listen) on its own or beside the others.
SERVICES = ("ingest", "summaries")
KNOWN_SERVICES = (*SERVICES, "console", "asr", "siprec", "triton")
_STORING = {"ingest", "summaries", "console"}  # the services that open the summary store


@dataclass
class Appliance:
    """The services built for one process; nothing listens until `start()`."""

    config: Config
    listen: str
    metrics_listen: str  # "": no metrics endpoint (tests read the registry)
    metrics: Metrics
    server: GrpcServer | None = None  # None: the console alone
    processor: CallProcessor | None = None
    console_app: Console | None = None  # built; `console` once it listens
    crm_delivery: WebhookDelivery | None = None
    port: int = 0
    metrics_port: int | None = None
    console: ConsoleServer | None = None
    _closers: list = field(default_factory=list)

    async def start(self) -> None:
        """Bind and start everything built, or close it all again."""
        processing = False
        try:
            if self.metrics_listen:
                http_server, _ = serve_metrics(self.metrics.registry, self.metrics_listen, self.config.server)
                self.metrics_port = http_server.server_port
                self._closers.append(http_server.shutdown)
            if self.console_app is not None:  # before the gRPC server: a port it cannot bind leaves nothing running
                self.console = await start_console(self.console_app, self.config.server, self.config.console.listen)
            if self.processor is not None:
                await self.processor.start()  # resume before a new call could be taken for a crashed one
                processing = True
            if self.server is not None:
                self.port = await self.server.start()
            if self.crm_delivery is not None:
                self.crm_delivery.start()
        except BaseException:
            if self.console is not None:
                await self.console.stop()
            if processing:  # its workers would go on with the stores closed under them
                await self.processor.stop(time.monotonic())
            self.close()
            raise

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
        self.close()
        return abandoned

    def close(self) -> None:
        for close in self._closers:
            close()
        self._closers.clear()


def build_appliance(config: Config, services: tuple[str, ...], data_dir: Path, listen: str | None = None,
                    metrics_listen: str | None = None, registry: CollectorRegistry | None = None,
                    pipeline: Pipeline | None = None, asr_transcriber=None) -> Appliance:
    """Every object `services` need, wired; `pipeline` and `asr_transcriber` replace the ones the config names
    (tests pass a warmed-up one)."""
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
    _refuse_open_single_user(config, services, listen)
    metrics = Metrics(registry)
    appliance = Appliance(config, listen, metrics_listen, metrics)
    try:
        bindings = []
        stores = access = outbox = None
        if _STORING & set(services):  # `serve asr` alone stores nothing
            stores = open_stores(config, data_dir, create_keys=True)
            appliance._closers.append(stores.close)
            access = AccessPolicy(config.access, stores.vault.keys)  # with the key ring: it verifies signed tokens
            outbox, appliance.crm_delivery = _crm_push(config, stores, metrics)
        if "ingest" in services:
            # One ingest per data directory: another would take this one's live calls for crashed ones.
            appliance._closers.append(lock_data_dir(data_dir, "ingest"))
            pipeline = pipeline or build_pipeline(config)
            appliance.processor = CallProcessor(pipeline, stores.calls, stores.summaries, stores.spool,
                                                metrics.ingest, config.ingest.workers, config.ingest.max_attempts,
                                                config.ingest.disk_reserve_bytes)
            ingest = CallIngestService(config.ingest, config.audio, stores.calls, stores.spool, appliance.processor,
                                       metrics.ingest, pipeline, access)
            appliance._closers.insert(0, ingest.close)
            bindings.append(ingest.binding())
        if {"summaries", "console"} & set(services):
            redactor = pipeline.redactor if pipeline is not None else build_redactor(config)
            desk = ReviewDesk(stores.summaries, access, metrics.review, redactor)
            if "summaries" in services:
                bindings.append(SummariesService(desk).binding())
            if "console" in services:
                appliance.console_app = _console(config, desk, access, stores, outbox, pipeline)
        if "asr" in services:
            # As many decodes in the model as the server runs requests at once.
            recogniser = asr_transcriber or build_embedded_transcriber(
                config, max(config.asr.parallel_decodes, config.asr_server.workers))
            api_key = read_api_key(config.asr_server.api_key_file, "asr_server.api_key_file")
            bindings.append(RivaCompatibleAsr(recogniser, config.asr_server, metrics.asr, api_key).binding())
        largest_mb = max(config.ingest.max_recording_mb if "ingest" in services else 4,
                         config.asr_server.max_request_mb if "asr" in services else 4)
        if services != ("console",):
            appliance.server = GrpcServer(bindings, config.server, listen, metrics.rpc.rpc_error,
                                          max_message_bytes=(largest_mb + 1) * 1024 * 1024)
    except BaseException:
        appliance.close()
        raise
    return appliance


async def start_appliance(config: Config, services: tuple[str, ...], data_dir: Path, listen: str | None = None,
                          metrics_listen: str | None = None, registry: CollectorRegistry | None = None,
                          pipeline: Pipeline | None = None, asr_transcriber=None) -> Appliance:
    """Build and start the services. `metrics_listen=""` serves no metrics endpoint (tests read the registry)."""
    appliance = build_appliance(config, services, data_dir, listen, metrics_listen, registry, pipeline,
                                asr_transcriber)
    await appliance.start()
    return appliance


def _refuse_open_single_user(config: Config, services: tuple[str, ...], listen: str) -> None:
    """With no roles set, anyone who reaches a listener may do anything: allowed on loopback only."""
    if AccessPolicy(config.access).enforced:
        return
    exposed = [] if services == ("asr",) else [(listen, "--listen")]
    if "console" in services:
        exposed.append((config.console.listen, "config console.listen"))
    for address, key in exposed:
        if not is_loopback(parse_address(address, key)[0]):
            raise ConfigError(f"config access: no roles are set, so anyone who reaches {address} could read and "
                              "change every summary; list who is who under [access] (pbx, agent, supervisor, "
                              "auditor, admin), or listen on loopback")


def _crm_push(config: Config, stores: Stores, metrics: Metrics) -> tuple[Outbox | None, WebhookDelivery | None]:
    """Every process that stores or approves summaries writes their CRM events and helps deliver them (the outbox
    leases each attempt, so two processes never send one event at once)."""
    if not config.crm.endpoints:
        return None, None
    outbox = Outbox(stores.store_db, stores.vault, config.crm, metrics.crm)
    stores.summaries.subscribe(outbox.enqueue)
    return outbox, WebhookDelivery(outbox, config.crm, metrics.crm, read_secret(config.crm.secret_file))


def _console(config: Config, desk: ReviewDesk, access: AccessPolicy, stores: Stores, outbox: Outbox | None,
             pipeline: Pipeline | None) -> Console:
    taxonomy = pipeline.taxonomy if pipeline is not None else load_taxonomy(
        Path(config.summarise.taxonomy) if config.summarise.taxonomy else None)
    confirmations = None
    if config.smtp.host:
        confirmations = Confirmations(LetterTemplate.load(config.smtp), Mailer(config.smtp))
    return Console(desk, ConsoleAuth(access, stores.vault.keys, config.console.session_hours), taxonomy, outbox,
                   confirmations)


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
            http_server, _ = serve_metrics(metrics.registry, metrics_listen, config.server)
            metrics_port = http_server.server_port
    return await start_siprec(siprec, metrics.siprec, ingest), metrics_port
