"""The in-process pipeline behind `aftercall summarise`: audio -> transcript -> redaction -> summary -> re-check.

Sensitive values exist only between recognition and redaction, in memory; nothing downstream ever sees them.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from aftercall.config import Config
from aftercall.core.audio import Audio, Encoding, load_audio
from aftercall.core.errors import AudioFormatError
from aftercall.core.transcript import Transcript, Turn, check_transcript_size, parse_transcript
from aftercall.redact import Redactor
from aftercall.redact.redactor import Redaction
from aftercall.redact.rules import RuleTable
from aftercall.redact.tagger import shipped_tagger
from aftercall.summarise.contract import SummaryContractError, check_summary
from aftercall.summarise.summariser import EmbeddedSummariser
from aftercall.summarise.taxonomy import Disposition
from aftercall.summarise.templates import Template, apply_template, parse_templates
from aftercall.transcribe.base import ProgressCallback, Transcriber

logger = logging.getLogger(__name__)


@dataclass
class RawAudioSpec:
    """How to read a headerless G.711 file (`--raw mulaw --sample-rate 8000 --channels 2`)."""

    encoding: Encoding
    sample_rate: int = 8000
    channels: int = 1


def build_pipeline(config: Config, taxonomy_path: Path | None = None) -> "Pipeline":
    """The pipeline as configured; the recogniser is built on first use, so transcript input never pays for it."""
    from aftercall.summarise.taxonomy import load_taxonomy

    if taxonomy_path is None and config.summarise.taxonomy:
        taxonomy_path = Path(config.summarise.taxonomy)
    return Pipeline(
        config=config,
        taxonomy=load_taxonomy(taxonomy_path),
        summariser=build_summariser(config),
        transcriber_factory=lambda: build_transcriber(config),
    )


def build_redactor(config: Config) -> Redactor:
    """The redactor with the site's `[redact]` rules; a type turned off is said once, loudly, at start-up."""
    table = RuleTable(config.redact.cues, config.redact.names, config.redact.off)
    for kind in sorted(table.off):
        logger.warning("redaction of %s is turned off (redact.off): these values are stored and shown as said", kind)
    threshold = config.redact.tagger_threshold
    return Redactor(table, tagger=shipped_tagger(threshold) if threshold < 1.0 else None)


def build_summariser(config: Config):
    if config.summarise.backend == "triton":
        from aftercall.summarise.triton import TritonSummariser

        return TritonSummariser(config.triton)
    return EmbeddedSummariser(min_similarity=config.summarise.min_disposition_similarity)


def build_transcriber(config: Config) -> Transcriber:
    asr = config.asr
    if asr.backend == "riva":
        from aftercall.transcribe.riva import RivaTranscriber

        return RivaTranscriber(asr)
    return build_embedded_transcriber(config)


def build_embedded_transcriber(config: Config, parallel_decodes: int | None = None):
    from aftercall.transcribe.embedded import EmbeddedTranscriber
    from aftercall.transcribe.vad import VadSettings

    asr = config.asr
    vad = VadSettings(asr.vad_threshold, asr.vad_min_silence_ms, asr.vad_speech_pad_ms, asr.vad_min_speech_ms)
    return EmbeddedTranscriber(Path(asr.model_dir) if asr.model_dir else None, asr.beam_size,
                               parallel_decodes or asr.parallel_decodes, vad if asr.vad else None, asr.mono,
                               asr.mono_min_confidence)


@dataclass
class Pipeline:
    config: Config
    taxonomy: tuple[Disposition, ...]
    summariser: EmbeddedSummariser
    transcriber_factory: Any  # () -> Transcriber; built lazily so transcript input never loads Whisper
    redactor: Redactor | None = None  # None: the site's rules from config.redact
    _transcriber: Transcriber | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _templates: dict[str, Template] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.redactor is None:
            self.redactor = build_redactor(self.config)
        self._templates = parse_templates(self.config.summarise.templates)

    def transcriber(self) -> Transcriber:
        with self._lock:  # interim and post-call threads may both ask first: one model, not two
            if self._transcriber is None:
                self._transcriber = self.transcriber_factory()
            return self._transcriber

    def load(self, path: Path, raw: RawAudioSpec | None) -> Audio | Transcript:
        if raw is None and path.suffix.lower() == ".json":
            # transcript.max_* are checked before any model runs; the size before the file is even read.
            limits, where = self.config.transcript, f"transcript {path}"
            try:
                check_transcript_size(path.stat().st_size, limits, where)
                return parse_transcript(path.read_bytes(), limits, where)
            except OSError as exc:
                raise AudioFormatError(f"cannot read {path}: {exc.strerror}") from exc
        limit = self.config.audio.max_duration_s  # a compressed file's decoding stops there
        if raw is not None:
            return load_audio(path, raw.encoding, raw.sample_rate, raw.channels, max_duration_s=limit)
        return load_audio(path, max_duration_s=limit)

    def run(self, source: Audio | Transcript, roles: tuple[str, ...], call_id: str | None = None,
            progress: ProgressCallback | None = None, queue: str | None = None) -> dict[str, Any]:
        timings: dict[str, float] = {}
        if isinstance(source, Audio):
            transcript = self.transcribe(source, roles, progress, timings)
        else:
            transcript = source
        call_id = call_id or transcript.call_id or f"call-{uuid.uuid4().hex[:12]}"
        redaction = self.redact(transcript, call_id, timings)
        audio_seconds = source.duration if isinstance(source, Audio) else None
        return self.summarise(redaction, timings=timings, audio_seconds=audio_seconds, queue=queue)

    # The stages, separately, so the served path can checkpoint between them.
    def transcribe(self, audio: Audio, roles: tuple[str, ...], progress: ProgressCallback | None = None,
                   timings: dict[str, float] | None = None, live: bool = False,
                   decoded: list[dict] | None = None) -> Transcript:
        """`decoded`: stretches of each channel recognised during the call (embedded recogniser), reused."""
        started = time.perf_counter()
        extra = {"decoded": decoded} if decoded and any(decoded) else {}
        transcript = self.transcriber().transcribe(audio, roles, progress, live, **extra)
        if timings is not None:
            timings["asr_s"] = time.perf_counter() - started
        return transcript

    def redact(self, transcript: Transcript, call_id: str, timings: dict[str, float] | None = None) -> Redaction:
        started = time.perf_counter()
        redaction = self.redactor.redact_transcript(Transcript(transcript.turns, call_id))
        if timings is not None:
            timings["redaction_s"] = time.perf_counter() - started
        return redaction

    def interim(self, audio: Audio, roles: tuple[str, ...], offset_s: float,
                context: Sequence[Turn] = ()) -> tuple[list[Turn], list[Turn]]:
        """Turns of a stretch of a call still in progress, `offset_s` into it: (as heard, redacted). See
        `redact_interim` for the redaction and `context`."""
        heard = [Turn(t.speaker, t.text, None if t.start is None else t.start + offset_s,
                      None if t.end is None else t.end + offset_s)
                 for t in self.transcribe(audio, roles, live=True).turns]
        return heard, self.redact_interim(heard, context)

    def redact_interim(self, turns: Sequence[Turn], context: Sequence[Turn] = ()) -> list[Turn]:
        """Live turns, redacted with the call's earlier live turns as context (a name or a card cue said a minute
        ago still counts) and then bluntly: the rest of the conversation is not known yet, so a card number may be
        split across batches, and every run of 4+ digits goes."""
        redacted = self.redact(Transcript((*context, *turns)), "interim").transcript.turns[len(context):]
        return [Turn(t.speaker, _INTERIM_DIGITS.sub("[NUMBER]", t.text), t.start, t.end) for t in redacted]

    def summarise(self, redaction: Redaction, taxonomy: tuple[Disposition, ...] | None = None,
                  timings: dict[str, float] | None = None, audio_seconds: float | None = None,
                  started_at: str | None = None, queue: str | None = None) -> dict[str, Any]:
        """Summary of an already redacted transcript. `redaction.secrets` may be empty (a call resumed from its
        checkpoint after a restart): the re-check then runs the detectors without the leak check. `started_at`:
        when the call started (ISO 8601), where the PBX or the stream said; `queue`: the call's queue, whose
        template (summarise.templates) shapes the summary."""
        timings = {} if timings is None else timings
        mark = time.perf_counter()
        summary = self.summariser.summarise(redaction.transcript, taxonomy or self.taxonomy)
        if queue in self._templates:
            summary = apply_template(summary, self._templates[queue], redaction.transcript)
        timings["summarisation_s"] = time.perf_counter() - mark
        try:
            check_summary({**summary, "transcript": [], "redactions": []})
        except SummaryContractError as exc:  # the summariser's bug: never reported as the caller's bad input
            raise RuntimeError(f"a summariser broke the summary contract: {exc}") from None
        summary["call_id"] = redaction.transcript.call_id or ""
        call = summary.get("call")  # None where a queue's template leaves it out or a Triton model predates it
        if call is not None:
            call["started_at"] = started_at or None
            if audio_seconds is not None:
                call["duration_s"] = round(audio_seconds, 2)
        summary["transcript"] = [t.to_json() for t in redaction.transcript.turns]
        mark = time.perf_counter()
        summary, second_pass = recheck_summary(summary, self.redactor, redaction.secrets)
        timings["recheck_s"] = time.perf_counter() - mark
        counts = redaction.counts + second_pass
        if sum(second_pass.values()):
            logger.warning("second redaction pass removed %d value(s) from the summary", sum(second_pass.values()))
        summary["redactions"] = [{"type": k, "count": v} for k, v in sorted(counts.items()) if v]
        if audio_seconds is not None:
            summary["audio_seconds"] = round(audio_seconds, 2)
        summary["timings"] = {k: round(v, 3) for k, v in timings.items()}
        return summary


_INTERIM_DIGITS = re.compile(r"(?<![\d*])\d(?:[\s.\-]?\d){3,}")  # not the last four kept in [CARD ****0366]
# "call" holds a time stamp from the PBX and relations from a closed list ("the caller's father"), nothing said.
_RECHECK_SKIP = {"call_id", "transcript", "redactions", "evidence", "model", "timings", "audio_seconds", "sentiment",
                 "call"}
# Values from a closed vocabulary (the site's taxonomy, an owner, a status), never text from the call: the entity
# recogniser would read a code such as PAYMENT_ARRANGEMENT as a place.
_RECHECK_FIXED = {"code", "label", "owner", "status", "type"}


def recheck_summary(summary: dict[str, Any], redactor: Redactor, secrets) -> tuple[dict[str, Any], Any]:
    """Run every generated string of the summary through redaction again, plus the leak check."""
    found: Counter = Counter()

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            cleaned, counts = redactor.redact_text(value, secrets)
            found.update(counts)
            return cleaned
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: (v if k in _RECHECK_FIXED else walk(v)) for k, v in value.items()}
        return value

    checked = {k: (v if k in _RECHECK_SKIP else walk(v)) for k, v in summary.items()}
    return checked, found
