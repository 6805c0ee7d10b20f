"""The house's rules on imports (docs/architecture.md, "The packages' rooms"), checked on the source so that a new
import in the wrong direction fails here rather than in a newcomer's head."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

from aftercall.config import Config
from aftercall.core.config import Section

PACKAGE = Path(__file__).resolve().parent.parent / "services" / "aftercall"
SERVICES = ("asr", "confirm", "console", "crm", "ingest", "redact", "review", "siprec", "summarise", "transcribe",
            "vault")
# The assembly: what wires services together, which no service may reach back into.
ASSEMBLY = ("app", "stores", "cli", "config", "metrics")


def _imported_rooms(room: str) -> dict[str, set[str]]:
    """For each module under aftercall/<room>/: the top-level parts of aftercall it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((PACKAGE / room).rglob("*.py")):
        rooms = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            rooms.update(name.split(".")[1] for name in names if name.startswith("aftercall."))
        found[str(path.relative_to(PACKAGE))] = rooms
    return found


def test_the_core_imports_no_service():
    wrong = {module: rooms - {"core"} for module, rooms in _imported_rooms("core").items() if rooms - {"core"}}
    assert not wrong, f"core must hold mechanisms only, importing nothing outside core: {wrong}"


def test_no_service_imports_the_assembly():
    wrong = {}
    for service in SERVICES:
        for module, rooms in _imported_rooms(service).items():
            if rooms & set(ASSEMBLY):
                wrong[module] = rooms & set(ASSEMBLY)
    assert not wrong, f"a service is handed what it needs by the assembly (app.py), never imports it: {wrong}"


def test_each_config_section_lives_with_its_service_or_in_the_core():
    for section in dataclasses.fields(Config):
        cls = section.default_factory
        assert issubclass(cls, Section), section.name
        room = cls.__module__.split(".")[1]
        assert cls.__module__ == f"aftercall.{room}.config" and (room == "core" or room in SERVICES), (
            f"[{section.name}] is {cls.__module__}.{cls.__name__}: a section belongs in aftercall/<service>/config.py")
