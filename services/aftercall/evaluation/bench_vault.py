"""The vault: summary writes and reads per second with envelope encryption against the same store with sealing
switched off (a ratio from one run), and key rotation time per 10,000 records; SQLite, and PostgreSQL on a scratch
cluster when the machine has PostgreSQL."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from aftercall.evaluation.bench_tools import DEMO_JSON, say
from aftercall.vault.envelope import Vault


class _ClearVault(Vault):
    """The baseline: the same store and SQL with sealing and HMAC indexes switched off."""

    def seal(self, plaintext: bytes, kind: str, record_id: str, schema: int = 1) -> bytes:
        return b"AV1" + (1).to_bytes(4, "big") + bytes(72) + plaintext

    def open(self, blob: bytes, kind: str, record_id: str, schema: int = 1) -> bytes:
        return blob[79:]

    def blind_index(self, field: str, value: str) -> str:
        return f"{field}:{value}"


def _measure(vault_class: type[Vault], records: int, scratch: Path, url: str = "") -> dict[str, Any]:
    from aftercall.core.database import open_store_database
    from aftercall.review.store import SummaryStore
    from aftercall.vault.keys import KeyRing
    from aftercall.vault.rotation import rewrap_rows

    if url:  # a fresh database for each measurement
        admin = open_store_database(url, scratch)
        name = f"bench_{vault_class.__name__.lower().strip('_')}"
        admin.execute(f"CREATE DATABASE {name}")
        admin.close()
        url = url.rsplit("/", 1)[0] + f"/{name}"
    scratch.mkdir(parents=True, exist_ok=True)
    db = open_store_database(url, scratch)
    vault = vault_class(KeyRing.create(scratch / "keys.json"))
    store = SummaryStore(db, vault)
    turns = json.loads(DEMO_JSON.read_text())["turns"]
    summaries = [{"call_id": f"bench-{index}", "disposition": {"code": "CARD_LOST_STOLEN"}, "transcript": turns,
                  "narrative": "The customer reported a stolen card."} for index in range(records)]
    started = time.perf_counter()
    for summary in summaries:
        store.create_draft(summary, {"agent_id": "agent-1", "customer_ref": "CUST-1"}, True, "aftercall")
    write_s = time.perf_counter() - started
    started = time.perf_counter()
    for index in range(records):
        store.get(f"bench-{index}")
    read_s = time.perf_counter() - started
    figures = {"records": records, "writes_per_s": round(records / write_s), "reads_per_s": round(records / read_s)}
    if vault_class is Vault:
        vault.keys.rotate()
        started = time.perf_counter()
        changed = rewrap_rows(vault, ((db, store.sealed_rows), (db, store.audit.sealed_rows)))
        figures["rotation_s_per_10k"] = round((time.perf_counter() - started) * 10_000 / changed, 2)
    db.close()
    return figures


def backend_figures(backend: str, records: int, scratch: Path, url: str = "") -> dict[str, Any]:
    """One backend (SQLite when `url` is empty): sealing off, then on, and their ratios."""
    say(f"vault: {backend}, {records} summaries with sealing off, then on")
    clear = _measure(_ClearVault, records, scratch / backend / "clear", url)
    sealed = _measure(Vault, records, scratch / backend / "sealed", url)
    figures = {"clear": clear, "sealed": sealed,
               "write_ratio": round(sealed["writes_per_s"] / clear["writes_per_s"], 2),
               "read_ratio": round(sealed["reads_per_s"] / clear["reads_per_s"], 2)}
    say(f"vault: {backend}: sealed / off: writes {figures['write_ratio']}, reads {figures['read_ratio']}")
    return figures


def vault_figures(records: int, scratch: Path, postgres: bool) -> dict[str, Any]:
    """SQLite always; PostgreSQL when asked for and installed, else the reason it was skipped."""
    from aftercall.evaluation.scratch import postgres_bindir, scratch_postgres

    figures: dict[str, Any] = {"sqlite": backend_figures("sqlite", records, scratch)}
    if not postgres:
        figures["postgresql"] = {"skipped": "--skip postgres"}
    elif postgres_bindir() is None:
        figures["postgresql"] = {"skipped": "PostgreSQL is not installed (no initdb/pg_ctl under /usr/lib/postgresql)"}
    else:
        with scratch_postgres() as (url, _):
            figures["postgresql"] = backend_figures("postgresql", records, scratch, url)
    return figures
