"""A streamed call recognised while it lasts, so that at hang-up only its last stretch of speech is left to recognise.

Each channel's audio goes to the embedded recogniser's `ChannelRecognition` as it arrives: the same VAD, the same
groups of speech and the same decodes as recognising the whole call after it ends, so the transcript is the same.
Work runs on the live executor, one batch per call at a time (a call's channels in turn, calls side by side; at
hang-up its channels' last stretches side by side), and each stretch recognised is checkpointed, sealed: after a
restart the call is recognised from its spooled audio with those stretches reused, not decoded again. A call whose recognition falls
`ingest.live_max_lag_s` behind its audio stops being recognised live and is recognised after it ends (with what was
already recognised reused), so an overloaded appliance degrades to today's behaviour and never loses audio.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from typing import Callable

import numpy as np

from aftercall.core.metrics import Metrics
from aftercall.core.transcript import Word
from aftercall.ingest.calls import CallStore
from aftercall.ingest.spool import StreamSpool, decode_channel

logger = logging.getLogger(__name__)


class LiveRecognition:
    """One streamed call's channels, recognised as its chunks arrive. Not thread-safe: called from the event loop;
    its batches run on `executor`, one at a time."""

    def __init__(self, channel_factory: Callable[..., object], spool: StreamSpool, executor: Executor,
                 calls: CallStore, call_id: str, max_lag_s: float, metrics: Metrics):
        self._format = spool.format
        self._executor, self._calls, self._call_id = executor, calls, call_id
        self._max_lag_s, self._metrics = max_lag_s, metrics
        self._decoded: list[tuple[int, tuple, list[list[Word]]]] = []  # from the executor, to checkpoint
        self._channels = [channel_factory(self._format.sample_rate,
                                          on_group=lambda spans, segments, index=index:
                                          self._decoded.append((index, spans, segments)))
                          for index in range(self._format.channels)]
        self._waiting: list[list[np.ndarray]] = [[] for _ in self._channels]  # received, not yet pushed
        self._received = [0] * len(self._channels)  # samples per channel
        self._pushed_s = 0.0
        self._batch: asyncio.Future | None = None
        self.behind = False  # fell too far behind (or broke off): the call is recognised after it ends
        self._ending = False

    def received(self, payload: bytes, channel: int | None, spool: StreamSpool) -> None:
        """A chunk just written to the spool (interleaved, or one channel's)."""
        if self.behind:
            return
        pieces = spool.deinterleave(payload) if channel is None else [payload]
        for index, data in zip(range(len(self._channels)) if channel is None else [channel], pieces):
            samples = decode_channel(data, self._format.encoding).astype(np.float32) / 32768.0
            self._waiting[index].append(samples)
            self._received[index] += len(samples)
        self._next_batch()

    def _next_batch(self, _finished: asyncio.Future | None = None) -> None:
        """After a chunk arrives or a batch ends: settle the batch that ended, then push what is waiting."""
        self._settle()
        if self._batch is not None or self.behind or self._ending or not any(self._waiting):
            return
        lag_s = max(self._received) / self._format.sample_rate - self._pushed_s
        if lag_s > self._max_lag_s:
            self.behind = True
            self._metrics.live_calls.labels(outcome="fell_behind").inc()
            logger.warning("live recognition %.0f s behind the call (ingest.live_max_lag_s); it is recognised after "
                           "it ends", lag_s)
            return
        self._start(self._push, self._take())
        self._batch.add_done_callback(self._next_batch)

    async def finish(self) -> list[list[list[Word]]] | None:
        """The call ended: every channel's segments (its last stretch recognised now), or None when the call fell
        behind and is recognised after it ends."""
        self._ending = True  # no batch starts after the one running
        if self._batch is not None:
            await asyncio.wait([self._batch])
        self._settle()
        if self.behind:
            return None
        length = max(self._received)
        # As the post-call path reads the spool: a shorter channel padded with silence to the call's length.
        for index, waiting in enumerate(self._waiting):
            waiting.append(np.zeros(length - self._received[index], dtype=np.float32))
        # The channels' last stretches side by side: this is what the caller waits for after hanging up.
        loop = asyncio.get_running_loop()
        segments = await asyncio.gather(*(loop.run_in_executor(self._executor, self._timed, _finish_channel,
                                                               channel, samples)
                                          for channel, samples in zip(self._channels, self._take())))
        self._checkpoint()
        self._metrics.live_calls.labels(outcome="live").inc()
        return segments

    def close(self) -> None:
        """The stream broke off: a batch still running finishes in the background and is discarded."""
        if not self.behind:
            self._metrics.live_calls.labels(outcome="after_call").inc()
        self.behind = True
        if self._batch is not None:
            self._batch.add_done_callback(lambda batch: batch.cancelled() or batch.exception())

    def _take(self) -> list[np.ndarray]:
        taken = [np.concatenate(waiting) if waiting else np.zeros(0, np.float32) for waiting in self._waiting]
        self._waiting = [[] for _ in self._channels]
        return taken

    def _start(self, work, pieces: list[np.ndarray]) -> None:
        self._batch = asyncio.get_running_loop().run_in_executor(self._executor, self._timed, work, pieces)

    def _timed(self, work, *args):
        """Work on the live executor, its time counted as the `live` stage (recognition during calls, beside the
        post-call stages)."""
        started = time.perf_counter()
        try:
            return work(*args)
        finally:
            self._metrics.stage_seconds.labels(stage="live").observe(time.perf_counter() - started)

    def _push(self, pieces: list[np.ndarray]) -> float:
        for channel, samples in zip(self._channels, pieces):
            channel.push(samples)
        return max(len(p) for p in pieces) / self._format.sample_rate

    def _settle(self) -> None:
        """A finished batch: its stretches checkpointed; an error stops live recognition (the call is recognised
        after it ends, from the spool)."""
        if self._batch is None or not self._batch.done():
            return
        batch, self._batch = self._batch, None
        if batch.exception() is not None:
            self.behind = True
            logger.warning("live recognition failed (%s); the call is recognised after it ends",
                           type(batch.exception()).__name__)
            return
        self._pushed_s += batch.result()
        self._checkpoint()

    def _checkpoint(self) -> None:
        decoded, self._decoded = self._decoded, []
        try:
            for channel, spans, segments in decoded:
                self._calls.checkpoint_group(self._call_id, channel, spans, segments)
        except Exception as exc:  # noqa: BLE001 - a full disk: the call goes on; a restart would decode these again
            logger.warning("could not checkpoint a recognised stretch (%s)", type(exc).__name__)


def _finish_channel(channel, samples: np.ndarray) -> list[list[Word]]:
    channel.push(samples)
    return channel.finish()
