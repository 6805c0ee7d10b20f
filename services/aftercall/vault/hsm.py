"""KEKs in a PKCS#11 token (an HSM; SoftHSM2 in the tests): AES-256 keys made inside the token, sensitive and not
extractable, labelled `aftercall-kek-<id>`. Data keys are wrapped and unwrapped by the token (CKM_AES_GCM, the same
nonce, associated data and 16-byte tag as with a file KEK), so a KEK never leaves it. The key file then lists the
KEKs' ids and states only, and still holds the blind-index key."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

from aftercall.core.errors import ConfigError, RecordUnreadableError
from aftercall.vault.config import VaultConfig


def _label(kek_id: int) -> str:
    return f"aftercall-kek-{kek_id}"


class Pkcs11Keys:
    def __init__(self, module: str, token_label: str, pin_file: str):
        import pkcs11

        pin_path = Path(pin_file)
        try:
            if stat.S_IMODE(pin_path.stat().st_mode) & 0o077:
                raise ConfigError(f"vault.pkcs11_pin_file: {pin_path} is readable by others; chmod 600 it")
            pin = pin_path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"vault.pkcs11_pin_file: cannot read {pin_path} ({exc.strerror})") from None
        try:
            token = pkcs11.lib(module).get_token(token_label=token_label)
            try:
                self._session = token.open(rw=True, user_pin=pin)
            except pkcs11.UserAlreadyLoggedIn:  # PKCS#11 logins are per process: another session of ours did it
                self._session = token.open(rw=True)
        except (pkcs11.PKCS11Error, RuntimeError) as exc:
            raise ConfigError(f"vault.pkcs11_module: cannot open token {token_label!r} with {module} "
                              f"({type(exc).__name__}: {exc})") from None
        self._lock = threading.Lock()  # one session, used by one thread at a time

    def generate(self, kek_id: int) -> None:
        from pkcs11 import Attribute, KeyType

        with self._lock:
            self._session.generate_key(KeyType.AES, 256, label=_label(kek_id), store=True,
                                       template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False})

    def destroy(self, kek_id: int) -> None:
        with self._lock:
            self._key(kek_id).destroy()

    def wrap(self, kek_id: int, nonce: bytes, data_key: bytes, aad: bytes) -> bytes:
        from pkcs11 import Mechanism
        from pkcs11.mechanisms import GCMParams

        with self._lock:
            return self._key(kek_id).encrypt(data_key, mechanism=Mechanism.AES_GCM,
                                             mechanism_param=GCMParams(nonce, aad, 128))

    def unwrap(self, kek_id: int, nonce: bytes, wrapped: bytes, aad: bytes) -> bytes:
        import pkcs11
        from pkcs11 import Mechanism
        from pkcs11.mechanisms import GCMParams

        with self._lock:
            try:
                return self._key(kek_id).decrypt(wrapped, mechanism=Mechanism.AES_GCM,
                                                 mechanism_param=GCMParams(nonce, aad, 128))
            except pkcs11.PKCS11Error:
                raise RecordUnreadableError(f"key {kek_id} in the token does not open this data key") from None

    def _key(self, kek_id: int):
        import pkcs11
        from pkcs11 import KeyType

        try:
            return self._session.get_key(label=_label(kek_id), key_type=KeyType.AES)
        except pkcs11.NoSuchKey:
            raise RecordUnreadableError(f"key {kek_id} is not in the token (retired, or another token)") from None


def token_keys(config: VaultConfig) -> Pkcs11Keys | None:
    if not config.pkcs11_module:
        return None
    if not (config.pkcs11_token and config.pkcs11_pin_file):
        raise ConfigError("vault.pkcs11_token: a PKCS#11 module needs the token label and vault.pkcs11_pin_file")
    return Pkcs11Keys(config.pkcs11_module, config.pkcs11_token, config.pkcs11_pin_file)
