"""`aftercall reprocess`: after a model change (here a new taxonomy) the untouched drafts are summarised again from
their stored transcript; what people edited or approved stays. On a real SQLite store, and through the console
script."""

from __future__ import annotations

import dataclasses

import pytest

from aftercall.config import Config
from aftercall.core.database import open_database
from aftercall.pipeline import Pipeline
from aftercall.review.redraft import AUTHOR, drafts_since, redraft_all
from aftercall.review.store import APPROVED, DRAFT, EDITED, SummaryStore
from aftercall.summarise.config import SummariseConfig
from aftercall.summarise.taxonomy import load_taxonomy
from aftercall.vault.envelope import Vault
from aftercall.vault.keys import KeyRing
from conftest import ROOT, run_cli

NEW_TAXONOMY = """
[[disposition]]
code = "FRAUD_REPORT"
label = "Fraud reported"
description = "The caller reports a stolen card or a payment they did not make."

[[disposition]]
code = "GENERAL_ENQUIRY"
label = "General enquiry"
description = "A question about products, opening hours or anything else."
"""


@pytest.fixture
def stored(tmp_path, summariser):
    """Three summaries of the demo call, made with the shipped taxonomy: one untouched, one edited, one approved."""
    pipeline = Pipeline(Config(), load_taxonomy(), summariser, transcriber_factory=lambda: None)
    transcript = pipeline.load(ROOT / "samples" / "demo_call.json", None)
    db = open_database(tmp_path / "data")
    keys = tmp_path / "keys.json"
    store = SummaryStore(db, Vault(KeyRing.create(keys)))
    for call_id in ("untouched", "edited", "approved"):
        store.create_draft(pipeline.run(transcript, ("agent", "customer"), call_id=call_id),
                           {"agent_id": "agent-7", "queue": "cards"}, True, "ai")
    store.edit("edited", 1, {**store.get("edited").summary, "narrative": "Checked by Ann."}, "agent-7")
    store.approve("approved", 1, "agent-7")
    yield store, keys
    db.close()


def test_untouched_drafts_are_redrafted_and_peoples_work_stays(stored, tmp_path, summariser):
    store, _ = stored
    taxonomy = tmp_path / "taxonomy.toml"
    taxonomy.write_text(NEW_TAXONOMY)
    changed = Pipeline(dataclasses.replace(Config(), summarise=SummariseConfig(taxonomy=str(taxonomy))),
                       load_taxonomy(taxonomy), summariser, transcriber_factory=lambda: None)
    lines: list[str] = []

    assert drafts_since(store, None) == ["untouched"]
    counts = redraft_all(store, changed, drafts_since(store, None), lines.append)
    assert (counts.redrafted, counts.unchanged, counts.skipped) == (1, 0, 0)
    assert lines == ["[1/1] untouched: redrafted (disposition CARD_LOST_STOLEN -> FRAUD_REPORT)"]

    redrafted = store.get("untouched", include_history=True)
    assert redrafted.state == DRAFT and redrafted.version == 2 and redrafted.disposition_code == "FRAUD_REPORT"
    assert [v.author for v in redrafted.history] == ["ai", AUTHOR]
    assert redrafted.summary["transcript"] == redrafted.history[0].summary["transcript"]
    assert redrafted.summary["redactions"] == redrafted.history[0].summary["redactions"], "the counts carried over"
    assert store.get("edited").state == EDITED and store.get("edited").version == 2
    assert store.get("approved").state == APPROVED and store.get("approved").disposition_code == "CARD_LOST_STOLEN"
    assert [e["action"] for e in store.audit.entries("untouched")][-1] == "redraft"

    again = redraft_all(store, changed, drafts_since(store, None), lines.append)
    assert (again.redrafted, again.unchanged) == (0, 1), "the same model writes the same summary"
    # Approving it as redrafted is no change: people's edits are measured against the newest draft.
    _, distance = store.approve("untouched", 2, "agent-7")
    assert distance == 0.0


def test_the_console_script_reprocesses_with_progress_and_a_dry_run(stored, tmp_path):
    store, keys = stored
    taxonomy = tmp_path / "taxonomy.toml"
    taxonomy.write_text(NEW_TAXONOMY)
    env = {"AFTERCALL_VAULT__KEY_FILE": str(keys), "AFTERCALL_SUMMARISE__TAXONOMY": str(taxonomy)}
    data = ["--data-dir", str(tmp_path / "data")]

    dry = run_cli("reprocess", "--dry-run", *data, env=env)
    assert dry.returncode == 0, dry.stderr
    assert "[1/1] untouched: would be redrafted (disposition CARD_LOST_STOLEN -> FRAUD_REPORT)" in dry.stderr
    assert store.get("untouched").version == 1, "a dry run stores nothing"

    later = run_cli("reprocess", "--since", "2999-01-01", *data, env=env)
    assert later.returncode == 0 and "0 untouched draft(s)" in later.stderr
    done = run_cli("reprocess", *data, env=env)
    assert done.returncode == 0 and "1 redrafted, 0 unchanged, 0 skipped" in done.stderr
    assert store.get("untouched").disposition_code == "FRAUD_REPORT"
    bad = run_cli("reprocess", "--since", "yesterday", *data, env=env)
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr
