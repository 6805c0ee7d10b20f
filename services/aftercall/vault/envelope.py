"""Envelope encryption: every record gets a fresh AES-256-GCM data key (random 96-bit nonce), and the data key is
wrapped (AES-256-GCM too) by the key ring's active KEK. Associated data binds a sealed record to its kind, its id and
its schema version, so a ciphertext moved to another row, or read as another kind, does not open.

A sealed record is one blob: b"AV1" | KEK id (4 bytes) | wrap nonce (12) | wrapped data key (32 + 16 tag) |
nonce (12) | ciphertext + 16-byte tag. Re-wrapping for a key rotation rewrites only the wrapped data key; the
ciphertext stays as it is.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from aftercall.core.errors import RecordUnreadableError
from aftercall.vault.keys import KEY_BYTES, KeyRing

MAGIC = b"AV1"
_NONCE = 12
_TAG = 16
_HEADER = struct.Struct(">3sI12s48s12s")  # magic, KEK id, wrap nonce, wrapped data key, nonce
HEADER_BYTES = _HEADER.size  # what a re-wrap changes; the rest of a sealed record stays as it is


class Vault:
    def __init__(self, keys: KeyRing):
        self.keys = keys

    def seal(self, plaintext: bytes, kind: str, record_id: str, schema: int = 1) -> bytes:
        aad = _associated(kind, record_id, schema)
        data_key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
        nonce, wrap_nonce = secrets.token_bytes(_NONCE), secrets.token_bytes(_NONCE)
        self.keys.refresh()  # a stat: a rotation done by `aftercall keys rotate` is used at once
        kek = self.keys.active
        wrapped = self.keys.wrap(kek, wrap_nonce, data_key, b"data-key|" + aad)
        return _HEADER.pack(MAGIC, kek.id, wrap_nonce, wrapped, nonce) + AESGCM(data_key).encrypt(nonce, plaintext,
                                                                                               aad)

    def open(self, blob: bytes, kind: str, record_id: str, schema: int = 1) -> bytes:
        aad = _associated(kind, record_id, schema)
        kek_id, wrap_nonce, wrapped, nonce, ciphertext = _parse(blob, kind, record_id)
        data_key = self._unwrap(kek_id, wrap_nonce, wrapped, aad, kind, record_id)
        try:
            return AESGCM(data_key).decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise RecordUnreadableError(f"{kind} {record_id!r}: the ciphertext was altered or belongs to another "
                                        "record") from None

    def rewrap(self, blob: bytes, kind: str, record_id: str, schema: int = 1) -> bytes:
        """The same record with its data key wrapped by the active KEK (the ciphertext is not touched)."""
        aad = _associated(kind, record_id, schema)
        kek_id, wrap_nonce, wrapped, nonce, ciphertext = _parse(blob, kind, record_id)
        kek = self.keys.active
        if kek_id == kek.id:
            return blob
        data_key = self._unwrap(kek_id, wrap_nonce, wrapped, aad, kind, record_id)
        fresh_nonce = secrets.token_bytes(_NONCE)
        rewrapped = self.keys.wrap(kek, fresh_nonce, data_key, b"data-key|" + aad)
        return _HEADER.pack(MAGIC, kek.id, fresh_nonce, rewrapped, nonce) + ciphertext

    def blind_index(self, field: str, value: str) -> str:
        """A keyed HMAC of a value people search by: equal values match, and nothing about the value shows."""
        return hmac.new(self.keys.index_key, f"{field}\0{value}".encode("utf-8"), hashlib.sha256).hexdigest()

    def _unwrap(self, kek_id: int, wrap_nonce: bytes, wrapped: bytes, aad: bytes, kind: str, record_id: str) -> bytes:
        try:
            return self.keys.unwrap(kek_id, wrap_nonce, wrapped, b"data-key|" + aad)
        except RecordUnreadableError as exc:
            raise RecordUnreadableError(f"{kind} {record_id!r}: {exc}") from None


def kek_of(blob: bytes) -> int:
    """The id of the KEK a sealed record's data key is wrapped by."""
    return _HEADER.unpack_from(blob)[1]


def _associated(kind: str, record_id: str, schema: int) -> bytes:
    return f"aftercall|{kind}|{record_id}|v{schema}".encode("utf-8")


def _parse(blob: bytes, kind: str, record_id: str) -> tuple[int, bytes, bytes, bytes, bytes]:
    if len(blob) < _HEADER.size + _TAG or blob[:3] != MAGIC:
        raise RecordUnreadableError(f"{kind} {record_id!r}: not a sealed record (truncated or corrupt)")
    _, kek_id, wrap_nonce, wrapped, nonce = _HEADER.unpack_from(blob)
    return kek_id, wrap_nonce, wrapped, nonce, blob[_HEADER.size:]
