#!/usr/bin/env python3
"""Vault figures, SQLite and PostgreSQL: summary writes and reads per second with envelope encryption against the
same store with sealing switched off (ratio, one run), and key rotation time per 10,000 records. PostgreSQL runs on
a scratch cluster started for the run. Writes reports/bench-vault.md/json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from aftercall.core.database import open_store_database
from aftercall.review.store import SummaryStore
from aftercall.vault.envelope import Vault
from aftercall.vault.keys import KeyRing
from aftercall.vault.rotation import rewrap_rows

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import scratch_postgres  # noqa: E402


class _ClearVault(Vault):
    """The baseline: the same store and SQL with sealing and HMAC indexes switched off."""

    def seal(self, plaintext: bytes, kind: str, record_id: str, schema: int = 1) -> bytes:
        return b"AV1" + (1).to_bytes(4, "big") + bytes(72) + plaintext

    def open(self, blob: bytes, kind: str, record_id: str, schema: int = 1) -> bytes:
        return blob[79:]

    def blind_index(self, field: str, value: str) -> str:
        return f"{field}:{value}"


def _summary(index: int) -> dict:
    demo = json.loads((ROOT / "samples" / "demo_call.json").read_text())
    return {"call_id": f"bench-{index}", "disposition": {"code": "CARD_LOST_STOLEN"},
            "transcript": demo["turns"], "narrative": "The customer reported a stolen card."}


def measure(vault_class, records: int, scratch: Path, url: str = "") -> dict:
    if url:  # a fresh database for each measurement
        admin = open_store_database(url, scratch)
        name = f"bench_{vault_class.__name__.lower().strip('_')}"
        admin.execute(f"CREATE DATABASE {name}")
        admin.close()
        url = url.rsplit("/", 1)[0] + f"/{name}"
    scratch.mkdir(parents=True, exist_ok=True)
    db = open_store_database(url, scratch)
    store = SummaryStore(db, vault_class(KeyRing.create(scratch / "keys.json")))
    summaries = [_summary(i) for i in range(records)]
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
        store._vault.keys.rotate()
        started = time.perf_counter()
        changed = rewrap_rows(store._vault, ((db, store.sealed_rows), (db, store.audit.sealed_rows)))
        figures["rotation_s_per_10k"] = round((time.perf_counter() - started) * 10_000 / changed, 2)
    db.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=2000, help="summaries written and read (default 2000)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports")
    args = parser.parse_args()
    report = {}
    with tempfile.TemporaryDirectory() as scratch, scratch_postgres() as (url, _):
        for backend, address in (("sqlite", ""), ("postgresql", url)):
            clear = measure(_ClearVault, args.records, Path(scratch) / backend / "clear", address)
            sealed = measure(Vault, args.records, Path(scratch) / backend / "sealed", address)
            report[backend] = {"clear": clear, "sealed": sealed,
                               "write_ratio": round(sealed["writes_per_s"] / clear["writes_per_s"], 2),
                               "read_ratio": round(sealed["reads_per_s"] / clear["reads_per_s"], 2)}
            print(f"bench: vault {backend} {report[backend]}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-vault.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Vault ({args.records} summaries of the demo call, each with its version row and audit entry)", "",
             "| backend | store | writes/s | reads/s |", "|---|---|---|---|"]
    for backend, figures in report.items():
        clear = figures["clear"]
        lines += [f"| {backend} | sealing off | {clear['writes_per_s']} | {clear['reads_per_s']} |",
                  f"| {backend} | envelope encryption + blind indexes | {figures['sealed']['writes_per_s']} | "
                  f"{figures['sealed']['reads_per_s']} |"]
    lines.append("")
    for backend, figures in report.items():
        lines.append(f"- {backend}: ratio sealed / off: writes **{figures['write_ratio']}**, reads "
                     f"**{figures['read_ratio']}**; key rotation **{figures['sealed']['rotation_s_per_10k']} s per "
                     "10,000 records**.")
    lines.append("")
    (args.out / "bench-vault.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
