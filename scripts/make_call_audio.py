#!/usr/bin/env python3
"""Synthesise a stereo G.711 call from transcript JSON file(s) with two TTS voices (aftercall.evaluation.speech).

    scripts/make_call_audio.py samples/demo_call.json --out samples/demo_call.wav [--encoding mu-law|a-law]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aftercall.evaluation.speech import ENCODINGS, RATE, synthesise_call


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dialogue", nargs="+", type=Path, help="transcript JSON file(s), concatenated in order")
    parser.add_argument("--out", type=Path, required=True, help="the WAV to write")
    parser.add_argument("--encoding", choices=ENCODINGS, default="mu-law")
    parser.add_argument("--reference", type=Path, help="also write the timed reference transcript JSON here")
    args = parser.parse_args()
    turns = [t for path in args.dialogue for t in json.loads(path.read_text())["turns"]]
    timeline = synthesise_call(turns, args.out, args.encoding)
    if args.reference:
        args.reference.write_text(json.dumps({"turns": timeline}, indent=1) + "\n")
    print(f"wrote {args.out} ({timeline[-1]['end']:.1f} s, {len(turns)} turns at {RATE} Hz)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
