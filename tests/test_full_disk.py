"""A full data disk, for real: the data directory on a small tmpfs the test mounts, filled up with a file. Reads
are refused (RESOURCE_EXHAUSTED) rather than left unaudited, new calls are refused, and a call the full disk cut off
is summarised once the file is gone, with no operator."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import queue
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry

from aftercall.app import SERVICES, start_appliance
from aftercall.config import Config
from aftercall.core.audio import read_wav
from aftercall.core.database import DATABASE_NAME
from aftercall.ingest import processor
from aftercall.pipeline import Pipeline
from aftercall.summarise.taxonomy import load_taxonomy
from aftercall.v1 import ingest_pb2 as pb
from aftercall.v1 import ingest_pb2_grpc as pb_grpc
from aftercall.v1 import summaries_pb2 as spb
from aftercall.v1 import summaries_pb2_grpc as spb_grpc

pytestmark = pytest.mark.e2e

_DISK_MB = 8


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MB tmpfs of this test's own; skipped where mounting is not permitted (not root, no CAP_SYS_ADMIN)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: the full-disk test needs its own tmpfs (CI runs as root)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={_DISK_MB}m,mode=0700", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); the full-disk test "
                    "needs root or CAP_SYS_ADMIN (CI runs as root)")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(directory: Path) -> Path:
    """A file that takes every free byte (down to the last page)."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for block in (1 << 20, 1 << 16, 1 << 12, 1 << 9):
            try:
                while True:
                    handle.write(b"\xff" * block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


def _start(call_id: str) -> pb.CallAudio:
    return pb.CallAudio(start=pb.CallStart(call_id=call_id, encoding=pb.AUDIO_ENCODING_MULAW, sample_rate_hz=8000,
                                           channel_roles=[pb.CHANNEL_ROLE_AGENT, pb.CHANNEL_ROLE_CUSTOMER]))


def _chunks(payload: bytes, size: int = 1600, first: int = 0) -> list[pb.CallAudio]:
    return [pb.CallAudio(chunk=pb.AudioChunk(sequence=i, audio=payload[o : o + size]))
            for i, o in enumerate(range(0, len(payload), size), start=first)]


_END = pb.CallAudio(end=pb.CallEnd(reason="hangup"))


def _stream(port: int, messages) -> tuple[list[pb.CallEvent], grpc.RpcError | None]:
    events = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            for event in pb_grpc.CallIngestStub(channel).StreamCall(iter(messages), timeout=120):
                events.append(event)
        except grpc.RpcError as error:
            return events, error
    return events, None


def _fed(messages: queue.Queue):
    while (message := messages.get()) is not None:
        yield message


async def _call_in_progress(port: int, data: Path, call_id: str, audio: bytes) -> tuple[asyncio.Task, queue.Queue]:
    """A stream that has sent `audio` and stays open: put more messages on the queue, then None to end it."""
    messages: queue.Queue = queue.Queue()
    for message in [_start(call_id), *_chunks(audio)]:
        messages.put(message)
    stream = asyncio.create_task(asyncio.to_thread(_stream, port, _fed(messages)))
    deadline = time.monotonic() + 30
    while not (data / "spool" / call_id).exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)  # the chunks written
    return stream, messages


async def _get(stub, call_id: str) -> grpc.StatusCode:
    try:
        await stub.Get(spb.GetSummaryRequest(call_id=call_id))
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as error:
        return error.code()


async def _list(stub) -> grpc.StatusCode:
    try:
        await stub.List(spb.ListSummariesRequest(page_size=10))
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as error:
        return error.code()


async def test_a_full_disk_refuses_cleanly_and_the_cut_off_call_is_summarised_once_space_returns(
        small_disk, summariser, transcriber, demo_clip, monkeypatch):
    monkeypatch.setattr(processor, "_SPACE_CHECK_S", 0.2)
    pipeline = Pipeline(Config(), load_taxonomy(), summariser, transcriber_factory=lambda: transcriber)
    config = dataclasses.replace(Config(), ingest=dataclasses.replace(Config().ingest, min_free_disk_mb=2))
    data = small_disk / "data"
    appliance = await start_appliance(config, SERVICES, data, "127.0.0.1:0", "", CollectorRegistry(), pipeline)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{appliance.port}")
    stub = spb_grpc.SummariesStub(channel)
    payload = read_wav(demo_clip).payload
    reads = searches = 0
    try:
        events, error = await asyncio.to_thread(_stream, appliance.port,
                                                [_start("before"), *_chunks(payload[:16000]), _END])
        assert error is None and events[-1].WhichOneof("event") == "summary"

        # A call in progress when the disk fills up.
        cut_off, messages = await _call_in_progress(appliance.port, data, "cut-off", payload[:32000])
        filler = _fill(small_disk)
        await asyncio.sleep(0.5)  # past the server's cached free-space figure
        for message in [*_chunks(payload[32000:48000], first=20), _END, None]:
            messages.put(message)
        events, error = await cut_off
        assert error is not None and error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, error
        assert "disk is full" in error.details()

        # New calls are refused; reads either work (and are audited) or are refused naming the full disk.
        events, error = await asyncio.to_thread(_stream, appliance.port,
                                                [_start("new"), *_chunks(payload[:1600]), _END])
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and "ingest.min_free_disk_mb" in error.details()
        for _ in range(3):
            code = await _get(stub, "before")
            assert code in (grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED)
            reads += code is grpc.StatusCode.OK
            code = await _list(stub)
            assert code in (grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED)
            searches += code is grpc.StatusCode.OK
        try:
            await stub.Get(spb.GetSummaryRequest(call_id="before"))
        except grpc.aio.AioRpcError as refused:
            assert "audit trail" in refused.details()
        else:
            reads += 1
        assert await _get(stub, "cut-off") in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED)

        # Space returns: the cut-off call is summarised without anyone doing anything.
        filler.unlink()
        deadline = time.monotonic() + 120
        while (code := await _get(stub, "cut-off")) is not grpc.StatusCode.OK:
            assert code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED)
            assert time.monotonic() < deadline, "the cut-off call was not summarised after space returned"
            await asyncio.sleep(0.2)
        record = await stub.Get(spb.GetSummaryRequest(call_id="cut-off"))
        assert record.complete is False
        assert not (data / "spool" / "cut-off").exists(), "its audio goes once it is summarised"
        assert await _get(stub, "before") is grpc.StatusCode.OK
        reads += 3  # the two above and the one just before
    finally:
        await channel.close()
        await appliance.stop(2)
    with sqlite3.connect(data / DATABASE_NAME) as db:
        counts = dict(db.execute("SELECT action, COUNT(*) FROM audit_log GROUP BY action").fetchall())
    assert counts.get("read", 0) == reads and counts.get("search", 0) == searches, "every read that worked is audited"


async def test_streams_stop_short_of_the_room_kept_for_the_database(small_disk, summariser, transcriber, demo_clip):
    """The spool is bounded: below half of ingest.min_free_disk_mb free, a stream is cut off before the disk is
    full, and the room left is enough to summarise what arrived."""
    pipeline = Pipeline(Config(), load_taxonomy(), summariser, transcriber_factory=lambda: transcriber)
    config = dataclasses.replace(Config(), ingest=dataclasses.replace(Config().ingest, min_free_disk_mb=4))
    data = small_disk / "data"
    appliance = await start_appliance(config, SERVICES, data, "127.0.0.1:0", "", CollectorRegistry(), pipeline)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{appliance.port}")
    payload = read_wav(demo_clip).payload
    try:
        stream, messages = await _call_in_progress(appliance.port, data, "bounded", payload[:16000])
        with open(small_disk / "filler", "wb") as handle:  # leaves 1 MB: under the 2 MB reserve
            handle.write(b"\xff" * (shutil.disk_usage(small_disk).free - (1 << 20)))
        await asyncio.sleep(0.5)
        for message in [*_chunks(payload[16000:32000], first=10), _END, None]:
            messages.put(message)
        events, error = await stream
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and "ingest.min_free_disk_mb" in error.details()
        record = await asyncio.wait_for(_summary(spb_grpc.SummariesStub(channel), "bounded"), 120)
        assert record.complete is False
        assert shutil.disk_usage(small_disk).free > 0
    finally:
        await channel.close()
        await appliance.stop(2)


async def _summary(stub, call_id: str) -> spb.SummaryRecord:
    while True:
        try:
            return await stub.Get(spb.GetSummaryRequest(call_id=call_id))
        except grpc.aio.AioRpcError as error:
            if error.code() is not grpc.StatusCode.NOT_FOUND:
                raise
        await asyncio.sleep(0.2)
