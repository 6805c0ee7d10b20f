"""`aftercall eval`: run gold calls (a site's own, and the public sets) through the same pipeline `aftercall
summarise` runs, in text mode (transcripts), audio mode (recordings, or calls synthesised with two TTS voices so
that recognition errors count too) and mono mode (the synthesised stereo calls mixed to one channel, so that the
speakers must be told apart by voice), score every field, write eval.json + eval.html, and exit 1 when a gate
fails."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import operator
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aftercall.core.config import TranscriptConfig
from aftercall.core.errors import UserError
from aftercall.core.transcript import DEFAULT_LIMITS
from aftercall.evaluation.cases import Case, CaseFormatError, Dataset, load_cases
from aftercall.evaluation.datasets import PUBLIC_SETS, load_public
from aftercall.evaluation.scoring import aggregate, confusion, score_case
from aftercall.summarise.taxonomy import UNKNOWN

logger = logging.getLogger(__name__)

MODES = ("text", "audio", "mono")
# --mode both: what recognition errors cost each field; all: and what telling mono speakers apart costs.
_MODE_CHOICES = {"both": ("text", "audio"), "all": MODES}
EXIT_GATE_FAILED = 1
DEFAULT_GATES = ("leaks<=0",)
_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq}
_GATE = re.compile(r"^(?:(?!(?:holdout|tune)/)(?P<dataset>[\w.-]+)/)?(?:(?P<mode>text|audio|mono)/)?"
                   r"(?:(?P<split>holdout|tune)/)?(?P<metric>[a-z_0-9]+)\s*"
                   r"(?P<op><=|>=|==|<|>)\s*(?P<value>-?\d+(?:\.\d+)?)$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="a folder, .json or .jsonl of gold calls (docs/eval.md), or a public set: "
                             + ", ".join(PUBLIC_SETS))
    parser.add_argument("--public-data", type=Path,
                        default=Path(os.environ.get("AFTERCALL_PUBLIC_DATA", "../shared/data")),
                        help="where the public sets are (default $AFTERCALL_PUBLIC_DATA or ../shared/data); a set "
                             "that is absent is skipped with a note")
    parser.add_argument("--mode", choices=(*MODES, *_MODE_CHOICES), default="text",
                        help="text: score the transcripts; audio: recordings (synthesised from the turns where a "
                             "case has none) through recognition; mono: synthesised calls mixed to one channel; "
                             "both: text and audio side by side; all: the three (default text)")
    parser.add_argument("--split", choices=("all", "holdout", "tune"), default="all",
                        help="only the held-out half of every set, or only the half tuning may look at")
    parser.add_argument("--limit", type=_positive, help="at most N cases per set (the first N, in file order)")
    parser.add_argument("--audio-limit", type=_positive, default=20,
                        help="at most N cases per set in audio mode (default 20; recognition is slow on a CPU)")
    parser.add_argument("--tuned-on", action="append", default=[], metavar="SET",
                        help="mark a set the code or prompts were tuned on: its figures are labelled optimistic")
    parser.add_argument("--gate", action="append", default=[], metavar="[SET/][MODE/][SPLIT/]METRIC<=N",
                        help="fail (exit 1) unless this holds, e.g. 'disposition_accuracy>=0.8', "
                             "'calls/audio/wer<=0.25' or 'summary_calls/text/holdout/resolution_accuracy>=0.85' "
                             "(both halves unless a split is named); 'leaks<=0' is always checked, except on a set given its own "
                             "SET/id_leaks gate (cards, codes, dates of birth and IDs only)")
    parser.add_argument("--taxonomy", type=Path, help="the site's disposition taxonomy (default: the shipped one)")
    parser.add_argument("--config", type=Path, help="aftercall TOML config file (backends, ASR settings)")
    parser.add_argument("--audio-cache", type=Path,
                        help="keep synthesised calls here and reuse them (default: a temporary folder, deleted)")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="folder for eval.json and eval.html")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


@dataclass(frozen=True)
class Gate:
    text: str
    dataset: str | None
    mode: str | None
    metric: str
    op: str
    value: float
    split: str = "all"


def parse_gate(text: str) -> Gate:
    """Checked before anything runs: a typo in a gate must not cost a whole evaluation."""
    match = _GATE.match(text.strip())
    if not match:
        raise UserError(f"--gate {text!r}: expected [SET/][MODE/][SPLIT/]METRIC OP NUMBER, e.g. "
                        "disposition_accuracy>=0.8")
    numeric = [name for name, value in aggregate([]).items() if not isinstance(value, dict)]
    if match["metric"] not in numeric:
        raise UserError(f"--gate {text!r}: no metric {match['metric']!r}; known: {', '.join(sorted(numeric))}")
    return Gate(text.strip(), match["dataset"], match["mode"], match["metric"], match["op"], float(match["value"]),
                match["split"] or "all")


def check_gates(gates: list[Gate], results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every gate against every (set, mode) it names; a gate that names something not measured fails. On a set
    given its own `id_leaks` gate (a redaction set scored on name recall), that gate replaces `leaks<=0`."""
    verdicts = []
    id_gated = {gate.dataset for gate in gates if gate.metric == "id_leaks" and gate.dataset}
    for gate in gates:
        # Only the gate on all leaks of every set gives way, however it was written ("leaks <= 0").
        replaced = id_gated if (gate.metric, gate.dataset, gate.mode) == ("leaks", None, None) else set()
        targets = [(name, mode, (run["metrics"].get(gate.split) or {}).get(gate.metric))
                   for name, by_mode in results.items() if gate.dataset in (None, name) and name not in replaced
                   for mode, run in by_mode.items() if gate.mode in (None, mode)]
        explicit = gate.dataset is not None
        for name, mode, value in targets:
            if value is None and not explicit:
                continue
            passed = value is not None and _OPS[gate.op](value, gate.value)
            verdicts.append({"gate": gate.text, "set": name, "mode": mode, "value": value, "passed": passed})
        if explicit and not targets:
            verdicts.append({"gate": gate.text, "set": gate.dataset, "mode": gate.mode, "value": None,
                             "passed": False})
    return verdicts


class _Progress:
    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"eval: {message} ({time.monotonic() - self.started:.0f} s)", file=sys.stderr, flush=True)


def collect(args: argparse.Namespace, gates: list[Gate], say: _Progress,
            limits: TranscriptConfig = DEFAULT_LIMITS) -> tuple[list[Dataset], list[str]]:
    datasets, skipped = [], []
    for item in args.inputs:
        path = Path(item)
        if item in PUBLIC_SETS and not path.exists():
            if not (args.public_data / item).is_dir():
                skipped.append(f"{item}: not found under {args.public_data}, skipped")
                say(skipped[-1])
                continue
            datasets += load_public(item, args.public_data)
        else:
            datasets.append(load_cases(path, limits))
    names = [d.name for d in datasets]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        raise UserError(f"two inputs are both named {', '.join(sorted(duplicated))}: rename a folder or file")
    for name in args.tuned_on:
        if name not in names:
            raise UserError(f"--tuned-on {name}: no such set among the inputs ({', '.join(names) or 'none'})")
    for gate in gates:
        if gate.dataset is not None and gate.dataset not in names:
            raise UserError(f"--gate {gate.text!r}: no set {gate.dataset!r} among the inputs")
    for dataset in datasets:
        dataset.tuned_on = dataset.tuned_on or dataset.name in args.tuned_on
    return datasets, skipped


def _check_codes(dataset: Dataset, cases: list[Case], taxonomy) -> None:
    codes = {d.code for d in taxonomy} | {UNKNOWN}
    for case in cases:
        if case.expected.disposition is not None and case.expected.disposition not in codes:
            raise CaseFormatError(f"{dataset.name}/{case.case_id}: expected disposition "
                                  f"{case.expected.disposition!r} is not a code of the taxonomy in use")


class _Runner:
    """Runs cases through one pipeline; synthesises the calls audio mode needs."""

    def __init__(self, pipeline, audio_dir: Path):
        self.pipeline = pipeline
        self.audio_dir = audio_dir

    def audio_for(self, case: Case, mode: str) -> tuple[Path, list[dict] | None]:
        """The recording and, for a synthesised call, its timed reference turns (None for a case's own audio)."""
        if case.audio is not None:
            return case.audio, None
        from aftercall.evaluation.speech import mix_to_mono, synthesise_call

        key = hashlib.sha256(json.dumps(case.turns, sort_keys=True).encode()).hexdigest()[:24]
        path, timeline = self.audio_dir / f"{key}.wav", self.audio_dir / f"{key}.timeline.json"
        if not path.exists() or not timeline.exists():
            timeline.write_text(json.dumps(synthesise_call(case.turns, path)))
        if mode == "mono":
            mono = self.audio_dir / f"{key}.mono.wav"
            if not mono.exists():
                mix_to_mono(path, mono)
            path = mono
        return path, json.loads(timeline.read_text())

    def score(self, dataset: Dataset, case: Case, mode: str, taxonomy) -> dict:
        from aftercall.core.transcript import transcript_from_json
        from aftercall.evaluation.frontend import front_end_scores

        heard = front_end = None
        if mode in ("audio", "mono"):
            path, reference = self.audio_for(case, mode)
            audio = self.pipeline.load(path, None)
            cpu_before = time.process_time()
            transcript = self.pipeline.transcribe(audio, case.roles)
            front_end = {"asr_cpu_s": (time.process_time() - cpu_before, audio.duration)}
            if reference is not None:
                front_end.update(front_end_scores(reference, transcript, mono=mode == "mono"))
            heard = [t.to_json() for t in transcript.turns]
        else:
            transcript = transcript_from_json({"turns": list(case.turns)}, self.pipeline.config.transcript)
        redaction = self.pipeline.redact(transcript, case.case_id)
        summary = self.pipeline.summarise(redaction, taxonomy) if dataset.summarise else None
        score = score_case(case, redaction, summary, heard if mode == "audio" else None)
        score.update(front_end or {})
        return score


@dataclass(frozen=True)
class Selection:
    """Which cases of each set run, and how."""

    modes: tuple[str, ...] = ("text",)
    split: str = "all"
    limit: int | None = None
    audio_limit: int = 20

    def cases(self, dataset: Dataset) -> list[Case]:
        cases = [c for c in dataset.cases if self.split in ("all", c.split)]
        return cases[: self.limit] if self.limit else cases


def evaluate(datasets: list[Dataset], pipeline, selection: Selection, audio_dir: Path,
             say=lambda message: None) -> dict[str, dict[str, Any]]:
    """{set: {mode: {"metrics": {split: metrics}, "confusion": ..., "cases": [score, ...]}}}. Calls that audio
    mode synthesises are written to (and reused from) `audio_dir`."""
    runner = _Runner(pipeline, audio_dir)
    plan = []
    for dataset in datasets:
        taxonomy = dataset.taxonomy or pipeline.taxonomy
        cases = selection.cases(dataset)
        _check_codes(dataset, cases, taxonomy)
        for mode in selection.modes:
            if mode == "text":
                chosen = [c for c in cases if c.turns is not None]
            elif mode == "mono" and dataset.speakable:  # mixes of synthesised stereo calls only
                chosen = [c for c in cases if c.audio is None and c.turns is not None][: selection.audio_limit]
            elif dataset.speakable:
                chosen = [c for c in cases if c.audio is not None or c.turns is not None][: selection.audio_limit]
            else:
                continue
            if chosen:
                plan.append((dataset, mode, chosen, taxonomy))
    if any(mode != "text" and any(c.audio is None for c in chosen) for _, mode, chosen, _ in plan):
        from aftercall.evaluation.speech import require_tools

        require_tools()
    results: dict[str, dict[str, Any]] = {}
    for dataset, mode, cases, taxonomy in plan:
        scores = []
        step = max(1, len(cases) // 10)
        for index, case in enumerate(cases, 1):
            try:
                scores.append(runner.score(dataset, case, mode, taxonomy))
            except UserError as exc:  # a corrupt recording in a gold set: name it, stop before the report
                raise CaseFormatError(f"{dataset.name}/{case.case_id}: {exc}") from None
            if index % step == 0 or index == len(cases):
                say(f"{dataset.name} {mode}: {index}/{len(cases)} cases")
        by_split = {"all": aggregate(scores)}
        for split in ("holdout", "tune"):
            part = [s for s in scores if s["split"] == split]
            if part and len(part) < len(scores):
                by_split[split] = aggregate(part)
        results.setdefault(dataset.name, {})[mode] = {"metrics": by_split, "confusion": confusion(scores),
                                                      "cases": scores}
    return results


def run(args: argparse.Namespace) -> int:
    from aftercall.config import load_config
    from aftercall.core.logsetup import configure_logging
    from aftercall.evaluation.eval_report import write_eval_report
    from aftercall.pipeline import build_pipeline

    config = load_config(args.config)
    configure_logging(config.logging.level, config.logging.format)
    gates = [parse_gate(text) for text in (*DEFAULT_GATES, *args.gate)]
    say = _Progress(args.quiet)
    datasets, skipped = collect(args, gates, say, config.transcript)
    pipeline = build_pipeline(config, args.taxonomy)
    with tempfile.TemporaryDirectory(prefix="aftercall-eval-") as scratch:
        audio_dir = args.audio_cache or Path(scratch)
        audio_dir.mkdir(parents=True, exist_ok=True)
        selection = Selection(_MODE_CHOICES.get(args.mode, (args.mode,)), args.split, args.limit, args.audio_limit)
        results = evaluate(datasets, pipeline, selection, audio_dir, say)
    verdicts = check_gates(gates, results)
    json_path, html_path = write_eval_report(args.out, datasets, results, verdicts, skipped, args)
    failed = [v for v in verdicts if not v["passed"]]
    for verdict in failed:
        print(f"aftercall: gate failed: {verdict['gate']} on {verdict['set']} ({verdict['mode']}): "
              f"{verdict['value']}", file=sys.stderr)
    print(f"aftercall: eval report {html_path} and {json_path}; {len(verdicts) - len(failed)}/{len(verdicts)} "
          "gate checks passed", file=sys.stderr)
    return EXIT_GATE_FAILED if failed else 0
