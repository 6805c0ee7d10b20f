"""The signed offline bundle for air-gapped sites: one tar with everything an install needs, a manifest of every
file's sha256 and size, and an Ed25519 signature of the manifest. `aftercall bundle verify` (and the provisioning,
before it touches anything) accepts a bundle only when the signature matches the site's public key and every file
matches the manifest, with nothing added, missing or placed outside the bundle.

Only the standard library and `cryptography` (which ansible-core itself needs): the playbook's `aftercall_bundle_verify`
module runs this same file on the control node, where aftercall is not installed."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path, PurePosixPath

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MANIFEST, SIGNATURE = "MANIFEST.json", "MANIFEST.sig"
_FORMAT = "aftercall-bundle/1"
_CHUNK = 1 << 20


class BundleError(ValueError):
    """A bundle or key that must not be trusted or cannot be read; the message names the first problem."""


def generate_keys(directory: Path) -> tuple[Path, Path]:
    """A signing key (PEM, 0600) for the release machine and its public key for the sites."""
    key = Ed25519PrivateKey.generate()
    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / "bundle-signing.key", directory / "bundle-signing.pub"
    with open(private, "xb", opener=lambda path, flags: os.open(path, flags, 0o600)) as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def build_bundle(out: Path, files: dict[str, Path], signing_key: Path, version: str) -> Path:
    """`files`: path inside the bundle -> file on disk."""
    key = serialization.load_pem_private_key(signing_key.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{signing_key}: not an Ed25519 private key")
    entries = []
    for name, path in sorted(files.items()):
        with open(path, "rb") as handle:
            entries.append({"path": name, "sha256": _sha256(handle), "size": path.stat().st_size})
    manifest = json.dumps({"format": _FORMAT, "version": version, "files": entries}, indent=1).encode()
    signature = base64.b64encode(key.sign(manifest))
    out.parent.mkdir(parents=True, exist_ok=True)
    # dereference: a file the repository links to (the playbook's copy of this module) goes in as a plain file.
    with tarfile.open(out, "w", dereference=True) as tar:
        for name, data in ((MANIFEST, manifest), (SIGNATURE, signature)):
            _add_bytes(tar, name, data)
        for name, path in sorted(files.items()):
            tar.add(path, arcname=name, recursive=False)
    return out


def verify_bundle(bundle: Path, public_key: Path) -> dict:
    """The manifest of a bundle that is whole and signed by `public_key`; BundleError naming the first problem."""
    key = serialization.load_pem_public_key(public_key.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"{public_key}: not an Ed25519 public key")
    try:
        tar = tarfile.open(bundle, "r")
    except (OSError, tarfile.TarError) as exc:
        raise BundleError(f"{bundle}: not a readable bundle ({exc})") from None
    with tar:
        members = {m.name: m for m in tar.getmembers()}
        if MANIFEST not in members or SIGNATURE not in members:
            raise BundleError(f"{bundle}: unsigned (no {MANIFEST} and {SIGNATURE})")
        manifest = tar.extractfile(members[MANIFEST]).read()
        try:
            key.verify(base64.b64decode(tar.extractfile(members[SIGNATURE]).read()), manifest)
        except (InvalidSignature, ValueError):
            raise BundleError(f"{bundle}: the manifest's signature does not match {public_key}") from None
        # Signed, so a release's own; still refused in one line when it is no manifest. (No aftercall imports here:
        # this file is also the Ansible module's module_utils, run where aftercall is not installed.)
        try:
            document = json.loads(manifest)
            listed = {entry["path"]: entry for entry in document["files"]}
        except (ValueError, RecursionError, KeyError, TypeError):
            raise BundleError(f"{bundle}: {MANIFEST} is not a manifest (JSON listing the files)") from None
        for name, member in members.items():
            if name in (MANIFEST, SIGNATURE):
                continue
            if name not in listed:
                raise BundleError(f"{bundle}: {name} is not in the signed manifest")
            path = PurePosixPath(name)
            if path.is_absolute() or ".." in path.parts or not member.isfile():
                raise BundleError(f"{bundle}: {name} is not a plain file inside the bundle")
            if member.size != listed[name]["size"] or _sha256(tar.extractfile(member)) != listed[name]["sha256"]:
                raise BundleError(f"{bundle}: {name} does not match its sha256 in the signed manifest")
        missing = sorted(set(listed) - set(members))
        if missing:
            raise BundleError(f"{bundle}: {missing[0]} is in the manifest but not in the bundle")
    return document


def _sha256(stream) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
