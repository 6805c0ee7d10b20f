"""Throwaway local servers for the benchmarks and the tests: a free loopback port, a scratch PostgreSQL cluster."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator


def free_port() -> int:
    """A free TCP port on loopback (for servers that cannot bind port 0 and report it, like tritonserver)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def postgres_bindir() -> Path | None:
    """Debian's PostgreSQL binaries (initdb, pg_ctl), the newest installed version; None when there are none."""
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return binaries[-1].parent if binaries else None


@contextlib.contextmanager
def scratch_postgres() -> Iterator[tuple[str, Path]]:
    """A real PostgreSQL server (Debian's `postgresql`, installed by `make test`) on a scratch cluster and a free
    loopback port. Yields (admin URL, data directory)."""
    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (make test installs Debian's postgresql)")
    # Not under pytest's private tmp: the server runs as `postgres` when the caller is root (initdb refuses root).
    root = Path(tempfile.mkdtemp(prefix="aftercall-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        import pwd

        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port, data = free_port(), root / "data"
    try:
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "--auth=trust", "-U", "aftercall",
                        "--no-sync"], check=True, capture_output=True)
        started = subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"),
                                  "-w", "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"],
                                 capture_output=True, text=True)
        if started.returncode:
            raise RuntimeError(f"PostgreSQL did not start: {started.stderr}{(root / 'server.log').read_text()}")
        yield f"postgresql://aftercall@127.0.0.1:{port}/postgres", data
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
