"""`aftercall summarise FILE`: one recording or transcript summarised in this process, no server."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from aftercall.cli.common import print_summary, read_config
from aftercall.core.audio import Encoding
from aftercall.core.config import parse_roles
from aftercall.core.errors import UserError
from aftercall.core.logsetup import call_id_var

logger = logging.getLogger(__name__)


def add_parser(commands) -> None:
    summarise = commands.add_parser(
        "summarise", help="summarise a call recording (WAV, MP3, Opus, FLAC, ...; raw G.711) or transcript JSON")
    summarise.add_argument("input", type=Path,
                           help="recording (any format FFmpeg reads), raw G.711 (with --raw), or transcript .json")
    summarise.add_argument("--taxonomy", type=Path, help="TOML disposition taxonomy (default: the shipped one)")
    summarise.add_argument("--roles",
                           help="stereo channel roles in order, e.g. customer,agent (default agent,customer)")
    summarise.add_argument("--format", choices=("json", "text"), default="json")
    summarise.add_argument("--config", type=Path, help="aftercall TOML config file")
    summarise.add_argument("--call-id", help="call id to put in the summary (default: from the transcript or random)")
    summarise.add_argument("--queue", help="the call's queue: its template (summarise.templates) shapes the summary")
    encodings = [e.value for e in Encoding if e is not Encoding.LINEAR_PCM] + ["linear_pcm"]
    summarise.add_argument("--raw", choices=encodings, help="INPUT is headerless audio in this encoding")
    summarise.add_argument("--sample-rate", type=int, default=8000, help="with --raw: 8000 or 16000 (default 8000)")
    summarise.add_argument("--channels", type=int, default=1, help="with --raw: 1 or 2 (default 1)")
    summarise.add_argument("--quiet", action="store_true", help="no progress on stderr")
    summarise.set_defaults(handler=run)


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
        message = (f"transcribing: {percent:3d}% ({done:.0f}/{total:.0f} s of channel audio, "
                   f"{time.monotonic() - self._started:.0f} s)")
        print(("\r" + message) if self._tty else message, end="" if self._tty and percent < 100 else "\n",
              file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from aftercall.pipeline import RawAudioSpec, build_pipeline

    config = read_config(args)
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
    print_summary(summary, args.format)
    return 0
