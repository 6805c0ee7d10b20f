"""The signed offline bundle: `aftercall bundle keygen/verify` and what verify refuses."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import tarfile

import pytest

from aftercall.bundle import build_bundle
from conftest import ANSIBLE_BIN, ROOT, run_cli


@pytest.fixture
def release(tmp_path):
    """A signing key pair (through the CLI) and a small bundle signed with it."""
    made = run_cli("bundle", "keygen", "--out", tmp_path / "keys")
    assert made.returncode == 0, made.stderr
    assert oct((tmp_path / "keys" / "bundle-signing.key").stat().st_mode & 0o777) == "0o600"
    (tmp_path / "content").mkdir()
    files = {}
    for name, text in (("wheels/aftercall-0.1.0-py3-none-any.whl", "wheel"), ("deploy/aftercall.service", "unit"),
                       ("model_repository/call_summariser/config.pbtxt", "config")):
        path = tmp_path / "content" / name.replace("/", "_")
        path.write_text(text)
        files[name] = path
    bundle = build_bundle(tmp_path / "dist" / "aftercall-bundle-0.1.0.tar", files,
                          tmp_path / "keys" / "bundle-signing.key", "0.1.0")
    return bundle, tmp_path / "keys" / "bundle-signing.pub"


def _rewrite(bundle, change) -> None:
    """Re-tar the bundle with `change(name, data) -> data | None` applied to each member (None drops it)."""
    with tarfile.open(bundle) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(bundle, "w") as tar:
        for member, data in members:
            data = change(member.name, data)
            if data is not None:
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))


def test_a_whole_signed_bundle_verifies(release):
    bundle, public = release
    result = run_cli("bundle", "verify", bundle, "--public-key", public)
    assert result.returncode == 0 and "whole and signed: version 0.1.0, 3 files" in result.stderr


@pytest.mark.parametrize("change, problem", [
    (lambda name, data: b"evil" if name == "deploy/aftercall.service" else data,
     "deploy/aftercall.service does not match its sha256"),
    (lambda name, data: None if name == "MANIFEST.sig" else data, "unsigned"),
    (lambda name, data: None if name.startswith("wheels/") else data, "is in the manifest but not in the bundle"),
    (lambda name, data: data.replace(b"0.1.0", b"0.9.9") if name == "MANIFEST.json" else data,
     "signature does not match"),
])
def test_a_tampered_bundle_is_refused(release, change, problem):
    bundle, public = release
    _rewrite(bundle, change)
    result = run_cli("bundle", "verify", bundle, "--public-key", public)
    assert result.returncode == 2 and problem in result.stderr, result.stderr


@pytest.mark.parametrize("manifest", [b"[" * 100_000 + b"]" * 100_000, b'{"files": ' + b"9" * 5000 + b"}",
                                      b'{"files": [1]}'])
def test_a_signed_manifest_that_is_no_manifest_is_one_line(release, tmp_path, manifest):
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    bundle, public = release  # signed with the release's own key: only a broken release can get this far
    key = load_pem_private_key((tmp_path / "keys" / "bundle-signing.key").read_bytes(), None)
    signed = {"MANIFEST.json": manifest, "MANIFEST.sig": base64.b64encode(key.sign(manifest))}
    _rewrite(bundle, lambda name, data: signed.get(name, data))
    result = run_cli("bundle", "verify", bundle, "--public-key", public)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"aftercall: error: {bundle}: MANIFEST.json is not a manifest (JSON listing the files)"], result.stderr


def test_a_file_added_or_another_key_is_refused(release, tmp_path):
    bundle, public = release
    run_cli("bundle", "keygen", "--out", tmp_path / "other")
    stranger = run_cli("bundle", "verify", bundle, "--public-key", tmp_path / "other" / "bundle-signing.pub")
    assert stranger.returncode == 2 and "signature does not match" in stranger.stderr
    with tarfile.open(bundle, "a") as tar:
        extra = tarfile.TarInfo("../../etc/cron.d/evil")
        extra.size = 4
        tar.addfile(extra, io.BytesIO(b"evil"))
    added = run_cli("bundle", "verify", bundle, "--public-key", public)
    assert added.returncode == 2 and "../../etc/cron.d/evil is not in the signed manifest" in added.stderr
    again = run_cli("bundle", "keygen", "--out", tmp_path / "other")
    assert again.returncode == 2 and "never overwritten" in again.stderr


def _ansible_verify(bundle, public) -> subprocess.CompletedProcess:
    """The playbook's check: the aftercall_bundle_verify module, run by ansible on the control node."""
    return subprocess.run([str(ANSIBLE_BIN / "ansible"), "localhost", "-m", "aftercall_bundle_verify",
                           "-a", f"bundle={bundle} public_key={public}"],
                          capture_output=True, text=True, cwd=ROOT / "ansible", timeout=120,
                          env={**os.environ, "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_NOCOLOR": "1"})


@pytest.mark.e2e
def test_the_playbook_accepts_a_whole_signed_bundle(release):
    checked = _ansible_verify(*release)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert '"version": "0.1.0"' in checked.stdout and '"changed": false' in checked.stdout


@pytest.mark.e2e
def test_the_playbook_refuses_a_tampered_bundle(release, tmp_path):
    bundle, public = release
    _rewrite(bundle, lambda name, data: b"other" if name.startswith("deploy/") else data)
    checked = _ansible_verify(bundle, public)
    assert checked.returncode != 0
    assert "refusing the bundle" in checked.stdout and "deploy/aftercall.service does not match" in checked.stdout
