"""A streamed call recognised while it lasts, so that at hang-up little or nothing is left to recognise.

Each channel's audio goes to the embedded recogniser's `ChannelRecognition` as it arrives: the same VAD, the same
groups of speech and the same decodes as recognising the whole call after it ends, so the transcript is the same.
Each group recognised is checkpointed, sealed: after a restart the call is recognised from its spooled audio with
those groups reused, not decoded again. When a speaker pauses, the group the channel would end with if the call
ended now is decoded on idle CPU only (a lowest-priority copy of the model): if the call does end before they speak
again, its last group is already recognised.

`LiveWorkers` runs the work of every live call: a call that has ended first, the others taking turns. When they
fall `ingest.live_max_lag_s` behind, the newest call is recognised after it ends instead (with what was already
recognised reused), so an overloaded appliance degrades to recognition after the call and never loses audio.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Callable

import numpy as np

from aftercall.core.transcript import Word
from aftercall.ingest.calls import CallStore
from aftercall.ingest.metrics import IngestMetrics
from aftercall.ingest.spool import StreamSpool, decode_channel

if TYPE_CHECKING:
    from aftercall.transcribe.embedded import ChannelRecognition, Speculation

logger = logging.getLogger(__name__)

class _PriorityThreads:
    """Threads that take work lowest priority value first (values compare as tuples)."""

    def __init__(self, threads: int, name: str):
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._order = itertools.count()  # ties, and what a priority does not order: first come, first served
        self._threads = [threading.Thread(target=self._serve, name=f"{name}-{index}", daemon=True)
                         for index in range(threads)]
        for thread in self._threads:
            thread.start()

    def submit(self, priority: int, work: Callable, *args) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((priority, next(self._order), future, work, args))
        return future

    def _serve(self) -> None:
        while True:
            *_order, future, work, args = self._queue.get()
            if future is None:
                return
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(work(*args))
                except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits the work
                    future.set_exception(exc)

    def shutdown(self) -> None:
        """Work still queued is dropped; work running finishes in its thread, its result unused."""
        while True:
            try:
                future = self._queue.get_nowait()[2]
            except queue.Empty:
                break
            future.cancel()
        for _ in self._threads:
            self._queue.put((float("inf"), next(self._order), None, None, None))


class LiveWorkers:
    """The threads that recognise live calls, and the calls they serve. Work for a call that has ended goes first
    (its caller waits for the summary); calls still going on take turns, one batch each in the queue. With `spare`,
    as many threads again for speculative decodes, newest first: the latest pause is the likeliest to be a call's
    last."""

    def __init__(self, threads: int, spare: bool):
        self._live = _PriorityThreads(threads, "aftercall-live")
        self._spare = _PriorityThreads(threads, "aftercall-spare") if spare else None
        self._spare_order = itertools.count()
        self._calls: list[LiveRecognition] = []  # in the order they started
        self._last_shed = float("-inf")

    def run(self, urgent: bool, work: Callable, *args) -> asyncio.Future:
        return asyncio.wrap_future(self._live.submit(0 if urgent else 1, work, *args))

    @property
    def speculating(self) -> bool:
        return self._spare is not None

    def speculate(self, work: Callable) -> concurrent.futures.Future:
        return self._spare.submit(-next(self._spare_order), work)

    def started(self, call: LiveRecognition) -> None:
        self._calls.append(call)

    def ended(self, call: LiveRecognition) -> None:
        if call in self._calls:
            self._calls.remove(call)

    def behind(self, lagging: LiveRecognition, lag_s: float, max_lag_s: float) -> None:
        """`lagging` is `lag_s` behind its audio, over `max_lag_s`: the newest live call (it has the least
        recognised) is recognised after it ends instead. No other is given up until the capacity that freed has had
        `max_lag_s` / 2 to show, unless `lagging` itself falls twice `max_lag_s` behind (its waiting audio is held in
        memory): then it is given up."""
        now = time.monotonic()
        if lag_s > 2 * max_lag_s:
            lagging.give_up(f"fell {lag_s:.0f} s behind, twice ingest.live_max_lag_s")
        elif now - self._last_shed >= max_lag_s / 2:
            self._last_shed = now
            self._calls[-1].give_up(f"the newest live call, while another is {lag_s:.0f} s behind "
                                    "(ingest.live_max_lag_s)")

    def shutdown(self) -> None:
        """Work still queued is dropped; work running finishes in its thread, its result unused."""
        self._live.shutdown()
        if self._spare is not None:
            self._spare.shutdown()


class LiveRecognition:
    """One streamed call's channels, recognised as its chunks arrive. Not thread-safe: called from the event loop;
    its batches run on `workers`, one at a time."""

    def __init__(self, channel_factory: Callable[..., ChannelRecognition], spool: StreamSpool, workers: LiveWorkers,
                 calls: CallStore, call_id: str, max_lag_s: float, metrics: IngestMetrics):
        self._format = spool.format
        self._workers, self._calls, self.call_id = workers, calls, call_id
        self._max_lag_s, self._metrics = max_lag_s, metrics
        self._decoded: list[tuple[int, tuple, list[list[Word]]]] = []  # from the workers, to checkpoint
        self._channels = [channel_factory(self._format.sample_rate,
                                          on_group=lambda spans, segments, index=index:
                                          self._decoded.append((index, spans, segments)))
                          for index in range(self._format.channels)]
        self._waiting: list[list[np.ndarray]] = [[] for _ in self._channels]  # received, not yet pushed
        self._received = [0] * len(self._channels)  # samples per channel
        self._pushed_s = 0.0
        self._batch: asyncio.Future | None = None
        # Per channel: its speculations queued or decoding on the spare threads, each with its future.
        self._speculating: list[list[tuple[Speculation, concurrent.futures.Future]]] = [[] for _ in self._channels]
        self.behind = False  # fell too far behind (or broke off): the call is recognised after it ends
        self._ending = False
        workers.started(self)

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
            self._workers.behind(self, lag_s, self._max_lag_s)
            if self.behind:
                return
        self._batch = self._run(False, self._push, self._take())
        self._batch.add_done_callback(self._next_batch)

    def give_up(self, why: str) -> None:
        """Live recognition stops (the appliance fell behind); the call is recognised after it ends."""
        self.behind = True
        self._waiting = [[] for _ in self._channels]
        self._workers.ended(self)
        self._drop_speculations()
        self._metrics.live_calls.labels(outcome="fell_behind").inc()
        logger.warning("call %s is recognised after it ends, not live: %s", self.call_id, why)

    async def finish(self) -> list[list[list[Word]]] | None:
        """The call ended: every channel's segments (its last group recognised now, unless a speculation has it),
        or None when the call fell behind and is recognised after it ends."""
        self._ending = True  # no batch starts after the one running
        self._workers.ended(self)  # its work is now urgent, never given up
        try:
            if self._batch is not None:
                await asyncio.wait([self._batch])
            self._settle()
            if self.behind:
                return None
            length = max(self._received)
            # As the post-call path reads the spool: a shorter channel padded with silence to the call's length.
            for index, waiting in enumerate(self._waiting):
                waiting.append(np.zeros(length - self._received[index], dtype=np.float32))
            # What the caller waits for after hanging up: the channels side by side.
            segments = await asyncio.gather(*(self._finish_channel(index, samples)
                                              for index, samples in enumerate(self._take())))
        finally:
            self._drop_speculations()
        self._checkpoint()
        self._metrics.live_calls.labels(outcome="live").inc()
        return segments

    async def _finish_channel(self, index: int, samples: np.ndarray) -> list[list[Word]]:
        """The channel's last samples and last group. A speculation decoding that group (as it now is) races the
        same decode at hang-up priority: on an idle appliance the speculation, which started first, wins; on a busy
        one its threads get no CPU and the other wins. One still queued is dropped."""
        channel = self._channels[index]
        await self._run(True, channel.push, samples)
        key = channel.key_if_ended()
        for speculation, future in self._speculating[index]:
            if speculation.key != key:
                future.cancel()  # overtaken by speech
            elif future.done():  # its result may not have been handed over yet
                _keep_if_decoded(channel, speculation, future)
            elif future.running():
                await self._race(channel, speculation, future)
            else:
                future.cancel()  # still queued: the decode `finish` makes comes sooner
        return await self._run(True, channel.finish)

    async def _race(self, channel: ChannelRecognition, speculation: Speculation,
                    speculating: concurrent.futures.Future) -> None:
        urgent = self._run(True, speculation.decode, False)
        done, _pending = await asyncio.wait([asyncio.wrap_future(speculating), urgent],
                                            return_when=asyncio.FIRST_COMPLETED)
        urgent.cancel()  # only if still queued; one decoding finishes, unused
        _keep_if_decoded(channel, speculation, urgent if urgent in done else speculating)

    def close(self) -> None:
        """The stream broke off: a batch still running finishes in the background and is discarded."""
        if not self.behind:
            self._metrics.live_calls.labels(outcome="after_call").inc()
        self.behind = True
        self._workers.ended(self)
        self._drop_speculations()
        if self._batch is not None:
            self._batch.add_done_callback(lambda batch: batch.cancelled() or batch.exception())

    def _take(self) -> list[np.ndarray]:
        taken = [np.concatenate(waiting) if waiting else np.zeros(0, np.float32) for waiting in self._waiting]
        self._waiting = [[] for _ in self._channels]
        return taken

    def _run(self, urgent: bool, work: Callable, *args) -> asyncio.Future:
        return self._workers.run(urgent, self._timed, work, *args)

    def _timed(self, work: Callable, *args):
        """Work on the live workers, its time counted as the `live` stage (recognition during calls, beside the
        post-call stages)."""
        started = time.perf_counter()
        try:
            return work(*args)
        finally:
            self._metrics.stage_seconds.labels(stage="live").observe(time.perf_counter() - started)

    def _push(self, pieces: list[np.ndarray]) -> tuple[float, list[Speculation | None]]:
        for channel, samples in zip(self._channels, pieces):
            channel.push(samples)
        speculations = [channel.speculation() if self._workers.speculating else None for channel in self._channels]
        return max(len(p) for p in pieces) / self._format.sample_rate, speculations

    def _speculate(self, index: int, speculation: Speculation) -> None:
        """Channel `index`'s last group, were the call to end now, decoded on the spare threads. It overtakes the
        channel's speculation still queued (dropped); one already decoding goes on (it may yet be the last)."""
        for _earlier, future in self._speculating[index]:
            future.cancel()
        future = self._workers.speculate(speculation.decode)
        self._speculating[index].append((speculation, future))
        loop = asyncio.get_running_loop()

        def decoded(done: concurrent.futures.Future) -> None:
            try:
                loop.call_soon_threadsafe(self._speculated, index, speculation, done)
            except RuntimeError:  # the event loop closed (the server stopped): nothing waits for it
                pass

        future.add_done_callback(decoded)

    def _speculated(self, index: int, speculation: Speculation, done: concurrent.futures.Future) -> None:
        self._speculating[index] = [entry for entry in self._speculating[index] if entry[1] is not done]
        _keep_if_decoded(self._channels[index], speculation, done)

    def _drop_speculations(self) -> None:
        """Those still queued are dropped (those decoding finish, unused)."""
        for speculations in self._speculating:
            for _speculation, future in speculations:
                future.cancel()

    def _settle(self) -> None:
        """A finished batch: its groups checkpointed, its speculations started; an error stops live recognition (the
        call is recognised after it ends, from the spool)."""
        if self._batch is None or not self._batch.done():
            return
        batch, self._batch = self._batch, None
        if batch.exception() is not None:
            self.behind = True
            logger.warning("live recognition failed (%s); the call is recognised after it ends",
                           type(batch.exception()).__name__)
            return
        seconds, speculations = batch.result()
        self._pushed_s += seconds
        self._checkpoint()
        for index, speculation in enumerate(speculations):
            if speculation is not None and not (self._ending or self.behind):
                self._speculate(index, speculation)

    def _checkpoint(self) -> None:
        decoded, self._decoded = self._decoded, []
        try:
            for channel, spans, segments in decoded:
                self._calls.checkpoint_group(self.call_id, channel, spans, segments)
        except Exception as exc:  # noqa: BLE001 - a full disk: the call goes on; a restart would decode these again
            logger.warning("could not checkpoint a recognised stretch (%s)", type(exc).__name__)


def _keep_if_decoded(channel: ChannelRecognition, speculation: Speculation, decode) -> None:
    """The channel keeps a finished decode of `speculation` (a concurrent or asyncio future); a cancelled or failed
    one is passed over (the group is decoded when it closes)."""
    if decode.cancelled():
        return
    if decode.exception() is not None:
        logger.debug("a decode of a speculation failed (%r); the group is decoded when it closes", decode.exception())
    else:
        channel.keep(speculation, decode.result())
