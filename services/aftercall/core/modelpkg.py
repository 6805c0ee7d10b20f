"""Third-party model packages are repacks: pin their version in pyproject *and* their files' sha256 here."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from aftercall.core.errors import ModelIntegrityError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PinnedModel:
    name: str
    directory: Path
    sha256: dict[str, str]  # file name relative to directory -> hex digest

    def verify(self) -> Path:
        """Hash every pinned file; raise on a missing or altered one. Returns the directory."""
        for relative, expected in sorted(self.sha256.items()):
            path = self.directory / relative
            if not path.is_file():
                raise ModelIntegrityError(f"model {self.name}: {path} is missing")
            digest = sha256_file(path)
            if digest != expected:
                raise ModelIntegrityError(
                    f"model {self.name}: {path} has sha256 {digest}, expected {expected}; refusing to load it"
                )
        logger.debug("model %s verified (%d files)", self.name, len(self.sha256))
        return self.directory


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
