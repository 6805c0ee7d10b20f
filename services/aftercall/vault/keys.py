"""Key-encryption keys (KEKs) in a key file: versioned, exactly one active (new data keys are wrapped by it), older
ones kept readable until retired; and the blind-index key, which never rotates (the index values would change).

The file is JSON, mode 0600, owned by the user the appliance runs as; anything else is refused at start-up. It is
written atomically (a 0600 temporary file, fsync, rename), so a crash mid-rotation leaves the old file or the new one.
"""

from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import secrets
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from aftercall.core.documents import parse_json
from aftercall.core.errors import ConfigError, RecordUnreadableError
from aftercall.vault.config import VaultConfig
from aftercall.vault.hsm import Pkcs11Keys, token_keys

logger = logging.getLogger(__name__)

FORMAT = "aftercall-keys/1"
ACTIVE, PREVIOUS, RETIRED = "active", "previous", "retired"
KEY_BYTES = 32  # AES-256


@dataclass(frozen=True)
class Kek:
    id: int
    state: str
    created_at: float
    # None once retired (what it wrapped is gone for good: crypto-shredding), or when it lives in a PKCS#11 token.
    # Never in a repr or a traceback.
    key: bytes | None = field(repr=False)
    in_token: bool = False


class KeyRing:
    def __init__(self, path: Path, keks: tuple[Kek, ...], index_key: bytes, token: Pkcs11Keys | None = None):
        self.path = path
        self.keks = keks
        self.index_key = index_key
        self._token = token
        self._seen = _signature(path)

    def refresh(self) -> None:
        """Take up a change another process made to the file (`aftercall keys rotate` while serving): new data keys
        are then wrapped by the new active KEK, and records it re-wrapped can be opened."""
        if _signature(self.path) != self._seen:
            fresh = KeyRing.load(self.path, self._token)
            if fresh.index_key != self.index_key:
                raise ConfigError(f"vault.key_file: {self.path} was replaced by a different key file")
            self.keks, self._seen = fresh.keks, fresh._seen

    # -- the file ------------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, token: Pkcs11Keys | None = None) -> "KeyRing":
        if path.exists():  # checked first too, so a token key is not made for nothing
            raise ConfigError(f"vault.key_file: {path} already exists; `aftercall keys rotate` adds a key to it")
        ring = cls(path, (_new_kek(1, token),), secrets.token_bytes(KEY_BYTES), token)
        ring.save(exclusive=True)  # never over a key file another process made a moment ago
        return ring

    @classmethod
    def load(cls, path: Path, token: Pkcs11Keys | None = None) -> "KeyRing":
        try:
            info = path.stat()
        except FileNotFoundError:
            raise ConfigError(f"vault.key_file: {path} does not exist (create it with `aftercall keys init`)") from None
        except OSError as exc:
            raise ConfigError(f"vault.key_file: cannot read {path} ({exc.strerror})") from exc
        if info.st_uid != os.geteuid():
            raise ConfigError(f"vault.key_file: {path} belongs to uid {info.st_uid}, not to this user "
                              f"({os.geteuid()}): refusing to use it")
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise ConfigError(f"vault.key_file: {path} is readable by others (mode {stat.S_IMODE(info.st_mode):o}); "
                              "chmod 600 it")
        try:
            document = parse_json(path.read_bytes(), "JSON", ValueError)
            if not isinstance(document, dict) or document.get("format") != FORMAT:
                raise ValueError(f"format is not {FORMAT}")
            keks = tuple(Kek(int(k["id"]), k["state"], float(k["created_at"]),
                             _decode(k["key"]) if k.get("key") else None, bool(k.get("token")))
                         for k in document["keks"])
            ring = cls(path, keks, _decode(document["index_key"]), token)
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"vault.key_file: {path} is not a valid key file ({exc})") from None
        ring._check()
        if token is None and any(k.in_token and k.state != RETIRED for k in keks):
            raise ConfigError(f"vault.pkcs11_module: the keys of {path} are in a PKCS#11 token; configure it")
        return ring

    def save(self, exclusive: bool = False) -> None:
        self._check()
        document = {"format": FORMAT, "index_key": _encode(self.index_key),
                    "keks": [{"id": k.id, "state": k.state, "created_at": k.created_at,
                              "key": _encode(k.key) if k.key else None, "token": k.in_token} for k in self.keks]}
        temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:  # a read-only /etc under systemd: the provisioning makes the file, not the service
            raise ConfigError(f"vault.key_file: cannot write {self.path} ({exc.strerror})") from None
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(document, handle, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            if exclusive:
                try:
                    os.link(temporary, self.path)  # fails if the name exists: creation is all or nothing
                except FileExistsError:
                    raise ConfigError(f"vault.key_file: {self.path} already exists; `aftercall keys rotate` adds a "
                                      "key to it") from None
                finally:
                    temporary.unlink(missing_ok=True)
            else:
                os.replace(temporary, self.path)
            self._seen = _signature(self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _check(self) -> None:
        active = [k for k in self.keks if k.state == ACTIVE]
        if len(active) != 1 or (active[0].key is None and not active[0].in_token):
            raise ConfigError(f"vault.key_file: {self.path} must have exactly one active key")
        if len({k.id for k in self.keks}) != len(self.keks) or len(self.index_key) != KEY_BYTES:
            raise ConfigError(f"vault.key_file: {self.path} is corrupt (duplicate key ids or a bad index key)")
        if any(k.key is not None and len(k.key) != KEY_BYTES for k in self.keks):
            raise ConfigError(f"vault.key_file: {self.path} holds a key that is not {KEY_BYTES} bytes")

    # -- keys ----------------------------------------------------------------------------------------------------
    @property
    def active(self) -> Kek:
        return next(k for k in self.keks if k.state == ACTIVE)

    def wrap(self, kek: Kek, nonce: bytes, data_key: bytes, aad: bytes) -> bytes:
        if kek.in_token:
            return self._token.wrap(kek.id, nonce, data_key, aad)
        return AESGCM(kek.key).encrypt(nonce, data_key, aad)

    def unwrap(self, kek_id: int, nonce: bytes, wrapped: bytes, aad: bytes) -> bytes:
        kek = self._kek(kek_id)
        if kek.in_token:
            return self._token.unwrap(kek_id, nonce, wrapped, aad)
        try:
            return AESGCM(kek.key).decrypt(nonce, wrapped, aad)
        except InvalidTag:
            raise RecordUnreadableError(f"key {kek_id} in {self.path} does not open this data key (a different key "
                                        "file with the same key id?)") from None

    def _kek(self, kek_id: int) -> Kek:
        if all(kek.id != kek_id for kek in self.keks):
            self.refresh()
        for kek in self.keks:
            if kek.id == kek_id:
                if kek.state == RETIRED:
                    raise RecordUnreadableError(f"key {kek_id} was retired: what it protected is gone for good")
                return kek
        raise RecordUnreadableError(f"key {kek_id} is not in {self.path} (a different key file?)")

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Read-modify-write of the file under an exclusive lock, starting from what is on disk now: two rotations
        at once must not both make key N+1 with different material."""
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.keks = KeyRing.load(self.path, self._token).keks
            yield
            self.save()

    def rotate(self) -> Kek:
        """A new active KEK; the old one stays readable (`previous`) until the data is re-wrapped and it is
        retired."""
        with self._changing():
            fresh = _new_kek(max(k.id for k in self.keks) + 1, self._token)
            self.keks = tuple(replace(k, state=PREVIOUS) if k.state == ACTIVE else k for k in self.keks) + (fresh,)
        return fresh

    def retire(self, kek_id: int) -> None:
        """Erase a KEK's material. The caller checks first that nothing is still wrapped by it."""
        with self._changing():
            kek = next((k for k in self.keks if k.id == kek_id), None)
            if kek is None:
                raise ConfigError(f"key {kek_id}: not in {self.path}")
            if kek.state == ACTIVE:
                raise ConfigError(f"key {kek_id} is the active key: rotate first, then retire it")
            if kek.in_token and kek.state != RETIRED:
                self._token.destroy(kek_id)
            self.keks = tuple(replace(k, state=RETIRED, key=None) if k.id == kek_id else k for k in self.keks)


def open_key_ring(config: VaultConfig, create_missing: bool) -> KeyRing:
    """The configured key file (and token); with `create_missing` (what `aftercall serve` does on a first start)
    a new one."""
    path, token = key_file_path(config.key_file), token_keys(config)
    if create_missing and not path.exists():
        ring = KeyRing.create(path, token)
        logger.warning("created a new key file %s: back it up apart from the data; without it nothing stored can "
                       "be read", path)
        return ring
    return KeyRing.load(path, token)


def _new_kek(kek_id: int, token: Pkcs11Keys | None) -> Kek:
    if token is None:
        return Kek(kek_id, ACTIVE, time.time(), secrets.token_bytes(KEY_BYTES))
    token.generate(kek_id)
    return Kek(kek_id, ACTIVE, time.time(), None, in_token=True)


def key_file_path(configured: str) -> Path:
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "aftercall" / "keys.json"


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


def _encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _decode(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)
