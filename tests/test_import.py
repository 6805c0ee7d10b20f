"""`aftercall import`: a folder of recordings through a real appliance, each file summarised exactly once, run as the
console script does it (a subprocess), once and watching."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import signal
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry

from aftercall.app import SERVICES, start_appliance
from aftercall.config import Config
from aftercall.ingest.importer import call_id_for
from aftercall.pipeline import Pipeline
from aftercall.summarise.taxonomy import load_taxonomy
from aftercall.v1 import summaries_pb2 as spb
from conftest import ROOT
from test_services import _summaries, _wait_for_summary


@pytest.fixture
async def appliance(tmp_path, summariser, transcriber):
    pipeline = Pipeline(Config(), load_taxonomy(), summariser, transcriber_factory=lambda: transcriber)
    started = await start_appliance(Config(), SERVICES, tmp_path / "data", "127.0.0.1:0", "",
                                    CollectorRegistry(), pipeline)
    yield started
    await started.stop(2)


async def _stored(port: int, call_id: str) -> spb.SummaryRecord:
    channel, stub = await _summaries(port)
    async with channel:
        return await _wait_for_summary(stub, call_id)


async def _import(port: int, folder, *extra: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "aftercall", "import", str(folder),
                                                    "--server", f"127.0.0.1:{port}", *extra],
                                   capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.e2e
async def test_a_folder_is_summarised_once_per_recording(appliance, tmp_path, demo_clip):
    folder = tmp_path / "recordings"
    (folder / "monday").mkdir(parents=True)
    (folder / "monday" / "call-1.wav").write_bytes(demo_clip)
    (folder / "monday" / "call-1.wav.json").write_text(json.dumps({"agent_id": "agent-7", "queue": "cards",
                                                                   "started_at": "2026-12-01T09:30:00Z"}))
    (folder / "tuesday").mkdir()
    (folder / "tuesday" / "resent.wav").write_bytes(demo_clip)  # the same recording again, under another name
    (folder / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    (folder / "notes.txt").write_text("not a recording")
    (folder / ".partial.wav").write_bytes(demo_clip[:1000])  # hidden: a recorder still writing

    first = await _import(appliance.port, folder)
    assert first.returncode == 2, first.stderr  # one file was refused
    assert "3 recording(s)" in first.stderr
    assert "1 accepted, 1 imported before, 1 refused" in first.stderr
    assert re.search(r"\[\d/3\] broken\.wav: refused: INVALID_ARGUMENT", first.stderr), first.stderr

    record = await _stored(appliance.port, call_id_for(demo_clip))
    assert record.agent_id == "agent-7" and record.queue == "cards"
    assert json.loads(record.summary_json)["call"]["started_at"].startswith("2026-12-01T09:30")

    (folder / "broken.wav").unlink()
    again = await _import(appliance.port, folder)
    assert again.returncode == 0, again.stderr
    assert "0 accepted, 2 imported before, 0 refused" in again.stderr


@pytest.mark.e2e
async def test_watching_takes_each_file_once_it_has_stopped_growing(appliance, tmp_path, demo_clip):
    folder = tmp_path / "drop"
    folder.mkdir()
    watcher = subprocess.Popen([sys.executable, "-m", "aftercall", "import", str(folder), "--server",
                                f"127.0.0.1:{appliance.port}", "--watch", "--interval", "0.5"],
                               stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        arriving = folder / "late.wav"
        with arriving.open("wb") as file:  # written in two goes, like a recorder copying it in
            file.write(demo_clip[: len(demo_clip) // 2])
            file.flush()
            await asyncio.sleep(0.3)
            file.write(demo_clip[len(demo_clip) // 2 :])
        record = await _stored(appliance.port, call_id_for(demo_clip))
        assert record.call_id == "import-" + hashlib.sha256(demo_clip).hexdigest()[:32]
        await asyncio.sleep(1.5)  # more looks at the same, finished file
    finally:
        watcher.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(watcher.communicate, timeout=60)
    assert watcher.returncode == 0, stderr
    assert stderr.count("late.wav: accepted") == 1, stderr
    assert "late.wav: refused" not in stderr, "never taken while it was still being written"


async def test_bad_arguments_exit_2(tmp_path):
    result = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "aftercall", "import",
                                                      str(tmp_path / "missing")], capture_output=True, text=True,
                                     timeout=120, cwd=ROOT)
    assert result.returncode == 2 and "not a folder" in result.stderr
