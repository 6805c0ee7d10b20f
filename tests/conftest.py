from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# Shared with the benchmarks; imported here so that the tests keep `from conftest import ...`.
from aftercall.core.audio import wav_header  # noqa: F401
from aftercall.evaluation.scratch import free_port, scratch_postgres  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
# The control node's Ansible (make test installs it apart from the appliance's dependencies).
ANSIBLE_BIN = ROOT / ".venv-ansible" / "bin"


@pytest.fixture(autouse=True, scope="session")
def private_key_files(tmp_path_factory):
    """Key files the appliance makes on first start go to a scratch config home, never the user's own (subprocess
    servers inherit it)."""
    previous = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("config-home"))
    yield
    if previous is None:
        os.environ.pop("XDG_CONFIG_HOME")
    else:
        os.environ["XDG_CONFIG_HOME"] = previous
SHARED_DATA = ROOT.parent / "shared" / "data"
DEMO_WAV = ROOT / "samples" / "demo_call.wav"
DEMO_JSON = ROOT / "samples" / "demo_call.json"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present (a fresh clone has no shared/)")
    return SHARED_DATA


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "aftercall", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="session")
def summariser():
    from aftercall.summarise.summariser import EmbeddedSummariser

    return EmbeddedSummariser()


@pytest.fixture(scope="session")
def transcriber():
    from aftercall.transcribe.embedded import EmbeddedTranscriber

    return EmbeddedTranscriber()


@pytest.fixture(autouse=True)
def whisper_only_in_e2e(request, monkeypatch):
    """The tiers' rule that can be checked: Whisper decodes only in tests marked e2e, so `make test-fast` stays
    fast. Only this process is watched; a console script's subprocess is the e2e marker's to declare."""
    decodes = []
    if request.node.get_closest_marker("e2e") is None:
        from faster_whisper import WhisperModel

        transcribe = WhisperModel.transcribe

        def counted(self, *args, **kwargs):
            decodes.append(1)
            return transcribe(self, *args, **kwargs)

        monkeypatch.setattr(WhisperModel, "transcribe", counted)
    yield
    assert not decodes, "this test runs the Whisper model: mark it pytest.mark.e2e"


@pytest.fixture
def fake_recogniser():
    from fake_recogniser import FakeRecogniser

    return FakeRecogniser()


@pytest.fixture
async def fake_asr(tmp_path, fake_recogniser):
    """`aftercall serve asr` in process with `fake_recogniser` in Whisper's place: `await fake_asr(**asr_server)`
    gives the appliance; point asr.riva_uri at 127.0.0.1:{port}. Stopped after the test."""
    import dataclasses

    from prometheus_client import CollectorRegistry

    from aftercall.app import start_appliance
    from aftercall.asr.config import AsrServerConfig
    from aftercall.config import Config

    started = []

    async def start(**settings):
        config = dataclasses.replace(Config(), asr_server=dataclasses.replace(AsrServerConfig(), **settings))
        appliance = await start_appliance(config, ("asr",), tmp_path / "asr", "127.0.0.1:0", "", CollectorRegistry(),
                                          asr_transcriber=fake_recogniser)
        started.append(appliance)
        return appliance

    yield start
    for appliance in started:
        await appliance.stop(1)


@pytest.fixture(scope="session")
def tts():
    """aftercall.evaluation.speech (two festival voices, sox) for synthesising test calls; skips where they are not
    installed (`make system-deps` installs them)."""
    from aftercall.core.errors import UserError
    from aftercall.evaluation import speech

    try:
        speech.require_tools()
    except UserError as exc:
        pytest.skip(str(exc))
    return speech


@pytest.fixture(scope="session")
def demo_clip() -> bytes:
    """The first 14 s of the demo call (stereo mu-law 8 kHz): greeting, reason, a card read out; ASR in ~2 s."""
    from aftercall.evaluation.bench_tools import demo_call

    return demo_call(14)


# -- a throwaway PKI for the TLS tests -------------------------------------------------------------------------------
def _key_and_cert(name: str, issuer_key=None, issuer_name=None, ca: bool = False, san: str | None = None):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name or subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san), x509.IPAddress(
            ipaddress.ip_address("127.0.0.1"))]), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return key, cert


def _write(path: Path, key, cert) -> tuple[str, str]:
    key_path, cert_path = path.with_suffix(".key"), path.with_suffix(".crt")
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(key_path), str(cert_path)


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate (CN supervisor.sam)."""
    root = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _key_and_cert("aftercall test CA", ca=True)
    _, ca_path = _write(root / "ca", ca_key, ca_cert)
    server_key, server_cert = _write(root / "server", *_key_and_cert("localhost", ca_key, ca_cert.subject,
                                                                     san="localhost"))
    client_key, client_cert = _write(root / "client", *_key_and_cert("supervisor.sam", ca_key, ca_cert.subject))
    return {"ca": ca_path, "server_key": server_key, "server_cert": server_cert, "client_key": client_key,
            "client_cert": client_cert}


@pytest.fixture(scope="session")
def postgres():
    with scratch_postgres() as server:
        yield server


@pytest.fixture
def postgres_database(postgres):
    """A fresh, empty database on the session's server: (URL, the cluster's data directory)."""
    import uuid

    import psycopg

    admin_url, data = postgres
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield admin_url.rsplit("/", 1)[0] + f"/{name}", data
