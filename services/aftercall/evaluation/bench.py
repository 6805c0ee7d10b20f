"""`aftercall bench`: speed, memory and concurrency of every stage, on this machine, in one run.

Parts (each can be skipped): `stages` (every stage on calls of 1, 5 and 20 minutes, and bare faster-whisper on the
same audio), `served` (concurrent calls streamed in real time through a real `aftercall serve`), `triton` (the
summarisation stage through tritonserver), `llm` (the LLM summariser's CPU stand-in), `vault` (encryption on vs off),
`postgres` (the vault part on PostgreSQL too) and `siprec` (concurrent SIPREC calls from sipp through a real
`aftercall serve ... siprec`). Figures are measured, never asserted: compare ratios from one run,
not seconds across machines. Writes bench.json and bench.html, and appends a summary to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aftercall.core.errors import UserError

PARTS = ("stages", "served", "live", "triton", "llm", "vault", "postgres", "siprec")
# Option values when not given: a full run, and `--smoke` (a check that the harness works, not a measurement).
_FULL = {"lengths": "1,5,20", "levels": "1,10,50,200", "live_levels": "1,10", "call_seconds": 30.0, "skip": "",
         "siprec_calls": 24}
_SMOKE = {"lengths": "0.2", "levels": "1,2", "live_levels": "1,2", "call_seconds": 5.0, "skip": "llm,postgres",
          "siprec_calls": 2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Speed, memory and concurrency of every stage on this machine, in one run: bench.json, "
                          "bench.html, and a summary appended to docs/benchmarks.md.")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="folder for bench.json and bench.html "
                                                                          "(default reports/)")
    parser.add_argument("--lengths", help=f"call lengths in minutes (default {_FULL['lengths']})")
    parser.add_argument("--levels", help=f"concurrent streamed calls (default {_FULL['levels']})")
    parser.add_argument("--live-levels", help="concurrent calls of each length streamed in real time, for post-call "
                                              f"latency against call length (default {_FULL['live_levels']})")
    parser.add_argument("--call-seconds", type=float,
                        help=f"length of each streamed call (default {_FULL['call_seconds']:g} s)")
    parser.add_argument("--siprec-calls", type=int,
                        help=f"concurrent SIPREC calls from sipp (default {_FULL['siprec_calls']})")
    parser.add_argument("--skip", help=f"parts to leave out, comma-separated: {', '.join(PARTS)}")
    parser.add_argument("--smoke", action="store_true",
                        help=f"tiny run that checks the harness (lengths {_SMOKE['lengths']} min, levels "
                             f"{_SMOKE['levels']}, {_SMOKE['call_seconds']:g} s calls, skips {_SMOKE['skip']})")
    parser.add_argument("--no-docs", action="store_true", help="do not append the summary to docs/benchmarks.md")


@dataclass(frozen=True)
class Plan:
    out: Path
    lengths_s: tuple[float, ...]
    levels: tuple[int, ...]
    live_levels: tuple[int, ...]
    call_seconds: float
    skip: frozenset[str]
    smoke: bool
    docs: bool
    # Sizes that follow from the mode: enough repetitions to measure, few enough for a smoke run.
    arrival_spread_s: float
    stalled_streams: int
    triton_requests: int
    vault_records: int
    siprec_calls: int


def _numbers(text: str, option: str, kind: type) -> tuple:
    try:
        values = tuple(sorted({kind(item) for item in text.split(",") if item.strip()}))
    except ValueError:
        raise UserError(f"{option} takes comma-separated numbers, got {text!r}") from None
    if not values or values[0] <= 0:
        raise UserError(f"{option} takes positive numbers, got {text!r}")
    return values


def make_plan(args: argparse.Namespace) -> Plan:
    defaults = _SMOKE if args.smoke else _FULL

    def option(name: str):
        value = getattr(args, name)
        return defaults[name] if value is None else value

    lengths = _numbers(option("lengths"), "--lengths", float)
    if lengths[-1] > 240:
        raise UserError(f"--lengths: at most 240 minutes (audio.max_duration_s), got {lengths[-1]:g}")
    call_seconds = option("call_seconds")
    if not 1 <= call_seconds <= 3600:
        raise UserError(f"--call-seconds must be between 1 and 3600, got {call_seconds:g}")
    siprec_calls = option("siprec_calls")
    if not 1 <= siprec_calls <= 500:
        raise UserError(f"--siprec-calls must be between 1 and 500, got {siprec_calls}")
    skip = frozenset(item.strip() for item in option("skip").split(",") if item.strip())
    if skip - set(PARTS):
        raise UserError(f"--skip: unknown part(s) {', '.join(sorted(skip - set(PARTS)))}; parts: {', '.join(PARTS)}")
    return Plan(out=args.out, lengths_s=tuple(minutes * 60 for minutes in lengths),
                levels=_numbers(option("levels"), "--levels", int),
                live_levels=_numbers(option("live_levels"), "--live-levels", int), call_seconds=call_seconds, skip=skip,
                smoke=args.smoke, docs=not (args.smoke or args.no_docs),
                arrival_spread_s=min(5.0, call_seconds / 5), stalled_streams=5 if args.smoke else 100,
                triton_requests=5 if args.smoke else 40, vault_records=50 if args.smoke else 2000,
                siprec_calls=siprec_calls)


def _machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])  # MemTotal comes first
    return {"cores": os.cpu_count(), "cpu": cpu, "memory_gib": round(memory_kib / 2**20, 1),
            "load_average_at_start": round(os.getloadavg()[0], 2)}


def measure(plan: Plan, scratch: Path) -> dict[str, Any]:
    """Every part not skipped, in order; the figures as the JSON report holds them."""
    from aftercall.evaluation import bench_served, bench_siprec, bench_stages, bench_triton, bench_vault
    from aftercall.evaluation.bench_tools import demo_call

    data: dict[str, Any] = {"skipped": sorted(plan.skip)}
    if "stages" not in plan.skip:
        data["stages"] = [bench_stages.measure_length(seconds, scratch) for seconds in plan.lengths_s]
    if "served" not in plan.skip:
        data["in_process"] = bench_stages.in_process_baseline(plan.call_seconds, scratch)
        served_dir = scratch / "served"
        served_dir.mkdir()
        data["served"] = bench_served.served_figures(demo_call(plan.call_seconds), list(plan.levels),
                                                     plan.arrival_spread_s, plan.stalled_streams, served_dir)
        data["served"].update(call_seconds=plan.call_seconds, arrival_spread_s=plan.arrival_spread_s)
    if "live" not in plan.skip:
        live_dir = scratch / "live"
        live_dir.mkdir()
        data["live"] = bench_served.live_figures(plan.lengths_s, plan.live_levels, min(60.0, plan.lengths_s[0]),
                                                   live_dir)
    if "triton" not in plan.skip:
        data["triton"] = bench_triton.triton_vs_in_process(scratch, plan.triton_requests)
    if "llm" not in plan.skip:
        data["llm"] = bench_triton.llm_summariser(scratch)
    if "vault" not in plan.skip:
        data["vault"] = bench_vault.vault_figures(plan.vault_records, scratch, "postgres" not in plan.skip)
    if "siprec" not in plan.skip:
        data["siprec"] = bench_siprec.siprec_figures(demo_call(plan.call_seconds), plan.siprec_calls,
                                                     scratch / "siprec")
    return data


def run(args: argparse.Namespace) -> int:
    from aftercall import __version__
    from aftercall.evaluation import bench_report
    from aftercall.evaluation.bench_tools import SOURCE_ROOT, say
    from aftercall.evaluation.report import write_report

    plan = make_plan(args)
    started = time.monotonic()
    meta: dict[str, Any] = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                            "aftercall": __version__, "mode": "smoke" if plan.smoke else "full", **_machine()}
    with tempfile.TemporaryDirectory(prefix="aftercall-bench-") as scratch:
        data = measure(plan, Path(scratch))
    data["ratios"] = bench_report.ratios(data)
    meta.update(load_average_at_end=round(os.getloadavg()[0], 2), duration_s=round(time.monotonic() - started))
    json_path, html_path = write_report(plan.out, "bench", "aftercall bench", data, bench_report.sections(data), meta)
    say(f"wrote {json_path} and {html_path} ({meta['duration_s']} s)")
    if plan.docs:
        docs = SOURCE_ROOT / "docs" / "benchmarks.md"
        with docs.open("a", encoding="utf-8") as handle:
            handle.write(bench_report.markdown_summary(data, meta))
        say(f"appended the summary to {docs}")
    return 0
