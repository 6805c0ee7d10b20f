"""`aftercall serve triton`: the real `tritonserver` binary from the `nvidia-pytriton` wheel on `model_repository/`,
for CPU sites and tests. (The appliance runs NVIDIA's Triton container; aftercall only connects to it.)

What the binary needs, measured on these machines: the python backend's stub for this Python beside the backend
library (a private copy, the wheel is left untouched), the running Python's LIBDIR on LD_LIBRARY_PATH (without it
the server hangs while loading models, silently), and this environment's bin first on PATH so the stub's Python
finds aftercall and its dependencies; the wheel's own libraries are on LD_LIBRARY_PATH for the stub's sake.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from aftercall.config import Config
from aftercall.core.config import parse_address
from aftercall.core.errors import BackendUnavailableError, ConfigError
from aftercall.core.rpc import check_listen_security, server_credentials

_SOURCE_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"


def model_repository(config: Config) -> Path:
    path = Path(config.triton.model_repository) if config.triton.model_repository else _SOURCE_REPOSITORY
    if not path.is_dir():
        raise ConfigError(f"config triton.model_repository: {path} is not a directory")
    return path


def _backend_directory(scratch: Path) -> Path:
    import pytriton

    shipped = Path(pytriton.__file__).parent / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = shipped / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise ConfigError(f"nvidia-pytriton has no python backend stub for Python {version}")
    backend = scratch / "backends" / "python"
    backend.mkdir(parents=True, exist_ok=True)
    for name, source in (("libtriton_python.so", None), ("triton_python_backend_utils.py", None),
                         ("triton_python_backend_stub", stub)):
        target = backend / name
        target.unlink(missing_ok=True)  # a stale link (the environment moved) or a stub another run executes
        if source is None:
            target.symlink_to(shipped / "backends" / "python" / name)
        else:
            shutil.copy2(source, target)
    return scratch / "backends"


ADMIN_HEADER = "aftercall-triton-admin"


@dataclass
class TritonProcess:
    process: subprocess.Popen
    grpc_address: str
    log: Path
    # gRPC metadata that loading and unloading models needs (explicit model control would otherwise let any client
    # load a model of its own, that is, run code in the server). The key is also in admin.key beside the log (0600);
    # over HTTP the header is `aftercall-triton-admin`.
    admin_headers: dict[str, str]

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class StartCancelled(Exception):
    """`cancel` was set while tritonserver was starting (SIGTERM during the readiness wait); it has been stopped."""


def _dying_with_parent(argv: list[str]) -> list[str]:
    """argv run so that tritonserver gets SIGTERM when the thread that started it ends, even by SIGKILL, and no
    orphaned tritonserver keeps the ports and the models' memory. start_triton is called from a thread that lives as
    long as the server should (the main thread).

    util-linux's setpriv sets the parent-death signal and execs; the shell then checks that the parent had not died
    before it was set (no signal would come) and execs tritonserver. Not a preexec_fn: that makes Python fork()
    rather than vfork(), which runs gRPC's fork handlers; they restart its poller in the child, closing the fds
    before exec then closes the poller's epoll fd, and the child aborts (1 start in 16, in a process using gRPC)."""
    setpriv = shutil.which("setpriv")
    if sys.platform != "linux" or setpriv is None:
        return argv
    return [setpriv, "--pdeathsig", "TERM", "--", "/bin/sh", "-c", 'test "$PPID" = "$0" && exec "$@"',
            str(os.getpid()), *argv]


def start_triton(config: Config, listen: str, scratch: Path, cancel: threading.Event | None = None) -> TritonProcess:
    """Start tritonserver with its gRPC port on `listen` and wait until it and every model are ready."""
    import pytriton

    check_listen_security(listen, config.server, "server.listen")
    host, port = parse_address(listen, "--listen")
    binary = Path(pytriton.__file__).parent / "tritonserver" / "bin" / "tritonserver"
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    backends = _backend_directory(scratch)
    repository = model_repository(config)
    argv = [str(binary), f"--model-repository={repository}", f"--backend-directory={backends}",
            "--pinned-memory-pool-byte-size=0", "--exit-timeout-secs=5", "--strict-readiness=true",
            # HTTP (the same inference API, but without TLS) and metrics stay on loopback: local tools and the
            # readiness probe use them; remote clients get the gRPC port, under TLS when [server] has it.
            f"--grpc-address={host}", f"--grpc-port={port}", "--http-address=127.0.0.1",
            f"--http-port={config.triton.http_port}", "--metrics-address=127.0.0.1",
            f"--metrics-port={config.triton.metrics_port}", "--model-control-mode=explicit"]
    admin_key = secrets.token_hex(24)
    argv += [f"--grpc-restricted-protocol=model-repository:{ADMIN_HEADER}={admin_key}",
             f"--http-restricted-api=model-repository:{ADMIN_HEADER}={admin_key}"]
    key_file = scratch / "admin.key"
    key_file.unlink(missing_ok=True)
    key_file.touch(mode=0o600)
    key_file.write_text(admin_key + "\n")
    for name in config.triton.load_models:
        if not (repository / name / "config.pbtxt").is_file():
            raise ConfigError(f"config triton.load_models: {repository} has no model {name!r} (no {name}/config.pbtxt)")
        argv.append(f"--load-model={name}")
    if config.triton.model_config_name:
        argv.append(f"--model-config-name={config.triton.model_config_name}")
    server = config.server
    if server.tls_cert_file:
        server_credentials(server)  # the same checks as every listener: readable files, key mode 0600
        argv += ["--grpc-use-ssl=true", f"--grpc-server-cert={server.tls_cert_file}",
                 f"--grpc-server-key={server.tls_key_file}"]
        if server.tls_client_ca_file:
            argv += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={server.tls_client_ca_file}"]
    environment = dict(os.environ)
    # The stub's own libraries are found through an RPATH relative to the wheel, which our copy of it is not in.
    wheel_libraries = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
    environment["LD_LIBRARY_PATH"] = os.pathsep.join(
        str(p) for p in (sysconfig.get_config_var("LIBDIR"), wheel_libraries, environment.get("LD_LIBRARY_PATH")) if p)
    environment["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), environment.get("PATH", "")))
    log = scratch / "tritonserver.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(_dying_with_parent(argv), stdout=handle, stderr=subprocess.STDOUT,
                                   env=environment)
    # Triton prefixes the configured key for gRPC.
    triton = TritonProcess(process, listen, log, {f"triton-grpc-protocol-{ADMIN_HEADER}": admin_key})
    try:
        wait_until_ready(config, triton, cancel or threading.Event())
    except BaseException:
        triton.stop(10)
        raise
    return triton


def wait_until_ready(config: Config, triton: TritonProcess, cancel: threading.Event) -> None:
    """Ready means the server and every model loaded; asked over loopback HTTP, whatever TLS the gRPC port has."""
    url = f"http://127.0.0.1:{config.triton.http_port}/v2/health/ready"
    deadline = time.monotonic() + max(config.triton.ready_timeout_s, 1.0)
    while time.monotonic() < deadline:
        if cancel.is_set():
            raise StartCancelled()
        if triton.process.poll() is not None:
            raise BackendUnavailableError(f"tritonserver exited with code {triton.process.returncode}:\n"
                                          f"{triton.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass  # not up yet; the deadline decides
        cancel.wait(0.25)
    raise BackendUnavailableError(f"tritonserver was not ready after {config.triton.ready_timeout_s:g} s "
                                  f"(triton.ready_timeout_s):\n{triton.log_tail()}")
