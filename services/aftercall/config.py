"""The appliance's config file: one section per service, owned by the service (`aftercall/<service>/config.py`),
gathered here in one dataclass; aftercall.core.config reads the file into it (types, ranges, environment overrides).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from aftercall.asr.config import AsrServerConfig
from aftercall.confirm.config import SmtpConfig
from aftercall.console.config import ConsoleConfig
from aftercall.core.config import AudioConfig, LoggingConfig, ServerConfig, TranscriptConfig, load_sections
from aftercall.crm.config import CrmConfig
from aftercall.ingest.config import IngestConfig
from aftercall.redact.config import RedactConfig
from aftercall.siprec.config import SiprecConfig
from aftercall.summarise.config import SummariseConfig, TritonConfig
from aftercall.transcribe.config import AsrConfig
from aftercall.vault.config import AccessConfig, RetentionConfig, VaultConfig


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


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load the TOML file (if any), apply environment overrides, validate everything."""
    return load_sections(Config, path, environ)
