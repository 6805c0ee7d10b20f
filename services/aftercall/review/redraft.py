"""`aftercall reprocess`: after a model change (a new summariser, taxonomy or template), the drafts nobody has touched
are summarised again from their stored, redacted transcript, each as a new version. Summaries a person has edited
or approved are their work and stay as they are. Every redraft is audited (`redraft`), and an approval later
measures people's changes against the newest draft."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from aftercall.core.errors import ConflictError, StateError
from aftercall.core.transcript import Transcript, Turn
from aftercall.pipeline import Pipeline
from aftercall.redact.redactor import Redaction
from aftercall.review.store import DRAFT, MAX_PAGE, StoredSummary, SummaryFilter, SummaryStore

logger = logging.getLogger(__name__)
AUTHOR = "aftercall reprocess"


@dataclass
class RedraftCounts:
    redrafted: int = 0
    unchanged: int = 0  # the new model wrote the same summary
    skipped: int = 0  # changed by a person meanwhile, or no transcript left (retention dropped it)


def drafts_since(store: SummaryStore, since: float | None) -> list[str]:
    """The call ids of the untouched drafts stored since `since` (all of them for None), oldest first."""
    call_ids, offset = [], 0
    while offset is not None:
        page, offset = store.list(SummaryFilter(state=DRAFT, created_from=since), MAX_PAGE, offset)
        call_ids += [stored.call_id for stored in page]
    return call_ids[::-1]


def resummarised(pipeline: Pipeline, stored: StoredSummary) -> dict | None:
    """The summary the current pipeline writes from the stored, redacted transcript; None without a transcript."""
    old = stored.summary
    turns = tuple(Turn(t["speaker"], t["text"], t.get("start"), t.get("end")) for t in old.get("transcript") or [])
    if not turns:
        return None
    # The transcript is redacted already: the redactor runs again over it (as after a restart) and finds no more;
    # the counts of what the first pass took out are carried over.
    counts = Counter({r["type"]: r["count"] for r in old.get("redactions") or []})
    redaction = pipeline.redact(Transcript(turns), stored.call_id)
    return pipeline.summarise(Redaction(redaction.transcript, counts + redaction.counts),
                              started_at=(old.get("call") or {}).get("started_at"),
                              audio_seconds=old.get("audio_seconds"), queue=stored.queue or None)


def redraft_all(store: SummaryStore, pipeline: Pipeline, call_ids: list[str], report: Callable[[str], None],
                dry_run: bool = False) -> RedraftCounts:
    counts = RedraftCounts()
    for index, call_id in enumerate(call_ids, 1):
        stored = store.get(call_id)
        summary = resummarised(pipeline, stored) if stored.state == DRAFT else None
        position = f"[{index}/{len(call_ids)}] {call_id}"
        if summary is None:
            counts.skipped += 1
            report(f"{position}: skipped ({'no transcript left' if stored.state == DRAFT else stored.state})")
            continue
        if _written(summary) == _written(stored.summary):
            counts.unchanged += 1
            report(f"{position}: unchanged")
            continue
        change = f"disposition {stored.disposition_code} -> {summary['disposition']['code']}" if (
            summary["disposition"]["code"] != stored.disposition_code) else "fields rewritten"
        if not dry_run:
            try:
                store.redraft(call_id, stored.version, summary, AUTHOR)
            except (ConflictError, StateError):  # a person changed it while this ran: theirs stands
                counts.skipped += 1
                report(f"{position}: skipped (changed by a person meanwhile)")
                continue
        counts.redrafted += 1
        report(f"{position}: {'would be ' if dry_run else ''}redrafted ({change})")
    return counts


def _written(summary: dict) -> dict:
    """What a summariser wrote, without the timings of this run."""
    return {key: value for key, value in summary.items() if key != "timings"}
