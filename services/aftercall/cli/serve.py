"""`aftercall serve [SERVICE ...]`: the appliance's services in this process until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from aftercall.cli.common import data_dir, read_config
from aftercall.config import Config
from aftercall.core.errors import UserError

logger = logging.getLogger(__name__)


def add_parser(commands) -> None:
    serve = commands.add_parser("serve", help="run the appliance's services (ingest and summaries by default)")
    serve.add_argument("services", nargs="*", metavar="SERVICE",
                       help="ingest, summaries, console (the review console in a browser, on console.listen), asr "
                            "(the Riva-compatible recogniser), siprec (a SIPREC recording server feeding ingest; "
                            "[siprec] in the config), triton (a tritonserver on model_repository/); default: ingest "
                            "summaries")
    serve.add_argument("--config", type=Path, help="aftercall TOML config file (optional)")
    serve.add_argument("--listen", help="gRPC HOST:PORT (default server.listen, 127.0.0.1:50051; port 0 = any)")
    serve.add_argument("--metrics-listen", help="Prometheus HOST:PORT (default server.metrics_listen, 127.0.0.1:9464)")
    serve.add_argument("--data-dir", type=Path, help="calls, spool and summaries (default server.data_dir)")
    serve.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from aftercall.app import SERVICES  # here: only the command that runs the appliance imports all of it

    config = read_config(args)
    services = tuple(args.services) or SERVICES
    directory = data_dir(args, config)
    if "triton" in services:
        if services != ("triton",):
            raise UserError("triton runs on its own: aftercall serve triton --listen HOST:PORT")
        return serve_triton(config, directory, args.listen)
    abandoned = asyncio.run(serve(config, services, directory, args.listen, args.metrics_listen))
    if abandoned:
        # A recognition thread cannot be interrupted; its call is checkpointed on disk and resumes at next start.
        logging.shutdown()
        os._exit(0)
    return 0


async def serve(config: Config, services: tuple[str, ...], directory: Path, listen: str | None,
                metrics_listen: str | None) -> bool:
    """Run until SIGTERM/SIGINT. Returns True when work was left for the next start."""
    from aftercall.app import start_appliance, start_recorder

    appliance_services = tuple(service for service in services if service != "siprec")
    appliance = recorder = None
    if appliance_services:
        appliance = await start_appliance(config, appliance_services, directory, listen, metrics_listen)
        host = appliance.listen.rpartition(":")[0]
        metrics_note = f", metrics on port {appliance.metrics_port}" if appliance.metrics_port else ""
        rpc_services = [service for service in appliance_services if service != "console"]
        # One line on stderr per listener that scripts (and the tests) read the bound port from.
        if rpc_services:
            print(f"aftercall: serving {', '.join(rpc_services)} on {host}:{appliance.port}{metrics_note}; data in "
                  f"{directory}", file=sys.stderr, flush=True)
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


def serve_triton(config: Config, directory: Path, listen: str | None) -> int:
    """Run tritonserver on the model repository until SIGTERM/SIGINT; its exit code."""
    from aftercall.tritonserver import StartCancelled, start_triton

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        triton = start_triton(config, listen or config.triton.url, directory / "triton", cancel=stop)
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
