"""The [ingest] section: the limits and workers of the call ingest service."""

from __future__ import annotations

from dataclasses import dataclass

from aftercall.core.config import Section, setting


@dataclass(frozen=True)
class IngestConfig(Section):
    """The call ingest service: admission limits, workers, live recognition and the disk it keeps free."""

    # Streams receiving audio at once; one more is refused with RESOURCE_EXHAUSTED.
    max_active_calls: int = setting(256, between=(1, 100000))
    # Calls received but not yet summarised (durable on disk); beyond this new calls are refused.
    max_pending_calls: int = setting(5000, between=(1, 10000000))
    # Largest audio chunk accepted, in milliseconds of audio.
    max_chunk_ms: int = setting(1000, between=(20, 10000))
    # Calls summarised at once (each decodes its channels in parallel: asr.parallel_decodes).
    workers: int = setting(1, between=(1, 64))
    # A stream with no message for this long is closed and its call summarised as incomplete.
    stream_idle_timeout_s: float = setting(120.0, between=(1.0, 86400.0))
    # New calls are refused while the data directory's disk has less free space than this; streams stop writing
    # below half of it (disk_reserve_bytes).
    min_free_disk_mb: int = setting(512, between=(0, 10000000))
    # Largest recording SubmitRecording takes (bytes or path); also the largest gRPC message the server reads.
    max_recording_mb: int = setting(32, between=(1, 2048))
    # SubmitRecording by path reads only files under this directory; empty disables it.
    import_dir: str = ""
    # Failed attempts before a call is marked failed (it stays on disk for an operator).
    max_attempts: int = setting(3, between=(1, 100))
    # Calls that may get interim segments at once (they cost recognition during the call); 0 disables them.
    max_interim_calls: int = setting(2, between=(0, 1000))
    # Audio per interim batch: shorter is livelier but recognises with less context and costs more.
    interim_interval_s: float = setting(10.0, between=(2.0, 300.0))
    # Longest value of each CallMetadata field (agent id, queue, ANI, DNIS, tenant, customer reference); a longer
    # one refuses the call (INVALID_ARGUMENT) before anything is stored.
    max_metadata_chars: int = setting(256, between=(64, 65536))
    # Streamed calls recognised while they last (embedded recogniser), so that at hang-up only the last stretch of
    # speech is left; a call beyond this is recognised after it ends. 0 turns live recognition off.
    max_live_calls: int = setting(32, between=(0, 100000))
    # Threads that recognise live calls (beside `workers`, which process ended calls).
    live_workers: int = setting(2, between=(1, 64))
    # A live call whose recognition falls this far behind its audio is recognised after it ends instead (the
    # stretches already recognised are kept).
    live_max_lag_s: float = setting(60.0, between=(5.0, 86400.0))
    # Decode a live call's open stretch of speech on idle CPU (threads at the lowest priority), in case the call ends
    # before it grows: then nothing is left to recognise at hang-up. Costs a second copy of the model in memory.
    live_spare_cpu: bool = True

    @property
    def disk_reserve_bytes(self) -> int:
        """Half of min_free_disk_mb: streams stop writing audio below it (the call is cut off and summarised), so the
        spool never takes the room the database needs for summaries, audit entries and bookkeeping."""
        return self.min_free_disk_mb * 1024 * 1024 // 2
