"""The `aftercall` console script. User errors exit 2 with one line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import sys
import time
from pathlib import Path

from aftercall import __version__
from aftercall.core.audio import Encoding
from aftercall.core.config import load_config, parse_roles
from aftercall.core.errors import AftercallError, ModelIntegrityError, NotFoundError, UserError
from aftercall.core.logsetup import call_id_var, configure_logging
from aftercall.core.rpc import RemoteError

logger = logging.getLogger(__name__)

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other user error
        print(f"aftercall: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="aftercall", description="Structured, redacted post-call summaries, on premise.")
    parser.add_argument("--version", action="version", version=f"aftercall {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_ArgumentParser)
    summarise = commands.add_parser(
        "summarise", help="summarise a call recording (WAV, MP3, Opus, FLAC, ...; raw G.711) or transcript JSON")
    summarise.add_argument("input", type=Path,
                           help="recording (any format FFmpeg reads), raw G.711 (with --raw), or transcript .json")
    summarise.add_argument("--taxonomy", type=Path, help="TOML disposition taxonomy (default: the shipped one)")
    summarise.add_argument("--roles", help="stereo channel roles in order, e.g. customer,agent (default agent,customer)")
    summarise.add_argument("--format", choices=("json", "text"), default="json")
    summarise.add_argument("--config", type=Path, help="aftercall TOML config file")
    summarise.add_argument("--call-id", help="call id to put in the summary (default: from the transcript or random)")
    summarise.add_argument("--queue", help="the call's queue: its template (summarise.templates) shapes the summary")
    summarise.add_argument("--raw", choices=[e.value for e in Encoding if e is not Encoding.LINEAR_PCM] + ["linear_pcm"],
                           help="INPUT is headerless audio in this encoding")
    summarise.add_argument("--sample-rate", type=int, default=8000, help="with --raw: 8000 or 16000 (default 8000)")
    summarise.add_argument("--channels", type=int, default=1, help="with --raw: 1 or 2 (default 1)")
    summarise.add_argument("--quiet", action="store_true", help="no progress on stderr")

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

    stream = commands.add_parser("stream", help="stream a WAV to a server as a live call (reference PBX client)")
    stream.add_argument("input", type=Path, help="WAV file (PCM16, A-law or mu-law; 8/16 kHz; mono or stereo)")
    stream.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT of the ingest service")
    pace = stream.add_mutually_exclusive_group()
    pace.add_argument("--realtime", action="store_true", help="send audio at the pace of a live call")
    pace.add_argument("--speed", type=float, help="send N times faster than real time")
    stream.add_argument("--chunk-ms", type=int, default=100, help="audio per message, 20-1000 ms (default 100)")
    stream.add_argument("--call-id", help="call id (default: random)")
    stream.add_argument("--roles", help="stereo channel roles in order (default agent,customer)")
    stream.add_argument("--agent-id", default="", help="agent id stored with the summary")
    stream.add_argument("--customer-ref", default="", help="the customer's reference (what erasure requests name)")
    stream.add_argument("--interim", action="store_true", help="ask for interim segments; print them on stderr")
    stream.add_argument("--format", choices=("json", "text"), default="json")
    _add_client_tls(stream)

    folder = commands.add_parser("import", help="summarise a folder of recordings, each file exactly once")
    folder.add_argument("folder", type=Path, help="the folder (sub-folders too); NAME.json beside a recording gives "
                                                   "its metadata (agent_id, queue, tenant, customer_ref, ani, dnis, "
                                                   "started_at)")
    folder.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT of the ingest service")
    folder.add_argument("--roles", help="stereo channel roles in order (default agent,customer)")
    folder.add_argument("--watch", action="store_true", help="keep watching the folder for new recordings")
    folder.add_argument("--interval", type=_interval, default=5.0, help="with --watch: seconds between looks (5)")
    _add_client_tls(folder)

    keys = commands.add_parser("keys", help="the vault's key-encryption keys (vault.key_file)")
    key_actions = keys.add_subparsers(dest="action", required=True, parser_class=_ArgumentParser)
    key_actions.add_parser("init", help="create the key file (never overwrites one)")
    key_actions.add_parser("list", help="the keys, their state, and how many stored records each protects")
    key_actions.add_parser("rotate", help="a new active key, then every stored record re-wrapped with it (online)")
    retire = key_actions.add_parser("retire", help="erase an old key once no record needs it")
    retire.add_argument("kek_id", type=int, metavar="ID")
    for sub in key_actions.choices.values():
        _add_data_options(sub)

    bundle = commands.add_parser("bundle", help="the signed offline bundle for air-gapped installs")
    bundle_actions = bundle.add_subparsers(dest="action", required=True, parser_class=_ArgumentParser)
    keygen = bundle_actions.add_parser("keygen", help="make an Ed25519 signing key (0600) and its public key")
    keygen.add_argument("--out", type=Path, required=True, help="directory for bundle-signing.key/.pub")
    check = bundle_actions.add_parser("verify", help="check a bundle's signature and every file's sha256")
    check.add_argument("bundle", type=Path)
    check.add_argument("--public-key", type=Path, required=True, help="the release's Ed25519 public key (PEM)")

    tokens = commands.add_parser("tokens", help="signed identity tokens for clients without a certificate")
    token_actions = tokens.add_subparsers(dest="action", required=True, parser_class=_ArgumentParser)
    issue = token_actions.add_parser("issue", help="print a token naming USER (send it as x-aftercall-token)")
    issue.add_argument("user")
    issue.add_argument("--hours", type=float, default=8.0, help="how long it is valid (default 8, at most 168)")
    issue.add_argument("--config", type=Path, help="aftercall TOML config file (optional)")

    erase = commands.add_parser("erase", help="crypto-shred a call's or a customer's stored records (erasure "
                                              "request)")
    whom = erase.add_mutually_exclusive_group(required=True)
    whom.add_argument("--call-id")
    whom.add_argument("--customer-ref", help="every call stored with this customer reference")
    erase.add_argument("--reason", default="erasure request", help="recorded in the audit trail")
    _add_data_options(erase)

    reprocess = commands.add_parser("reprocess", help="after a model change: summarise the untouched drafts again "
                                                       "(edited and approved summaries stay)")
    reprocess.add_argument("--since", type=_day, help="only drafts stored on or after this date (YYYY-MM-DD, UTC)")
    reprocess.add_argument("--dry-run", action="store_true", help="say what would change; store nothing")
    _add_data_options(reprocess)

    retention = commands.add_parser("retention", help="apply the retention policy ([retention])")
    retention_actions = retention.add_subparsers(dest="action", required=True, parser_class=_ArgumentParser)
    run = retention_actions.add_parser("run", help="crypto-shred what expired (legal holds excepted)")
    run.add_argument("--dry-run", action="store_true", help="only count what would go")
    _add_data_options(run)

    audit = commands.add_parser("audit", help="the audit trail of the data directory")
    audit_actions = audit.add_subparsers(dest="action", required=True, parser_class=_ArgumentParser)
    verify = audit_actions.add_parser("verify", help="check the chain: any entry changed, removed or moved")
    verify.add_argument("--expect-head", default="", help="the head printed by an earlier verify (finds entries "
                                                          "cut off the end)")
    show = audit_actions.add_parser("list", help="the entries, oldest first")
    show.add_argument("--call-id", default="", help="only the entries about this call")
    for sub in audit_actions.choices.values():
        _add_data_options(sub)

    from aftercall.evaluation import bench, evaluate

    evaluate.add_arguments(commands.add_parser(
        "eval", help="quality on gold calls and public sets: JSON + HTML report, non-zero exit when a gate fails"))
    bench.add_arguments(commands.add_parser(
        "bench", help="speed, memory and concurrency of every stage: JSON + HTML report"))

    commands.add_parser("schema", help="the summary contract as a JSON Schema (what every summary JSON meets)")
    summaries = commands.add_parser("summaries", help="read stored summaries from a server")
    actions = summaries.add_subparsers(dest="action", required=True, parser_class=_ArgumentParser)
    listing = actions.add_parser("list", help="search summaries, newest first")
    listing.add_argument("--agent-id", default="")
    listing.add_argument("--disposition", default="", help="disposition code")
    listing.add_argument("--state", choices=("draft", "edited", "approved"))
    listing.add_argument("--entity", default="", help="an entity the summary names (a reference, an amount)")
    listing.add_argument("--limit", type=_page_size, default=50, help="at most this many (1-500)")
    getting = actions.add_parser("get", help="one summary")
    getting.add_argument("call_id")
    getting.add_argument("--history", action="store_true", help="include every version")
    for sub in (listing, getting):
        sub.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT of the summaries service")
        sub.add_argument("--format", choices=("json", "text"), default="json")
        _add_client_tls(sub)
    return parser


def _day(text: str) -> float:
    from aftercall.core.documents import utc_day

    try:
        return utc_day(text, "date")
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _interval(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0.5 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"must be seconds from 0.5 to 3600, got {text!r}")
    return seconds


def _page_size(text: str) -> int:
    from aftercall.review.store import MAX_PAGE

    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_PAGE}, got {text!r}")
    return int(text)


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    """The admin commands work on a data directory with the key file, both named by the config."""
    parser.add_argument("--config", type=Path, help="aftercall TOML config file (optional)")
    parser.add_argument("--data-dir", type=Path, help="the data directory (default server.data_dir)")


def _add_client_tls(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", default="", help="who you are, for a server on loopback (x-aftercall-user; over "
                                                   "mutual TLS the certificate says it)")
    parser.add_argument("--token", default="", help="a signed identity token (aftercall tokens issue)")
    parser.add_argument("--tls-ca", default="", help="CA certificate: use TLS and trust this CA")
    parser.add_argument("--tls-cert", default="", help="client certificate for mutual TLS")
    parser.add_argument("--tls-key", default="", help="client key for mutual TLS")


class _Progress:
    """Progress of recognition on stderr: a live line on a terminal, a line per 10 % otherwise."""

    def __init__(self, enabled: bool):
        self._enabled = enabled
        self._tty = sys.stderr.isatty()
        self._last = -1
        self._started = time.monotonic()

    def __call__(self, done: float, total: float) -> None:
        if not self._enabled or total <= 0:
            return
        percent = int(100 * min(done, total) / total)
        step = percent if self._tty else percent // 10 * 10
        if step == self._last:
            return
        self._last = step
        message = f"transcribing: {percent:3d}% ({done:.0f}/{total:.0f} s of channel audio, {time.monotonic() - self._started:.0f} s)"
        print(("\r" + message) if self._tty else message, end="" if self._tty and percent < 100 else "\n",
              file=sys.stderr, flush=True)


def _summarise(args: argparse.Namespace) -> int:
    from aftercall.pipeline import RawAudioSpec, build_pipeline

    config = load_config(args.config)
    configure_logging(config.logging.level, config.logging.format)
    roles = parse_roles(args.roles) if args.roles else config.audio.roles
    pipeline = build_pipeline(config, args.taxonomy)
    raw = RawAudioSpec(Encoding(args.raw), args.sample_rate, args.channels) if args.raw else None
    source = pipeline.load(args.input, raw)
    if args.call_id:
        call_id_var.set(args.call_id)
    if args.queue is not None and args.queue not in config.summarise.templates:
        known = ", ".join(config.summarise.templates) or "none"
        raise UserError(f"--queue {args.queue}: no template for it in summarise.templates (known: {known})")
    summary = pipeline.run(source, roles, args.call_id, progress=_Progress(not args.quiet), queue=args.queue)
    call_id_var.set(summary["call_id"])
    logger.info("summary ready (%d turns)", len(summary["transcript"]))
    if args.format == "json":
        sys.stdout.write(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    else:
        from aftercall.render import render_text

        sys.stdout.write(render_text(summary))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from aftercall.app import SERVICES, serve, serve_triton

    config = load_config(args.config)
    configure_logging(config.logging.level, config.logging.format)
    services = tuple(args.services) or SERVICES
    data_dir = _data_dir(args, config)
    if "triton" in services:
        if services != ("triton",):
            raise UserError("triton runs on its own: aftercall serve triton --listen HOST:PORT")
        return serve_triton(config, data_dir, args.listen)
    abandoned = asyncio.run(serve(config, services, data_dir, args.listen, args.metrics_listen))
    if abandoned:
        # A recognition thread cannot be interrupted; its call is checkpointed on disk and resumes at next start.
        logging.shutdown()
        os._exit(0)
    return 0


def _data_dir(args: argparse.Namespace, config) -> Path:
    from aftercall.app import default_data_dir

    return args.data_dir or (Path(config.server.data_dir) if config.server.data_dir else default_data_dir())


@contextlib.contextmanager
def _data_stores(args: argparse.Namespace, config):
    """The data directory's stores opened with the key file, as the admin commands use them (the server may be
    running: SQLite lets both write, one transaction at a time)."""
    from aftercall.stores import open_stores

    stores = open_stores(config, _data_dir(args, config))
    try:
        yield stores
    finally:
        stores.close()


def _admin_config(args: argparse.Namespace):
    config = load_config(args.config)
    configure_logging(config.logging.level, config.logging.format)
    return config


def _keys(args: argparse.Namespace) -> int:
    from aftercall.vault.envelope import kek_of
    from aftercall.vault.hsm import token_keys
    from aftercall.vault.keys import KeyRing, key_file_path
    from aftercall.vault.rotation import count_by_kek, rewrap_rows

    config = _admin_config(args)
    if args.action == "init":
        path = key_file_path(config.vault.key_file)
        KeyRing.create(path, token_keys(config.vault))
        print(f"aftercall: created {path} (key 1 active); back it up apart from the data", file=sys.stderr)
        return 0
    with _data_stores(args, config) as stores:
        ring, audit, sources = stores.vault.keys, stores.summaries.audit, stores.sealed_sources()

        def protected() -> dict[int, int]:
            counts = count_by_kek(source for _, source in sources)
            for *_, blob in stores.spool.sealed_keys():
                counts[kek_of(blob)] = counts.get(kek_of(blob), 0) + 1
            return counts

        if args.action == "rotate":
            fresh = ring.rotate()
            audit.record(getpass.getuser(), "keys.rotate", "", kek=fresh.id)
            print(f"aftercall: key {fresh.id} is now active; re-wrapping stored records", file=sys.stderr)
            changed = rewrap_rows(stores.vault, sources) + stores.spool.rewrap()
            print(f"aftercall: {changed} record(s) re-wrapped with key {fresh.id}", file=sys.stderr)
        elif args.action == "retire":
            still = protected().get(args.kek_id, 0)
            if still:
                raise UserError(f"key {args.kek_id} still protects {still} record(s): `aftercall keys rotate` "
                                "re-wraps them first")
            ring.retire(args.kek_id)
            audit.record(getpass.getuser(), "keys.retire", "", kek=args.kek_id)
            print(f"aftercall: key {args.kek_id} retired (erased from {ring.path})", file=sys.stderr)
        counts = protected()
    for kek in ring.keks:
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(kek.created_at))
        print(f"{kek.id}\t{kek.state}\t{created} UTC\t{counts.get(kek.id, 0)} record(s)")
    return 0


def _bundle(args: argparse.Namespace) -> int:
    from aftercall.bundle import generate_keys, verify_bundle

    if args.action == "keygen":
        try:
            private, public = generate_keys(args.out)
        except FileExistsError:
            raise UserError(f"{args.out}: a signing key is already there; never overwritten") from None
        print(f"aftercall: signing key {private} (keep it off the sites), public key {public}", file=sys.stderr)
        return 0
    try:
        manifest = verify_bundle(args.bundle, args.public_key)
    except OSError as exc:
        raise UserError(f"cannot read {exc.filename}: {exc.strerror}") from None
    except ValueError as exc:  # BundleError, or a key file that is not PEM
        raise UserError(str(exc)) from None
    print(f"aftercall: {args.bundle} is whole and signed: version {manifest['version']}, {len(manifest['files'])} "
          "files", file=sys.stderr)
    return 0


def _tokens(args: argparse.Namespace) -> int:
    from aftercall.vault.keys import open_key_ring
    from aftercall.vault.tokens import issue_token

    config = _admin_config(args)
    try:
        token = issue_token(open_key_ring(config.vault, create_missing=False), args.user, args.hours * 3600)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    print(token)
    print(f"aftercall: a token for {args.user!r}, valid {args.hours:g} h", file=sys.stderr)
    return 0


def _erase(args: argparse.Namespace) -> int:
    from aftercall.vault.retention import erase_call

    with _data_stores(args, _admin_config(args)) as stores:
        summaries = stores.summaries
        call_ids = [args.call_id] if args.call_id else summaries.call_ids_for_customer(args.customer_ref)
        found = [call_id for call_id in call_ids
                 if erase_call(summaries, stores.calls, stores.spool, call_id, getpass.getuser(), args.reason)]
    if not found:
        raise NotFoundError("nothing stored matches: no call with that call id or customer reference")
    print(f"aftercall: erased {len(found)} call(s)", file=sys.stderr)
    return 0


def _reprocess(args: argparse.Namespace) -> int:
    from aftercall.pipeline import build_pipeline
    from aftercall.review.redraft import drafts_since, redraft_all

    config = _admin_config(args)
    pipeline = build_pipeline(config)
    with _data_stores(args, config) as stores:
        call_ids = drafts_since(stores.summaries, args.since)
        print(f"aftercall: reprocess: {len(call_ids)} untouched draft(s)", file=sys.stderr, flush=True)
        counts = redraft_all(stores.summaries, pipeline, call_ids,
                             lambda line: print(f"aftercall: {line}", file=sys.stderr, flush=True), args.dry_run)
    done = "dry run, nothing stored: would have" if args.dry_run else "reprocess:"
    print(f"aftercall: {done} {counts.redrafted} redrafted, {counts.unchanged} unchanged, {counts.skipped} skipped",
          file=sys.stderr)
    return 0


def _retention(args: argparse.Namespace) -> int:
    from aftercall.vault.retention import run_retention

    config = _admin_config(args)
    with _data_stores(args, config) as stores:
        report = run_retention(config.retention, stores.summaries, stores.calls, stores.spool, getpass.getuser(),
                               dry_run=args.dry_run)
    done = "dry run, nothing removed: would have" if args.dry_run else "retention:"
    print(f"aftercall: {done} {report.summaries_erased} summaries erased, {report.transcripts_dropped} transcripts "
          f"dropped, {report.audio_removed} failed calls' audio removed; {len(report.held)} call(s) on legal hold",
          file=sys.stderr)
    return 0


def _audit(args: argparse.Namespace) -> int:
    with _data_stores(args, _admin_config(args)) as stores:
        log = stores.summaries.audit
        if args.action == "list":
            for entry in log.entries(args.call_id):
                sys.stdout.write(json.dumps(entry, ensure_ascii=False) + "\n")
            return 0
        verdict = log.verify()
    if verdict.problem:
        print(f"aftercall: audit trail broken after {verdict.entries} good entries: {verdict.problem}",
              file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    if args.expect_head and args.expect_head not in (verdict.head, f"{verdict.entries}:{verdict.head}"):
        print(f"aftercall: audit trail intact but its head is not the expected one: entries were cut off the end "
              f"or it is another trail (now {verdict.entries}:{verdict.head})", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    print(f"{verdict.entries}:{verdict.head}")
    print(f"aftercall: {verdict.entries} entries, chain intact", file=sys.stderr)
    return 0


def _channel(args: argparse.Namespace):
    from aftercall.core.rpc import client_channel

    if (args.tls_cert or args.tls_key) and not (args.tls_cert and args.tls_key and args.tls_ca):
        raise UserError("mutual TLS needs --tls-ca, --tls-cert and --tls-key together")
    try:
        return client_channel(args.server, args.tls_ca, args.tls_cert, args.tls_key, args.user, args.token)
    except OSError as exc:
        raise UserError(f"cannot read a TLS file: {exc.filename}: {exc.strerror}") from exc


def _print_summary(summary: dict, fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    else:
        from aftercall.render import render_text

        sys.stdout.write(render_text(summary))


def _stream(args: argparse.Namespace) -> int:
    from aftercall.ingest.client import stream_call

    roles = parse_roles(args.roles) if args.roles else ("agent", "customer")
    try:
        wav = args.input.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {args.input}: {exc.strerror}") from exc
    speed = 1.0 if args.realtime else args.speed

    def show_interim(event) -> None:
        if event.WhichOneof("event") == "segment" and not event.segment.final:
            segment = event.segment
            print(f"interim {segment.start_s:6.1f}s {segment.speaker}: {segment.text}", file=sys.stderr)

    with _channel(args) as channel:
        metadata = {"agent_id": args.agent_id, "customer_ref": args.customer_ref}
        result = stream_call(channel, wav, args.call_id, roles, args.chunk_ms, speed, metadata,
                             on_event=show_interim, interim=args.interim)
    print(f"aftercall: {result.call_id}: {result.audio_seconds:.1f} s streamed, summary "
          f"{result.post_call_latency_s:.1f} s after the end of the call", file=sys.stderr)
    _print_summary(result.summary, args.format)
    return 0


def _import(args: argparse.Namespace) -> int:
    import signal
    import threading

    from aftercall.ingest.importer import FolderImport, ImportStopped

    roles = parse_roles(args.roles) if args.roles else ("agent", "customer")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):  # finish the file in hand, then stop
        signal.signal(signum, lambda *_: stop.set())
    with _channel(args) as channel:
        folder = FolderImport(channel, args.folder, roles, lambda line: print(f"aftercall: {line}", file=sys.stderr,
                                                                              flush=True), stop)
        try:
            counts = folder.watch(args.interval) if args.watch else folder.run_once()
        except ImportStopped as exc:
            print(f"aftercall: import stopped, the rest is for the next run: {exc}", file=sys.stderr)
            return EXIT_INTERNAL_ERROR
    print(f"aftercall: import: {counts.accepted} accepted, {counts.already} imported before, {counts.refused} "
          "refused", file=sys.stderr)
    return EXIT_USER_ERROR if counts.refused else 0


def _summaries(args: argparse.Namespace) -> int:
    import grpc

    from aftercall.v1 import summaries_pb2 as pb
    from aftercall.v1 import summaries_pb2_grpc as pb_grpc

    with _channel(args) as channel:
        stub = pb_grpc.SummariesStub(channel)
        try:
            if args.action == "get":
                records = [stub.Get(pb.GetSummaryRequest(call_id=args.call_id, include_history=args.history))]
            else:
                state = {"draft": pb.REVIEW_STATE_DRAFT, "edited": pb.REVIEW_STATE_EDITED,
                         "approved": pb.REVIEW_STATE_APPROVED}.get(args.state or "", 0)
                records = list(stub.List(pb.ListSummariesRequest(
                    agent_id=args.agent_id, disposition_code=args.disposition, state=state, entity=args.entity,
                    page_size=args.limit)).summaries)
        except grpc.RpcError as exc:
            raise RemoteError(exc) from exc
    if args.format == "json":
        from google.protobuf.json_format import MessageToDict

        documents = []
        for record in records:
            document = MessageToDict(record, preserving_proto_field_name=True)
            document["summary"] = json.loads(document.pop("summary_json"))
            documents.append(document)
        sys.stdout.write(json.dumps(documents[0] if args.action == "get" else documents, indent=2,
                                    ensure_ascii=False) + "\n")
    else:
        for record in records:
            _print_summary(json.loads(record.summary_json), "text")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from aftercall.evaluation import evaluate

    return evaluate.run(args)


def _bench(args: argparse.Namespace) -> int:
    from aftercall.evaluation import bench

    return bench.run(args)


# Status codes that mean the request was at fault (exit 2), not the server or the network (exit 1).
_CLIENT_FAULTS = ("INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE")


def _schema(args: argparse.Namespace) -> int:
    from aftercall.summarise.contract import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"summarise": _summarise, "serve": _serve, "stream": _stream, "import": _import,
                "summaries": _summaries, "keys": _keys, "audit": _audit, "erase": _erase, "retention": _retention,
                "reprocess": _reprocess, "tokens": _tokens, "bundle": _bundle, "eval": _eval, "bench": _bench,
                "schema": _schema}[args.command](args)
    except UserError as exc:
        print(f"aftercall: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except RemoteError as exc:
        print(f"aftercall: server error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR if exc.code.name in _CLIENT_FAULTS else EXIT_INTERNAL_ERROR
    except ModelIntegrityError as exc:
        print(f"aftercall: model integrity check failed: {exc}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    except AftercallError as exc:
        print(f"aftercall: error: {exc}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    except KeyboardInterrupt:
        return 130
