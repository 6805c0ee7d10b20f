#!/usr/bin/env python3
"""Write a tiny `docker save`-format image that stands in for NVIDIA's Triton and Riva images in CI.

The real images are GPU-only and not redistributable, so the CI test of the container units loads
this one instead (`podman load -i`). Its single layer holds a static busybox and a document tree in
which GET /v2/health/ready (Triton's readiness endpoint) answers 200. The default command serves it
on port 8000; `tritonserver [--http-port=N] ...` in the image does the same on port N, so a unit
written for the real image runs unchanged.

Usage: standin_image.py OUT.tar [--tag aftercall-standin:ci] [--busybox PATH]
Prints the archive's sha256. The archive is reproducible: same busybox, same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

DEFAULT_TAG = "aftercall-standin:ci"
PORT = 8000
# Serve in the background and wait, so that SIGTERM from `podman stop` ends it at once: as PID 1
# busybox httpd has no TERM handler and the kernel would ignore the signal (10 s stop timeout).
SERVE = """#!/bin/sh
# Stand-in for Triton/Riva: serves /www (GET /v2/health/ready -> 200) on port ${1:-8000}.
busybox httpd -f -p "${1:-8000}" -h /www &
pid=$!
trap 'kill "$pid"; exit 0' TERM INT
wait "$pid"
"""
TRITONSERVER = """#!/bin/sh
# Stand-in for `tritonserver`: takes its --http-port, ignores everything else.
port=8000
for arg; do
  case $arg in --http-port=*) port=${arg#--http-port=} ;; esac
done
exec /bin/standin-serve "$port"
"""
APPLETS = ("sh", "httpd", "wget", "cat", "ls", "sleep", "echo", "env", "kill", "ps")
HEALTH_ENDPOINTS = ("v2/health/ready", "v2/health/live")
# Fixed mtime: the same inputs give the same layer digest, so it can go into a trusted record.
MTIME = 0


def busybox_from_deb() -> bytes:
    """Fetch busybox-static with apt and return its /bin/busybox."""
    with tempfile.TemporaryDirectory() as tmp:
        # As root, apt would download as _apt, who cannot write into a private temp dir.
        sandbox = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
        subprocess.run(
            ["apt-get", "download", "-q", *sandbox, "busybox-static"],
            cwd=tmp,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        (deb,) = Path(tmp).glob("busybox-static_*.deb")
        root = Path(tmp, "root")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        return (root / "bin/busybox").read_bytes()


def _entry(name: str, kind: bytes, mode: int, **extra: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    for key, value in extra.items():
        setattr(info, key, value)
    return info


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def build_layer(busybox: bytes) -> bytes:
    """The image's filesystem: busybox with a few applet links, the serve scripts, /www, /tmp."""
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []

    def directory(name: str, mode: int = 0o755) -> None:
        members.append((_entry(name, tarfile.DIRTYPE, mode), None))

    def file(name: str, data: bytes, mode: int = 0o644) -> None:
        members.append((_entry(name, tarfile.REGTYPE, mode), data))

    directory("bin")
    file("bin/busybox", busybox, 0o755)
    for applet in APPLETS:
        members.append((_entry(f"bin/{applet}", tarfile.SYMTYPE, 0o777, linkname="busybox"), None))
    file("bin/standin-serve", SERVE.encode(), 0o755)
    file("bin/tritonserver", TRITONSERVER.encode(), 0o755)
    directory("tmp", 0o1777)
    directory("www")
    for endpoint in HEALTH_ENDPOINTS:
        parts = endpoint.split("/")
        for depth in range(1, len(parts)):
            name = "www/" + "/".join(parts[:depth])
            if all(info.name != name for info, _ in members):
                directory(name)
        file(f"www/{endpoint}", b"")
    return _tar(members)


def build_archive(busybox: bytes, tag: str) -> bytes:
    """A docker-archive (the `docker save` layout) with one layer, as `podman load` reads it."""
    layer = build_layer(busybox)
    layer_id = hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/bin"],
            "Cmd": ["/bin/standin-serve", str(PORT)],
            "ExposedPorts": {f"{PORT}/tcp": {}},
            "WorkingDir": "/",
            "Labels": {"org.opencontainers.image.title": "aftercall CI stand-in for Triton/Riva"},
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests/ansible/standin_image.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_name = f"{hashlib.sha256(config_bytes).hexdigest()}.json"
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": [f"{layer_id}/layer.tar"]}]
    return _tar(
        [
            (_entry(f"{layer_id}/", tarfile.DIRTYPE, 0o755), None),
            (_entry(f"{layer_id}/layer.tar", tarfile.REGTYPE, 0o644), layer),
            (_entry(config_name, tarfile.REGTYPE, 0o644), config_bytes),
            (_entry("manifest.json", tarfile.REGTYPE, 0o644), json.dumps(manifest).encode()),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="archive to write (docker-archive .tar)")
    parser.add_argument("--tag", default=DEFAULT_TAG, help=f"image name:tag (default {DEFAULT_TAG})")
    parser.add_argument("--busybox", type=Path, help="static busybox to use (default: from busybox-static .deb)")
    args = parser.parse_args(argv)

    busybox = args.busybox.read_bytes() if args.busybox else busybox_from_deb()
    archive = build_archive(busybox, args.tag)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(archive)
    print(hashlib.sha256(archive).hexdigest())
    return 0


if __name__ == "__main__":
    sys.exit(main())
