"""The `aftercall` console script. User errors exit 2 with one line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from aftercall import __version__
from aftercall.core.audio import Encoding
from aftercall.core.config import load_config, parse_roles
from aftercall.core.errors import AftercallError, ModelIntegrityError, UserError
from aftercall.core.logsetup import call_id_var, configure_logging

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
    summarise = commands.add_parser("summarise", help="summarise a call recording (WAV/raw G.711) or transcript JSON")
    summarise.add_argument("input", type=Path, help="WAV file, raw G.711 file (with --raw), or transcript .json")
    summarise.add_argument("--taxonomy", type=Path, help="TOML disposition taxonomy (default: the shipped one)")
    summarise.add_argument("--roles", help="stereo channel roles in order, e.g. customer,agent (default agent,customer)")
    summarise.add_argument("--format", choices=("json", "text"), default="json")
    summarise.add_argument("--config", type=Path, help="aftercall TOML config file")
    summarise.add_argument("--call-id", help="call id to put in the summary (default: from the transcript or random)")
    summarise.add_argument("--raw", choices=[e.value for e in Encoding if e is not Encoding.LINEAR_PCM] + ["linear_pcm"],
                           help="INPUT is headerless audio in this encoding")
    summarise.add_argument("--sample-rate", type=int, default=8000, help="with --raw: 8000 or 16000 (default 8000)")
    summarise.add_argument("--channels", type=int, default=1, help="with --raw: 1 or 2 (default 1)")
    summarise.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser


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
    from aftercall.pipeline import Pipeline, RawAudioSpec
    from aftercall.summarise.summariser import EmbeddedSummariser
    from aftercall.summarise.taxonomy import load_taxonomy
    from aftercall.transcribe.embedded import EmbeddedTranscriber

    config = load_config(args.config)
    configure_logging(config.logging.level, config.logging.format)
    roles = parse_roles(args.roles) if args.roles else config.audio.roles
    taxonomy_path = args.taxonomy or (Path(config.summarise.taxonomy) if config.summarise.taxonomy else None)
    taxonomy = load_taxonomy(taxonomy_path)
    asr = config.asr
    pipeline = Pipeline(
        config=config,
        taxonomy=taxonomy,
        summariser=EmbeddedSummariser(min_similarity=config.summarise.min_disposition_similarity),
        transcriber_factory=lambda: EmbeddedTranscriber(
            Path(asr.model_dir) if asr.model_dir else None, asr.beam_size, asr.parallel_decodes, asr.vad,
            asr.mono_speaker,
        ),
    )
    raw = RawAudioSpec(Encoding(args.raw), args.sample_rate, args.channels) if args.raw else None
    source = pipeline.load(args.input, raw)
    if args.call_id:
        call_id_var.set(args.call_id)
    summary = pipeline.run(source, roles, args.call_id, progress=_Progress(not args.quiet))
    call_id_var.set(summary["call_id"])
    logger.info("summary ready (%d turns)", len(summary["transcript"]))
    if args.format == "json":
        sys.stdout.write(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    else:
        from aftercall.render import render_text

        sys.stdout.write(render_text(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"summarise": _summarise}[args.command](args)
    except UserError as exc:
        print(f"aftercall: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except ModelIntegrityError as exc:
        print(f"aftercall: model integrity check failed: {exc}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    except AftercallError as exc:
        print(f"aftercall: error: {exc}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    except KeyboardInterrupt:
        return 130
