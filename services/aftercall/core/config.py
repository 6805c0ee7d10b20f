"""How the config file is read: one TOML file plus `AFTERCALL_<SECTION>__<KEY>` environment overrides, each key
typed by its section's dataclass and checked at start-up. Each service owns its section (`aftercall/<service>/
config.py`), aftercall.config gathers them; the core holds only the sections every service shares (server, logging,
audio, transcript).

Every error names the offending key, e.g. `config asr.beam_size: must be between 1 and 10, got 0`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, TypeVar

from aftercall.core.documents import parse_toml
from aftercall.core.errors import ConfigError

ENV_PREFIX = "AFTERCALL_"
GatheredConfig = TypeVar("GatheredConfig")


def setting(default: Any, *, between: tuple[float, float] | None = None, one_of: tuple[str, ...] | None = None):
    """A key with the values it may take, checked as the file is read (and listed in docs/config.md)."""
    limits: dict[str, Any] = {}
    if between is not None:
        limits["between"] = between
    if one_of is not None:
        limits["one_of"] = one_of
    return field(default=default, metadata=limits)


class Section:
    """Base of a config section (a frozen dataclass, one TOML table)."""

    # Keys of earlier releases -> what replaced them, so an old site config fails with the new name.
    RENAMED: ClassVar[dict[str, str]] = {}

    def validate(self) -> None:
        """Checks that span the section's keys, run once every section is read; the key's type and range are
        checked before."""


@dataclass(frozen=True)
class LoggingConfig(Section):
    """How much is logged, and as text or JSON lines."""

    # The least severe level logged; transcripts and summaries are logged only at DEBUG, and only redacted.
    level: str = setting("WARNING", one_of=("DEBUG", "INFO", "WARNING", "ERROR"))
    # "text": a line per record, for people; "json": one JSON object per line, with the call id, for a log
    # collector.
    format: str = setting("text", one_of=("text", "json"))


@dataclass(frozen=True)
class ServerConfig(Section):
    """The appliance's gRPC and metrics listeners, their TLS, the data directory and the summary store."""

    # The gRPC services' address, HOST:PORT or [V6]:PORT (port 0: any free one); `aftercall serve --listen` wins.
    listen: str = "127.0.0.1:50051"
    # The Prometheus /metrics endpoint (under TLS with the tls_* files); `aftercall serve --metrics-listen` wins.
    metrics_listen: str = "127.0.0.1:9464"
    # Empty: $XDG_DATA_HOME/aftercall (~/.local/share/aftercall); the appliance uses /var/lib/aftercall.
    data_dir: str = ""
    # Summaries and the audit trail in PostgreSQL (several appliances sharing one store), e.g.
    # "postgresql://aftercall@db.site/aftercall?sslmode=verify-full"; empty: SQLite in data_dir. Passwords belong
    # in ~/.pgpass or PGPASSFILE, not here.
    database_url: str = ""
    # The server's certificate chain (PEM); with tls_key_file, TLS on every listener.
    # Certificates are read from files (systemd credentials on the appliance), never written in this file.
    tls_cert_file: str = ""
    # The certificate's private key (PEM), in a file only this user may read (mode 0600).
    tls_key_file: str = ""
    # Set: mutual TLS; a client must present a certificate signed by this CA.
    tls_client_ca_file: str = ""
    # Plaintext is refused on any address but loopback unless this is set.
    allow_plaintext_remote: bool = False
    # Below systemd's TimeoutStopSec: calls in flight get this long to finish before they are left to the restart.
    shutdown_grace_s: float = setting(20.0, between=(0.0, 600.0))

    def validate(self) -> None:
        for key in ("listen", "metrics_listen"):
            parse_address(getattr(self, key), f"config server.{key}")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("config server.tls_cert_file: needs server.tls_key_file too (and the reverse)")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ConfigError("config server.tls_client_ca_file: mutual TLS needs server.tls_cert_file and "
                              "tls_key_file")


@dataclass(frozen=True)
class AudioConfig(Section):
    """What a call's audio may be: its channels' roles and its longest duration."""

    # Who speaks on a stereo recording's first and second channel when the call names nobody; `--roles` wins.
    roles: tuple[str, ...] = ("agent", "customer")
    # The longest call, in seconds of audio: a longer recording is refused, and so is a stream's chunk that would
    # pass it.
    max_duration_s: int = setting(4 * 3600, between=(1, 86400))

    def validate(self) -> None:
        _validate_roles(self.roles, "config audio.roles")


@dataclass(frozen=True)
class TranscriptConfig(Section):
    """Limits on a transcript given as input (`aftercall summarise`, `aftercall eval` cases, the Triton summariser
    models), checked before any model runs: redaction and summarisation take time with the length of each turn and
    more than that with the number of turns, so a hostile file would otherwise hold the CPU for hours."""

    # The transcript JSON as read; 1 MB holds a four-hour call (audio.max_duration_s) with room to spare.
    max_mb: int = setting(1, between=(1, 1024))
    # Turns in one transcript; a four-hour call has about 3000.
    max_turns: int = setting(5000, between=(1, 1000000))
    # Characters in one turn's text: about 25 minutes of speech without a pause.
    max_turn_chars: int = setting(20_000, between=(100, 10000000))


def _coerce(key: str, value: Any, default: Any, limits: Mapping[str, Any]) -> Any:
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
        return {name: _coerce(f"{key}.{name}", item, {} if isinstance(item, dict) else (), {})
                for name, item in value.items()}
    elif isinstance(default, tuple):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"config {key}: must be a list of strings, got {value!r}")
        value = tuple(value)
    elif not isinstance(value, str):
        raise ConfigError(f"config {key}: must be a string, got {value!r}")
    if "one_of" in limits and value not in limits["one_of"]:
        raise ConfigError(f"config {key}: must be one of {', '.join(limits['one_of'])}, got {value!r}")
    if "between" in limits and not limits["between"][0] <= value <= limits["between"][1]:
        low, high = limits["between"]
        raise ConfigError(f"config {key}: must be between {low} and {high}, got {value}")
    return value


def _build_section(name: str, cls: type, values: Mapping[str, Any]) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key in cls.RENAMED:
            raise ConfigError(f"config {name}.{key}: renamed to {cls.RENAMED[key]}")
        if key not in known:
            raise ConfigError(f"config {name}.{key}: unknown key (known: {', '.join(known)})")
    defaults = cls()
    kwargs = {key: _coerce(f"{name}.{key}", value, getattr(defaults, key), known[key].metadata)
              for key, value in values.items()}
    return cls(**kwargs)


def load_sections(gathered: type[GatheredConfig], path: Path | None = None,
                  environ: Mapping[str, str] | None = None) -> GatheredConfig:
    """Read the TOML file (if any) into `gathered`, a dataclass of sections, apply the environment overrides, and
    validate every section."""
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
    sections = {f.name: f.default_factory for f in dataclasses.fields(gathered)}
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
    built = {name: _build_section(name, cls, document.get(name, {})) for name, cls in sections.items()}
    for section in built.values():
        section.validate()
    return gathered(**built)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_client_tls(section: Any, name: str, prefix: str) -> None:
    """A backend's client TLS keys (asr `riva_tls_`, triton `tls_`): certificate and key together, and only with
    TLS on."""
    if bool(getattr(section, prefix + "cert_file")) != bool(getattr(section, prefix + "key_file")):
        raise ConfigError(f"config {name}.{prefix}cert_file: mutual TLS needs {name}.{prefix}key_file too "
                          "(and the reverse)")
    if getattr(section, prefix + "cert_file") and not uses_tls(section, prefix):
        raise ConfigError(f"config {name}.{prefix}cert_file: a client certificate needs TLS: set "
                          f"{name}.{prefix}ca_file or {name}.{prefix.rstrip('_')} = true")


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
        raise ConfigError(f"{where}: must name agent and customer once each, e.g. agent,customer; got "
                          f"{','.join(roles)}")


def parse_roles(text: str) -> tuple[str, ...]:
    roles = tuple(part.strip().lower() for part in text.split(","))
    _validate_roles(roles, "--roles")
    return roles
