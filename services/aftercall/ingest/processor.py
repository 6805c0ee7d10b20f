"""Turns received calls into stored summaries, one durable step at a time, and resumes after a restart.

received --ASR + redaction--> transcribed (redacted transcript checkpointed) --summary--> done.
Recognition and summarisation run in a worker thread pool, so the event loop keeps serving streams meanwhile.

A call stopped by a full data disk (its hand-over or a step's write found no room) waits, not counted against
ingest.max_attempts, and is taken up again once the disk has more than half of ingest.min_free_disk_mb free: no operator
is needed, and its spooled audio goes once it is summarised.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable

from aftercall.core.errors import CallFailedError, is_disk_full
from aftercall.core.logsetup import call_id_var
from aftercall.core.transcript import Transcript, Turn
from aftercall.ingest.calls import DONE, FAILED, RECEIVING, TRANSCRIBED, CallJob, CallStore
from aftercall.ingest.live import LiveRecognition
from aftercall.ingest.metrics import IngestMetrics
from aftercall.ingest.spool import Spool
from aftercall.pipeline import Pipeline
from aftercall.redact.redactor import Redaction
from aftercall.review.store import StoredSummary, SummaryStore
from aftercall.summarise.taxonomy import parse_taxonomy

logger = logging.getLogger(__name__)
_RETRY_DELAY_S = 2.0
_SPACE_CHECK_S = 5.0  # how often calls waiting for disk space look for it


class CallProcessor:
    def __init__(self, pipeline: Pipeline, calls: CallStore, summaries: SummaryStore, spool: Spool,
                 metrics: IngestMetrics, workers: int = 1, max_attempts: int = 3, reserve_bytes: int = 0):
        self._pipeline = pipeline
        self._calls = calls
        self._summaries = summaries
        self._spool = spool
        self._metrics = metrics
        self._workers = workers
        self._max_attempts = max_attempts
        self._reserve_bytes = reserve_bytes
        self._waiting_for_space: set[str] = set()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._waiters: dict[str, list[asyncio.Future]] = {}
        self._tasks: list[asyncio.Task] = []
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aftercall-pipeline")
        self._busy = 0
        # Calls recognised while they streamed: the recognition of their last stretch, started at hang-up.
        self._live: dict[str, asyncio.Future] = {}

    @property
    def pending(self) -> int:
        """Calls received and not yet stored: the queue, the ones being worked on and those waiting for space."""
        return self._queue.qsize() + self._busy + len(self._waiting_for_space)

    async def start(self) -> int:
        """Resume every call a previous run left unfinished; returns how many."""
        resumed = 0
        for job in self._calls.resumable():
            try:
                resumed += self._resume(job)
            except Exception as exc:
                if not is_disk_full(exc):
                    raise
                self.wait_for_space(job.call_id)
                resumed += 1
        if resumed:
            logger.warning("resuming %d unfinished call(s) from before the restart", resumed)
        self._tasks = [asyncio.create_task(self._work(), name=f"pipeline-{i}") for i in range(self._workers)]
        self._tasks.append(asyncio.create_task(self._retry_when_space(), name="pipeline-space"))
        return resumed

    def _resume(self, job: CallJob) -> bool:
        """Queue an unfinished call; one cut off mid-stream (a crash, a full disk) has the audio that reached the disk
        summarised (a recording is all or nothing). False: no audio at all, the call is dropped."""
        if job.state == RECEIVING:
            seconds = self._spool.received_seconds(job.call_id, job.audio_format)
            if seconds == 0:
                self._calls.delete(job.call_id)
                self._spool.remove(job.call_id)
                return False
            self._calls.mark_received(job.call_id, seconds, complete=job.source == "recording")
        self.submit(job.call_id)
        return True

    def wait_for_space(self, call_id: str) -> None:
        """The call could not go on for lack of disk space: taken up again once there is room."""
        if call_id not in self._waiting_for_space:
            logger.warning("the data disk is full; the call waits for space")
        self._waiting_for_space.add(call_id)
        self._metrics.queue_depth.set(self.pending)

    async def _retry_when_space(self) -> None:
        while True:
            await asyncio.sleep(_SPACE_CHECK_S)
            if not self._waiting_for_space or self._spool.free_bytes() <= self._reserve_bytes:
                continue
            waiting, self._waiting_for_space = sorted(self._waiting_for_space), set()
            for call_id in waiting:
                job = self._calls.get(call_id)
                if job is None or job.state in (DONE, FAILED):
                    continue
                token = call_id_var.set(call_id)
                try:
                    self._resume(job)
                except Exception as exc:  # noqa: BLE001 - one call must not stop the others' retries
                    if is_disk_full(exc):
                        self.wait_for_space(call_id)
                    else:  # left as it is on disk: the next start resumes it
                        logger.error("a call waiting for space could not be resumed", exc_info=exc)
                finally:
                    call_id_var.reset(token)

    def attach_live(self, call_id: str, live: LiveRecognition) -> None:
        """The call was recognised while it streamed (before `submit`): its last stretch is recognised from now, on
        the live workers, so calls that end together do not wait for each other's turn in the queue."""
        self._live[call_id] = asyncio.ensure_future(live.finish())

    def submit(self, call_id: str) -> None:
        self._queue.put_nowait(call_id)
        self._metrics.queue_depth.set(self.pending)

    async def wait(self, call_id: str) -> StoredSummary:
        """The stored summary of a call, once it exists; CallFailedError if it never will."""
        if self._summaries.exists(call_id):
            return self._summaries.get(call_id)
        job = self._calls.get(call_id)
        if job is None or job.state == FAILED:
            raise CallFailedError(f"call {call_id!r} could not be summarised"
                             + (f" ({job.error}); it is kept on disk for an operator" if job else ""))
        future = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(call_id, [])
        waiters.append(future)
        try:
            return await future
        finally:
            if future in waiters:  # a client that went away must not leave its future behind
                waiters.remove(future)
            if not waiters:
                self._waiters.pop(call_id, None)

    async def stop(self, deadline: float) -> bool:
        """Let the call being processed finish until `deadline` (monotonic); the rest resume at the next start
        (they are on disk). True when a call was still being processed (its worker thread cannot be interrupted)."""
        while self._busy and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        abandoned = self._busy > 0
        # Calls still finishing their live recognition resume from the spool at the next start.
        for task in [*self._tasks, *self._live.values()]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._live.values(), return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
        return abandoned

    async def _work(self) -> None:
        while True:
            call_id = await self._queue.get()
            self._busy += 1
            token = call_id_var.set(call_id)
            try:
                await self._process(call_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bad call must not stop the worker
                if is_disk_full(exc):
                    self.wait_for_space(call_id)  # not the call's fault: no attempt counted
                else:
                    await self._failed(call_id, exc)
            finally:
                call_id_var.reset(token)
                self._busy -= 1
                self._metrics.queue_depth.set(self.pending)

    async def _run(self, stage: str, function, *args) -> Any:
        return await self._timed(stage, asyncio.get_running_loop().run_in_executor(self._executor, function, *args))

    async def _timed(self, stage: str, work: Awaitable) -> Any:
        started = time.perf_counter()
        try:
            return await work
        except Exception:
            self._metrics.calls_failed.labels(stage=stage).inc()
            raise
        finally:
            self._metrics.stage_seconds.labels(stage=stage).observe(time.perf_counter() - started)

    async def _process(self, call_id: str) -> None:
        job = self._calls.get(call_id)
        if job is None:
            return
        if self._summaries.exists(call_id):
            # Stored before a crash cut the bookkeeping short: finish it, or the raw audio would stay forever.
            self._finish(call_id)
            return
        timings: dict[str, float] = {}
        if job.state == TRANSCRIBED and job.transcript is not None:
            # Resumed after a restart: the secrets of the first pass are gone; the re-check runs detectors only.
            turns = tuple(Turn(t["speaker"], t["text"], t["start"], t["end"]) for t in job.transcript["turns"])
            redaction = Redaction(Transcript(turns, call_id), Counter(job.transcript["counts"]), [])
        else:
            transcript = await self._recognise(job, timings)
            redaction = await self._run("redaction", self._pipeline.redact, transcript, call_id, timings)
            self._calls.checkpoint_transcript(call_id, {
                "turns": [t.to_json() for t in redaction.transcript.turns],
                "counts": dict(redaction.counts)})
            for kind, count in redaction.counts.items():
                self._metrics.redactions.labels(type=kind).inc(count)
        summary = await self._run("summarisation", self._summarise, job, redaction, timings)
        started = time.perf_counter()
        self._summaries.create_draft(summary, job.metadata, job.complete, summary.get("model", "aftercall"))
        self._finish(call_id)
        self._metrics.stage_seconds.labels(stage="store").observe(time.perf_counter() - started)
        self._metrics.calls_completed.inc()
        if job.received_at is not None:
            self._metrics.post_call_latency.observe(max(0.0, time.time() - job.received_at))
        # Nothing the store keeps behind a blind index (disposition, agent, tenant, customer reference) goes in a
        # log: at INFO it would undo what the index hides.
        logger.info("call summarised (%.1f s of audio)", job.audio_seconds)
        self._resolve(call_id, self._summaries.get(call_id))

    async def _recognise(self, job: CallJob, timings: dict[str, float]) -> Transcript:
        """The call's transcript: its last stretch when it was recognised live; otherwise from its spooled audio,
        reusing the stretches a live pass checkpointed before a restart or before it fell behind."""
        live = self._live.pop(job.call_id, None)
        if live is not None:
            started = time.perf_counter()
            transcript = await self._timed("asr", self._finish_live(live, job))
            if transcript is not None:
                timings["asr_s"] = time.perf_counter() - started
                return transcript
        audio = await asyncio.get_running_loop().run_in_executor(
            self._executor, self._spool.load, job.call_id, job.audio_format)
        decoded = self._calls.recognised_groups(job.call_id, len(audio.channels))
        if any(decoded):
            logger.info("recognising the spooled audio, reusing %d stretch(es) recognised during the call",
                        sum(len(groups) for groups in decoded))
        return await self._run("asr", self._pipeline.transcribe, audio, job.roles, None, timings, False, decoded)

    async def _finish_live(self, live: asyncio.Future, job: CallJob) -> Transcript | None:
        """The transcript from the call's live recognition, or None when the call fell behind or live recognition
        failed: then it is recognised from the spool."""
        try:
            per_channel = await live
        except Exception as exc:  # noqa: BLE001 - the spooled audio is still there to recognise
            logger.warning("live recognition could not finish (%s); recognising the spooled audio",
                           type(exc).__name__)
            return None
        if per_channel is None:
            return None
        load = functools.partial(self._spool.load, job.call_id, job.audio_format)
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._pipeline.transcriber().transcript_of, per_channel, job.roles, load)

    def _finish(self, call_id: str) -> None:
        self._calls.mark_done(call_id)
        self._spool.remove(call_id)

    def _summarise(self, job: CallJob, redaction: Redaction, timings: dict[str, float]) -> dict[str, Any]:
        taxonomy = parse_taxonomy(job.taxonomy_toml, "call taxonomy") if job.taxonomy_toml else None
        summary = self._pipeline.summarise(redaction, taxonomy, timings, job.audio_seconds or None,
                                           job.metadata.get("started_at") or None, job.metadata.get("queue") or None)
        summary["complete"] = job.complete
        second_pass = Counter({r["type"]: r["count"] for r in summary["redactions"]}) - redaction.counts
        for kind, count in second_pass.items():
            self._metrics.redactions.labels(type=kind).inc(count)
        return summary

    async def _failed(self, call_id: str, exc: Exception) -> None:
        try:
            attempts, final = self._calls.record_failure(call_id, f"{type(exc).__name__}: {exc}",
                                                         self._max_attempts)
        except Exception as recording:
            if not is_disk_full(recording):
                raise
            self.wait_for_space(call_id)  # the attempt could not be counted: it is made again once there is room
            return
        if final:
            logger.error("call failed after %d attempt(s): %s", attempts, type(exc).__name__, exc_info=exc)
            for future in self._waiters.pop(call_id, []):
                if not future.done():
                    future.set_exception(CallFailedError(
                        f"call {call_id!r} could not be summarised ({type(exc).__name__}: {exc}); it is kept on disk "
                        "for an operator"))
            return
        logger.warning("call attempt %d failed (%s); retrying", attempts, type(exc).__name__)
        await asyncio.sleep(_RETRY_DELAY_S)
        self.submit(call_id)

    def _resolve(self, call_id: str, record: StoredSummary) -> None:
        for future in self._waiters.pop(call_id, []):
            if not future.done():
                future.set_result(record)

