"""The vault's envelope encryption and its key file."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from aftercall.core.errors import ConfigError, RecordUnreadableError
from aftercall.vault.envelope import Vault, kek_of
from aftercall.vault.keys import KeyRing
from aftercall.vault.rotation import count_by_kek, rewrap_rows


@pytest.fixture
def vault(tmp_path) -> Vault:
    return Vault(KeyRing.create(tmp_path / "keys.json"))


def test_a_record_opens_only_as_itself(vault):
    sealed = vault.seal(b"the redacted transcript", "transcript", "call-1")
    assert b"redacted" not in sealed
    assert vault.open(sealed, "transcript", "call-1") == b"the redacted transcript"
    assert vault.seal(b"the redacted transcript", "transcript", "call-1") != sealed  # fresh data key and nonce
    for kind, record, schema in (("summary", "call-1", 1), ("transcript", "call-2", 1), ("transcript", "call-1", 2)):
        with pytest.raises(RecordUnreadableError, match="altered or belongs to another record|does not open"):
            vault.open(sealed, kind, record, schema)


@pytest.mark.parametrize("damage", ["ciphertext", "wrapped key", "truncated", "empty"])
def test_a_damaged_record_is_an_error_not_garbage(vault, damage):
    sealed = bytearray(vault.seal(b"x" * 100, "summary", "call-1"))
    if damage == "ciphertext":
        sealed[-20] ^= 1
    elif damage == "wrapped key":
        sealed[25] ^= 1
    sealed = bytes(sealed[:30]) if damage == "truncated" else b"" if damage == "empty" else bytes(sealed)
    with pytest.raises(RecordUnreadableError, match="call-1"):
        vault.open(sealed, "summary", "call-1")


def test_rotation_rewraps_and_retiring_shreds(vault):
    old = vault.seal(b"kept", "summary", "a")
    doomed = vault.seal(b"shredded", "summary", "b")
    fresh_kek = vault.keys.rotate()
    assert vault.open(old, "summary", "a") == b"kept"  # the previous key stays readable
    moved = vault.rewrap(old, "summary", "a")
    assert kek_of(moved) == fresh_kek.id and moved[-20:] == old[-20:]  # only the wrapped key changed
    assert kek_of(vault.seal(b"new", "summary", "c")) == fresh_kek.id
    vault.keys.retire(1)
    reloaded = Vault(KeyRing.load(vault.keys.path))
    assert reloaded.open(moved, "summary", "a") == b"kept"
    with pytest.raises(RecordUnreadableError, match="key 1 was retired"):
        reloaded.open(doomed, "summary", "b")
    with pytest.raises(ConfigError, match="active key: rotate first"):
        reloaded.keys.retire(fresh_kek.id)


def test_another_key_file_cannot_open_a_record(vault, tmp_path):
    sealed = vault.seal(b"secret", "summary", "a")
    stranger = Vault(KeyRing.create(tmp_path / "other.json"))
    with pytest.raises(RecordUnreadableError, match="does not open this data key"):
        stranger.open(sealed, "summary", "a")
    assert stranger.blind_index("agent_id", "A7") != vault.blind_index("agent_id", "A7")
    assert vault.blind_index("agent_id", "A7") == vault.blind_index("agent_id", "A7")
    assert vault.blind_index("agent_id", "A7") != vault.blind_index("tenant", "A7")


def test_the_key_file_is_private_and_checked(tmp_path):
    path = tmp_path / "keys" / "keys.json"
    ring = KeyRing.create(path)
    assert ring.active.key.hex() not in repr(ring.keks)  # never in a repr, a log or a traceback
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(ConfigError, match="already exists"):
        KeyRing.create(path)
    os.chmod(path, 0o640)
    with pytest.raises(ConfigError, match=r"vault.key_file: .* readable by others \(mode 640\)"):
        KeyRing.load(path)
    os.chmod(path, 0o600)
    if os.geteuid() == 0:
        os.chown(path, 12345, -1)
        with pytest.raises(ConfigError, match="belongs to uid 12345"):
            KeyRing.load(path)
        os.chown(path, 0, -1)
    document = json.loads(path.read_text())
    document["keks"][0]["state"] = "previous"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match="exactly one active key"):
        KeyRing.load(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not a valid key file"):
        KeyRing.load(path)
    with pytest.raises(ConfigError, match="aftercall keys init"):
        KeyRing.load(tmp_path / "missing.json")


def _summary(call_id: str, code: str = "CARD_LOST_STOLEN", narrative: str = "Mrs Okafor lost her card.") -> dict:
    return {"call_id": call_id, "disposition": {"code": code}, "narrative": narrative}


def _bytes_on_disk(directory) -> bytes:
    """Every stored byte; not PostgreSQL's own bookkeeping (postmaster.pid holds its start time, whose digits may be
    any the test looks for)."""
    return b"".join(path.read_bytes() for path in directory.rglob("*")
                    if path.is_file() and not path.name.startswith("postmaster."))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.service)])
def store_db(request, tmp_path):
    """The same store tests on both backends: (connection, where its bytes lie on disk)."""
    from aftercall.core.database import open_store_database

    if request.param == "sqlite":
        db = open_store_database("", tmp_path / "data")
        yield db, tmp_path / "data"
    else:
        url, cluster = request.getfixturevalue("postgres_database")
        db = open_store_database(url, tmp_path / "data")
        yield db, cluster
    db.close()


@pytest.fixture
def store(store_db, vault):
    from aftercall.review.store import SummaryStore

    return SummaryStore(store_db[0], vault)


def test_a_search_by_an_entity_the_summary_names_runs_on_blind_indexes(store, store_db, vault):
    from aftercall.review.store import SummaryFilter, SummaryStore

    entities = [{"type": "reference", "value": "REF-4471-B"}, {"type": "amount", "value": "£212.40"}]
    store.create_draft({**_summary("call-1"), "entities": entities}, {}, True, "ai")
    store.create_draft({**_summary("call-2"), "entities": [{"type": "reference", "value": "REF-9000"}]}, {}, True,
                       "ai")

    def found(entity: str) -> list[str]:
        return [s.call_id for s in store.list(SummaryFilter(entity=entity))[0]]

    assert found("ref 4471 b") == ["call-1"] and found("£212.40") == ["call-1"] and found("REF-9000") == ["call-2"]
    assert found("4471") == [], "a whole value, not a part of one"
    store.edit("call-2", 1, {**_summary("call-2"), "entities": [{"type": "reference", "value": "REF-9001"}]}, "ann")
    assert found("REF-9000") == [] and found("ref-9001") == ["call-2"]
    assert b"4471" not in _bytes_on_disk(store_db[1]), "only keyed hashes of the values are stored"
    # A store from before the entity index gets one at its next start.
    db = store_db[0]
    db.execute("DROP TABLE summary_entities")
    assert [s.call_id for s in SummaryStore(db, vault).list(SummaryFilter(entity="REF-4471-B"))[0]] == ["call-1"]
    store.erase("call-1", "admin", "test")
    assert found("REF-4471-B") == []


def test_stored_summaries_are_sealed_and_searchable(store, store_db):
    from aftercall.review.store import SummaryFilter

    metadata = {"agent_id": "agent-4711", "tenant": "northgate", "queue": "cards", "customer_ref": "CUST-99812"}
    store.create_draft(_summary("PBX-call-8812"), metadata, True, "aftercall")
    store.create_draft(_summary("PBX-call-8813", "BILLING_DISPUTE", "A bill query."), {"agent_id": "agent-7"}, True,
                       "aftercall")
    store.edit("PBX-call-8812", 1, _summary("PBX-call-8812", narrative="Mrs Okafor reported her card stolen."),
               "supervisor-jane")
    store.approve("PBX-call-8812", 2, "supervisor-jane")
    found = store.get("PBX-call-8812", include_history=True)
    assert (found.agent_id, found.tenant, found.queue, found.approved_by) == ("agent-4711", "northgate", "cards",
                                                                          "supervisor-jane")
    assert [v.author for v in found.history] == ["aftercall", "supervisor-jane"]
    for where, expected in ((SummaryFilter(agent_id="agent-4711"), ["PBX-call-8812"]),
                            (SummaryFilter(disposition_code="BILLING_DISPUTE"), ["PBX-call-8813"]),
                            (SummaryFilter(customer_ref="CUST-99812"), ["PBX-call-8812"]),
                            (SummaryFilter(tenant="northgate", state="approved"), ["PBX-call-8812"]),
                            (SummaryFilter(agent_id="agent-47"), [])):
        assert [s.call_id for s in store.list(where)[0]] == expected, where
    if not isinstance(store_db[0], sqlite3.Connection):
        store_db[0].execute("CHECKPOINT")  # PostgreSQL: the rows into its data files, not only its WAL
    on_disk = _bytes_on_disk(store_db[1])
    for secret in (b"Okafor", b"PBX-call-8812", b"agent-4711", b"northgate", b"CUST-99812", b"supervisor-jane",
                   b"BILLING_DISPUTE"):
        assert secret not in on_disk, secret


def test_the_edit_distance_measures_how_much_people_rewrote_the_draft():
    from aftercall.review.store import edit_distance

    draft = {**_summary("c"), "transcript": ["long"] * 50, "issue": "The customer's card was stolen."}
    assert edit_distance(draft, {**draft, "transcript": []}) == 0.0  # the transcript is not a written field
    light = edit_distance(draft, {**draft, "issue": "The customer's debit card was stolen."})
    heavy = edit_distance(draft, {**draft, "issue": "Wrong person called.", "narrative": "Nothing happened."})
    assert 0 < light < heavy <= 1


def test_rotation_rewraps_stored_summaries_online(store):
    for index in range(7):
        store.create_draft(_summary(f"call-{index}"), {}, True, "aftercall")
    store.edit("call-0", 1, _summary("call-0", narrative="Edited."), "agent-1")
    sources = (store.sealed_rows, store.audit.sealed_rows)
    assert count_by_kek(sources) == {1: 7 + 8 + 8}  # summaries, versions, audit entries
    store._vault.keys.rotate()
    assert rewrap_rows(store._vault, [(store._db, source) for source in sources], batch=4) == 23
    assert count_by_kek(sources) == {2: 23}
    store._vault.keys.retire(1)
    assert store.get("call-0", include_history=True).history[1].summary["narrative"] == "Edited."
    assert store.audit.verify().problem is None  # re-wrapping did not break the audit chain


def test_summaries_stored_in_the_clear_before_the_vault_are_sealed_on_start(tmp_path, vault):
    from aftercall.core.database import open_database
    from aftercall.review.store import SummaryStore

    db = open_database(tmp_path / "data")
    db.executescript("""
        CREATE TABLE summaries (call_id TEXT PRIMARY KEY, state TEXT, version INTEGER, agent_id TEXT, queue TEXT,
            tenant TEXT, disposition_code TEXT, complete INTEGER, summary_json TEXT, approved_by TEXT DEFAULT '',
            created_at REAL, updated_at REAL);
        CREATE TABLE summary_versions (call_id TEXT, version INTEGER, author TEXT, summary_json TEXT,
            created_at REAL, PRIMARY KEY (call_id, version));""")
    text = json.dumps(_summary("old-call-1", narrative="Mr Lindqvist moved house."))
    db.execute("INSERT INTO summaries VALUES ('old-call-1', 'draft', 1, 'agent-9', 'q', 't', 'CARD_LOST_STOLEN', 1, "
               "?, '', 1.0, 1.0)", (text,))
    db.execute("INSERT INTO summary_versions VALUES ('old-call-1', 1, 'aftercall', ?, 1.0)", (text,))
    store = SummaryStore(db, vault)
    found = store.get("old-call-1", include_history=True)
    assert found.summary["narrative"] == "Mr Lindqvist moved house." and found.agent_id == "agent-9"
    assert len(found.history) == 1
    db.close()
    assert b"Lindqvist" not in _bytes_on_disk(tmp_path / "data")


def test_a_store_opened_with_another_key_file_cannot_read(store, tmp_path):
    from aftercall.review.store import SummaryStore

    store.create_draft(_summary("call-1"), {}, True, "aftercall")
    other = SummaryStore(store._db, Vault(KeyRing.create(tmp_path / "other.json")))
    with pytest.raises(Exception, match="no summary for call 'call-1'"):  # its blind index differs too
        other.get("call-1")


def test_keys_commands_rotate_online_while_a_server_holds_the_old_ring(tmp_path):
    from aftercall.core.database import open_database
    from aftercall.review.store import SummaryStore
    from conftest import run_cli

    config = tmp_path / "aftercall.toml"
    config.write_text(f'[vault]\nkey_file = "{tmp_path / "keys.json"}"\n[server]\ndata_dir = "{tmp_path / "data"}"\n')
    created = run_cli("keys", "init", "--config", config)
    assert created.returncode == 0 and "created" in created.stderr
    assert run_cli("keys", "init", "--config", config).returncode == 2  # never overwrites
    db = open_database(tmp_path / "data")
    serving = SummaryStore(db, Vault(KeyRing.load(tmp_path / "keys.json")))  # as a running server holds it
    for index in range(3):
        serving.create_draft(_summary(f"call-{index}"), {}, True, "aftercall")
    listed = run_cli("keys", "list", "--config", config)
    # Each call: its summary, its first version and the audit entry of its creation.
    assert listed.returncode == 0 and "1\tactive\t" in listed.stdout and "9 record(s)" in listed.stdout
    refused = run_cli("keys", "retire", "1", "--config", config)
    assert refused.returncode == 2 and "key 1 still protects 9 record(s)" in refused.stderr
    rotated = run_cli("keys", "rotate", "--config", config)
    assert rotated.returncode == 0 and "9 record(s) re-wrapped with key 2" in rotated.stderr, rotated.stderr
    serving.create_draft(_summary("call-new"), {}, True, "aftercall")  # the server takes up the new key at once
    assert count_by_kek((serving.sealed_rows, serving.audit.sealed_rows)) == {2: 4 + 4 + 5}  # + the rotation
    assert serving.get("call-0").summary["narrative"] == "Mrs Okafor lost her card."
    retired = run_cli("keys", "retire", "1", "--config", config)
    assert retired.returncode == 0 and "1\tretired\t" in retired.stdout, retired.stderr
    assert serving.get("call-new").call_id == "call-new"
    db.close()


@pytest.fixture
def spooled(tmp_path, vault, demo_clip):
    """A spool on the test vault, the demo call's format and its WAV."""
    from aftercall.core.audio import read_wav
    from aftercall.ingest.spool import AudioFormat, Spool

    wav = read_wav(demo_clip)
    return Spool(tmp_path / "spool", vault), AudioFormat(wav.encoding, wav.sample_rate, wav.channels), wav


def test_spooled_audio_is_sealed_as_it_arrives(tmp_path, spooled, demo_clip):
    spool, fmt, wav = spooled
    live = spool.open_stream("call-7", fmt)
    for offset in range(0, len(wav.payload), 1600):  # 100 ms chunks, as a PBX sends them
        live.write_interleaved(wav.payload[offset : offset + 1600])
    middle = live.channel_samples(1, 40_000, 48_000)  # a live reader's range, across several records
    live.finish()
    whole = spool.load("call-7", fmt)
    assert (middle == whole.channels[1][40_000:48_000]).all()
    assert whole.duration == pytest.approx(14.0) and spool.received_seconds("call-7", fmt) == pytest.approx(14.0)
    channel_file = tmp_path / "spool" / "call-7" / "ch0.sealed"
    sealed = channel_file.read_bytes()
    assert wav.payload[0:4000:2] not in sealed and wav.payload[8000:8400:2] not in sealed
    spool.write_recording("rec-1", demo_clip)
    assert demo_clip[1000:1400] not in (tmp_path / "spool" / "rec-1" / "recording.sealed").read_bytes()
    assert spool.load("rec-1", None).duration == pytest.approx(14.0)

    channel_file.write_bytes(sealed[:-7])  # a crash in the middle of the last write: that record is dropped
    assert len(spool._channel_audio("call-7", 0)) == 14 * 8000 - 800 and spool.load("call-7", fmt).duration == 14
    tampered = bytearray(sealed)
    tampered[len(tampered) // 2] ^= 1
    channel_file.write_bytes(bytes(tampered))
    with pytest.raises(RecordUnreadableError, match="call-7/ch0: record .* was altered"):
        spool.load("call-7", fmt)
    (tmp_path / "spool" / "old").mkdir()  # spooled by a release before the vault
    (tmp_path / "spool" / "old" / "ch0.raw").write_bytes(wav.payload[0::2])
    (tmp_path / "spool" / "old" / "ch1.raw").write_bytes(wav.payload[1::2])
    assert spool.load("old", fmt).duration == pytest.approx(14.0)


@pytest.fixture
def audit(store_db, vault):
    from aftercall.vault.audit import AuditLog

    db = store_db[0]
    log = AuditLog(db, vault)
    for index, (actor, action) in enumerate((("agent-1", "read"), ("agent-1", "edit"), ("sup-2", "approve"),
                                             ("auditor-3", "read"), ("admin-4", "keys.rotate"))):
        log.record(actor, action, f"call-{index}" if action != "keys.rotate" else "", reason="test")
    return log, db


def test_the_audit_trail_reads_back_and_verifies(audit, store_db):
    log, _ = audit
    verdict = log.verify()
    assert verdict.problem is None and verdict.entries == 5 and len(verdict.head) == 64
    assert [(e["actor"], e["action"], e["target"]) for e in log.entries("call-2")] == [("sup-2", "approve", "call-2")]
    if not isinstance(audit[1], sqlite3.Connection):
        audit[1].execute("CHECKPOINT")
    on_disk = _bytes_on_disk(store_db[1])
    assert b"call-2" not in on_disk and b"sup-2" not in on_disk  # sealed; only their blind indexes are clear


@pytest.mark.parametrize("tamper, found", [
    ("UPDATE audit_log SET at = at + 60 WHERE seq = 3", "entry 3: its MAC does not match"),
    ("DELETE FROM audit_log WHERE seq = 2", "entry 2 is missing (removed)"),
    # Entries 2 and 3 swapped whole (their MACs with them): the chain breaks where the first one moved in.
    ("UPDATE audit_log SET seq = -2 WHERE seq = 2; UPDATE audit_log SET seq = 2 WHERE seq = 3; "
     "UPDATE audit_log SET seq = 3 WHERE seq = -2", "entry 2: its detail does not open here, so it was modified or "
                                                    "moved"),
])
def test_a_changed_removed_or_reordered_entry_is_found(audit, tamper, found):
    log, db = audit
    db.executescript(tamper)
    assert found in log.verify().problem


def test_audit_commands_verify_the_trail_of_stored_summaries(tmp_path):
    from aftercall.core.database import open_database
    from aftercall.review.store import SummaryStore
    from conftest import run_cli

    config = tmp_path / "aftercall.toml"
    config.write_text(f'[vault]\nkey_file = "{tmp_path / "keys.json"}"\n[server]\ndata_dir = "{tmp_path / "data"}"\n')
    db = open_database(tmp_path / "data")
    store = SummaryStore(db, Vault(KeyRing.create(tmp_path / "keys.json")))
    store.create_draft(_summary("call-1"), {}, True, "aftercall")
    store.edit("call-1", 1, _summary("call-1", narrative="Edited."), "agent-9")
    store.approve("call-1", 2, "sup-3")
    verified = run_cli("audit", "verify", "--config", config)
    assert verified.returncode == 0 and "3 entries, chain intact" in verified.stderr, verified.stderr
    head = verified.stdout.strip()
    listed = run_cli("audit", "list", "--call-id", "call-1", "--config", config)
    assert [(e["actor"], e["action"]) for e in map(json.loads, listed.stdout.splitlines())] == [
        ("aftercall", "create"), ("agent-9", "edit"), ("sup-3", "approve")]
    db.execute("DELETE FROM audit_log WHERE seq = 3")  # the last entry: the chain alone cannot tell
    assert run_cli("audit", "verify", "--config", config).returncode == 0
    cut = run_cli("audit", "verify", "--expect-head", head, "--config", config)
    assert cut.returncode == 1 and "cut off the end" in cut.stderr
    db.execute("UPDATE audit_log SET action = 'read' WHERE seq = 1")
    broken = run_cli("audit", "verify", "--config", config)
    assert broken.returncode == 1 and "entry 1: its MAC does not match" in broken.stderr
    db.close()


def test_erasure_crypto_shreds_a_customers_calls(tmp_path):
    from aftercall.core.database import open_database
    from aftercall.review.store import SummaryStore
    from conftest import run_cli

    config = tmp_path / "aftercall.toml"
    config.write_text(f'[vault]\nkey_file = "{tmp_path / "keys.json"}"\n[server]\ndata_dir = "{tmp_path / "data"}"\n')
    db = open_database(tmp_path / "data")
    store = SummaryStore(db, Vault(KeyRing.create(tmp_path / "keys.json")))
    for call_id, customer in (("c-1", "CUST-1"), ("c-2", "CUST-1"), ("c-3", "CUST-2")):
        store.create_draft(_summary(call_id), {"customer_ref": customer}, True, "aftercall")
    sealed = [bytes(r["record"]) for r in db.execute("SELECT record FROM sealed_summaries")]
    erased = run_cli("erase", "--customer-ref", "CUST-1", "--reason", "GDPR art. 17", "--config", config)
    assert erased.returncode == 0 and "erased 2 call(s)" in erased.stderr, erased.stderr
    assert not store.exists("c-1") and not store.exists("c-2") and store.exists("c-3")
    on_disk = _bytes_on_disk(tmp_path / "data")
    assert sum(blob[:120] in on_disk for blob in sealed) == 1  # only c-3's wrapped data key is left anywhere
    assert [e["reason"] for e in store.audit.entries("c-1") if e["action"] == "erase"] == ["GDPR art. 17"]
    again = run_cli("erase", "--call-id", "c-1", "--config", config)
    assert again.returncode == 2 and "nothing stored matches" in again.stderr
    everyone = run_cli("erase", "--customer-ref", "", "--config", config)
    assert everyone.returncode == 2 and "would match every call" in everyone.stderr and store.exists("c-3")
    db.close()


def test_spooled_audio_follows_a_key_rotation(spooled, vault, demo_clip):
    spool, fmt, wav = spooled
    stream = spool.open_stream("waiting", fmt)
    stream.write_interleaved(wav.payload)
    stream.finish()
    spool.write_recording("uploaded", demo_clip)
    before = spool.load("waiting", fmt)
    vault.keys.rotate()
    assert spool.rewrap() == 3 and spool.rewrap() == 0  # two channel keys and a recording; then nothing left
    vault.keys.retire(1)
    after = spool.load("waiting", fmt)
    assert all((x == y).all() for x, y in zip(before.channels, after.channels))
    assert spool.load("uploaded", None).duration == pytest.approx(14.0)


def test_access_roles_are_checked_when_the_config_is_read(tmp_path):
    from aftercall.config import load_config
    from aftercall.vault.access import AccessPolicy

    config = tmp_path / "aftercall.toml"
    config.write_text('[access]\nagent = ["a-1", "a-2"]\nsupervisor = ["s-1"]\nteams = ["s-1: a-1 a-2"]\n')
    policy = AccessPolicy(load_config(config).access)
    assert policy.enforced and policy.role("s-1") == "supervisor"
    assert policy.summaries_scope("s-1", "reading").agents == {"s-1", "a-1", "a-2"}
    assert not AccessPolicy(load_config(None).access).enforced
    for text, problem in (('agent = ["x"]\nauditor = ["x"]\n', "'x' already has the role agent"),
                          ('agent = ["x"]\nteams = ["x: y"]\n', "access.teams: 'x: y' must be")):
        config.write_text("[access]\n" + text)
        with pytest.raises(ConfigError, match=problem):
            AccessPolicy(load_config(config).access)


def test_retention_shreds_what_expired_except_what_is_on_hold(tmp_path, store, spooled):
    from aftercall.vault.config import RetentionConfig
    from aftercall.ingest.calls import FAILED, CallJob, CallStore
    from aftercall.vault.retention import run_retention

    day, now = 86400.0, 1_900_000_000.0
    transcript = [{"speaker": "customer", "text": "My card was stolen."}]
    for call_id, age, customer in (("old", 400, ""), ("held-old", 400, "CUST-HOLD"), ("middle", 40, ""),
                                   ("new", 1, "")):
        store.create_draft({**_summary(call_id), "transcript": transcript}, {"customer_ref": customer}, True, "ai",
                           created_at=now - age * day)
    spool, fmt, wav = spooled
    from aftercall.core.database import open_database

    local = open_database(tmp_path / "local")  # jobs stay in the appliance's own SQLite whatever the store is
    calls = CallStore(local, store._vault, clock=lambda: now - 60 * day)
    calls.create(CallJob("failed-long-ago", FAILED, "stream", fmt, ("agent", "customer"), {}))
    stream = spool.open_stream("failed-long-ago", fmt)
    stream.write_interleaved(wav.payload[:1600])
    stream.finish()
    policy = RetentionConfig(summary_days=365, transcript_days=30, audio_days=30,
                             hold_customer_refs=("CUST-HOLD",))
    dry = run_retention(policy, store, calls, spool, "ops", now=now, dry_run=True)
    assert (dry.summaries_erased, dry.transcripts_dropped, dry.audio_removed) == (1, 1, 1) and store.exists("old")
    report = run_retention(policy, store, calls, spool, "ops", now=now)
    assert (report.summaries_erased, report.transcripts_dropped, report.audio_removed) == (1, 1, 1)
    assert report.held == {"held-old"}
    assert not store.exists("old") and store.get("held-old").summary["transcript"] == transcript
    assert "transcript" not in store.get("middle", include_history=True).history[0].summary
    assert store.get("new").summary["transcript"] == transcript
    assert calls.get("failed-long-ago") is None and not (tmp_path / "spool" / "failed-long-ago").exists()
    actions = [e["action"] for e in store.audit.entries()]
    assert actions.count("erase") == 1 and "retention.transcript" in actions and "retention.audio" in actions
    assert run_retention(policy, store, calls, spool, "ops", now=now).transcripts_dropped == 0  # idempotent


@pytest.mark.service
async def test_a_missing_key_file_is_not_replaced_while_sealed_data_exists(tmp_path):
    from prometheus_client import CollectorRegistry

    from aftercall.app import start_appliance
    from aftercall.config import Config
    from aftercall.vault.config import VaultConfig

    config = Config(vault=VaultConfig(key_file=str(tmp_path / "keys.json")))
    appliance = await start_appliance(config, ("summaries",), tmp_path / "data", "127.0.0.1:0", "",
                                      CollectorRegistry())
    await appliance.stop(1)
    from aftercall.core.database import open_database
    from aftercall.review.store import SummaryStore

    db = open_database(tmp_path / "data")
    SummaryStore(db, Vault(KeyRing.load(tmp_path / "keys.json"))).create_draft(_summary("c-1"), {}, True, "ai")
    db.close()
    (tmp_path / "keys.json").rename(tmp_path / "elsewhere.json")  # a wrong path, a lost file
    with pytest.raises(ConfigError, match="holds records sealed with a key file: restore that one"):
        await start_appliance(config, ("summaries",), tmp_path / "data", "127.0.0.1:0", "", CollectorRegistry())
    assert not (tmp_path / "keys.json").exists()


def test_two_rotations_at_once_make_two_keys_not_one_twice(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "keys.json"
    KeyRing.create(path)
    with ThreadPoolExecutor(2) as pool:
        made = list(pool.map(lambda _: KeyRing.load(path).rotate(), range(2)))
    on_disk = KeyRing.load(path)
    assert sorted(k.id for k in made) == [2, 3]
    assert all(on_disk._kek(k.id).key == k.key for k in made)  # neither rotation's key was lost


@pytest.mark.service
async def test_appliances_share_summaries_through_postgresql(tmp_path, postgres_database):
    """Two appliances (two data directories, one key file) on one PostgreSQL store: a summary one stored, the
    other serves."""
    from prometheus_client import CollectorRegistry

    from aftercall.app import start_appliance
    from aftercall.config import Config
    from aftercall.core.config import ServerConfig
    from aftercall.vault.config import VaultConfig
    from aftercall.core.database import open_store_database
    from aftercall.review.store import SummaryStore
    from aftercall.v1 import summaries_pb2 as spb
    from aftercall.v1 import summaries_pb2_grpc as spb_grpc

    url, _ = postgres_database
    config = Config(server=ServerConfig(database_url=url), vault=VaultConfig(key_file=str(tmp_path / "keys.json")))
    first = await start_appliance(config, ("summaries",), tmp_path / "a", "127.0.0.1:0", "", CollectorRegistry())
    await first.stop(1)
    db = open_store_database(url, tmp_path / "a")
    SummaryStore(db, Vault(KeyRing.load(tmp_path / "keys.json"))).create_draft(_summary("shared-1"), {}, True, "ai")
    db.close()
    second = await start_appliance(config, ("summaries",), tmp_path / "b", "127.0.0.1:0", "", CollectorRegistry())
    try:
        import grpc

        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as channel:
            record = await spb_grpc.SummariesStub(channel).Get(spb.GetSummaryRequest(call_id="shared-1"))
        assert json.loads(record.summary_json)["narrative"] == "Mrs Okafor lost her card."
    finally:
        await second.stop(1)


def test_tokens_are_issued_from_the_key_file_and_checked(tmp_path):
    from aftercall.core.errors import AuthenticationError
    from aftercall.vault.tokens import verify_token
    from conftest import run_cli

    ring = KeyRing.create(tmp_path / "keys.json")
    config = tmp_path / "aftercall.toml"
    config.write_text(f'[vault]\nkey_file = "{tmp_path / "keys.json"}"\n')
    issued = run_cli("tokens", "issue", "agent-1", "--hours", "1", "--config", config)
    assert issued.returncode == 0 and verify_token(ring, issued.stdout.strip()) == "agent-1"
    assert run_cli("tokens", "issue", "agent-1", "--hours", "0", "--config", config).returncode == 2
    with pytest.raises(AuthenticationError, match="not a token this appliance's key file signed"):
        verify_token(KeyRing.create(tmp_path / "other.json"), issued.stdout.strip())


@pytest.fixture
def softhsm(tmp_path, monkeypatch):
    """A SoftHSM2 token of its own (Debian's softhsm2, installed by `make test`): the vault config that uses it."""
    import subprocess

    from aftercall.vault.config import VaultConfig

    module = "/usr/lib/softhsm/libsofthsm2.so"
    if not os.path.exists(module):
        pytest.fail("SoftHSM2 is not installed (make test installs Debian's softhsm2)")
    (tmp_path / "tokens").mkdir()
    (tmp_path / "softhsm2.conf").write_text(f"directories.tokendir = {tmp_path / 'tokens'}\n"
                                            "objectstore.backend = file\nlog.level = ERROR\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(tmp_path / "softhsm2.conf"))
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "aftercall", "--pin", "4321",
                    "--so-pin", "8765"], check=True, capture_output=True)
    pin = tmp_path / "pin"
    pin.write_text("4321\n")
    pin.chmod(0o600)
    return VaultConfig(key_file=str(tmp_path / "keys.json"), pkcs11_module=module, pkcs11_token="aftercall",
                       pkcs11_pin_file=str(pin))


def test_keks_can_live_in_a_pkcs11_token(softhsm, tmp_path):
    from aftercall.vault.keys import open_key_ring

    vault = Vault(open_key_ring(softhsm, create_missing=True))
    document = json.loads((tmp_path / "keys.json").read_text())
    assert document["keks"] == [{"id": 1, "state": "active", "created_at": document["keks"][0]["created_at"],
                                 "key": None, "token": True}]  # no key material outside the token
    old = vault.seal(b"wrapped inside the token", "summary", "a")
    assert vault.open(old, "summary", "a") == b"wrapped inside the token"
    fresh = vault.keys.rotate()
    moved = vault.rewrap(old, "summary", "a")
    doomed = vault.seal(b"x", "summary", "b")
    vault.keys.retire(1)  # destroys the key object in the token
    reopened = Vault(open_key_ring(softhsm, create_missing=False))
    assert kek_of(moved) == fresh.id and reopened.open(moved, "summary", "a") == b"wrapped inside the token"
    assert kek_of(doomed) == fresh.id
    with pytest.raises(RecordUnreadableError, match="key 1 was retired"):
        reopened.open(old, "summary", "a")
    with pytest.raises(ConfigError, match="keys of .* are in a PKCS#11 token"):
        KeyRing.load(tmp_path / "keys.json")
    os.chmod(softhsm.pkcs11_pin_file, 0o644)
    with pytest.raises(ConfigError, match="vault.pkcs11_pin_file: .* readable by others"):
        open_key_ring(softhsm, create_missing=False)


def test_a_damaged_database_is_refused_at_start_not_half_read(tmp_path):
    from aftercall.core.database import DATABASE_NAME, open_database
    from aftercall.review.store import SummaryStore
    from conftest import run_cli

    data = tmp_path / "data"
    db = open_database(data)
    SummaryStore(db, Vault(KeyRing.create(tmp_path / "keys.json")))
    for index in range(50):
        db.execute("INSERT INTO audit_log VALUES (?, 0, '', 'x', '', ?, '')", (index + 1, bytes(4000)))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    path = data / DATABASE_NAME
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a disk that filled, a copy cut short
    with pytest.raises(ConfigError, match=r"aftercall.db is damaged .*restore it from a backup"):
        open_database(data)
    config = tmp_path / "aftercall.toml"
    config.write_text(f'[vault]\nkey_file = "{tmp_path / "keys.json"}"\n[server]\ndata_dir = "{data}"\n')
    refused = run_cli("audit", "verify", "--config", config)
    assert refused.returncode == 2 and "is damaged" in refused.stderr and "Traceback" not in refused.stderr
