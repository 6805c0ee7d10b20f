"""The `aftercall eval` report: headline table (every set, text and audio side by side), gates, then per set its
metrics by split, confusion matrix and redaction recall by type, and the ids of failing cases."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from aftercall import __version__
from aftercall.evaluation.cases import Dataset
from aftercall.evaluation.report import Section, Table, figure_uri, new_figure, write_report

# (metric, column title) of the headline table: the questions a buyer asks first.
HEADLINE = (("cases", "cases"), ("disposition_accuracy", "disposition"), ("resolution_accuracy", "resolution"),
            ("follow_up_precision", "follow-up P"), ("follow_up_recall", "follow-up R"), ("due_exact", "due exact"),
            ("sentiment_end_accuracy", "sentiment (end)"), ("rouge_l", "ROUGE-L"),
            ("rouge_l_baseline", "ROUGE-L baseline"), ("grounding", "grounding"),
            ("redaction_recall", "redaction recall"), ("redaction_precision", "redaction precision"),
            ("leaks", "leaks"), ("wer", "WER"), ("wer_customer", "WER customer"),
            ("dropped_turns", "dropped turns"), ("hallucinated_words", "words in silence"),
            ("speaker_attribution", "mono: right speaker"))
_DETAIL_SKIP = {"redaction_recall_by_type", "redaction_spans_by_type", "redaction_precision_by_type",
                "leaks_by_type"}


def _confusion_figure(name: str, matrix: dict[str, dict[str, int]], top: int = 15) -> str:
    """Heatmap of the `top` most frequent expected codes (rows normalised), the rest pooled as OTHER."""
    counts = sorted(matrix, key=lambda code: -sum(matrix[code].values()))[:top]
    columns = counts + ["OTHER"]
    grid = []
    for code in counts:
        row = [matrix[code].get(c, 0) for c in counts]
        row.append(sum(v for c, v in matrix[code].items() if c not in counts))
        total = sum(row) or 1
        grid.append([v / total for v in row])
    size = 2.5 + 0.35 * len(columns)
    figure = new_figure(size + 1.5, size)
    axes = figure.subplots()
    image = axes.imshow(grid, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(columns)), [c[:30] for c in columns], rotation=75, fontsize=7)
    axes.set_yticks(range(len(counts)), [c[:30] for c in counts], fontsize=7)
    axes.set_xlabel("predicted")
    axes.set_ylabel("expected")
    axes.set_title(f"{name}: disposition confusion (share of each expected code)", fontsize=9)
    figure.colorbar(image, ax=axes, shrink=0.7)
    return figure_uri(figure)


def _bars_figure(title: str, values: dict[str, float], xlabel: str) -> str:
    figure = new_figure(7, 0.8 + 0.3 * len(values))
    axes = figure.subplots()
    names = list(values)
    axes.barh(range(len(names)), [values[n] for n in names], color="#4a7ab5")
    axes.set_yticks(range(len(names)), names, fontsize=8)
    axes.set_xlim(0, 1)
    axes.set_xlabel(xlabel)
    axes.set_title(title, fontsize=9)
    axes.invert_yaxis()
    return figure_uri(figure)


def _modes_figure(results: dict[str, dict[str, Any]]) -> str | None:
    """Text vs audio for each set measured both ways: what recognition errors cost each field."""
    keys = ("disposition_accuracy", "resolution_accuracy", "follow_up_recall", "rouge_l", "grounding",
            "redaction_recall")
    both = [(name, runs) for name, runs in results.items() if {"text", "audio"} <= set(runs)]
    if not both:
        return None
    figure = new_figure(7.5, 1.2 + 2.2 * len(both))
    for index, (name, runs) in enumerate(both):
        axes = figure.add_subplot(len(both), 1, index + 1)
        shown = [k for k in keys if runs["text"]["metrics"]["all"].get(k) is not None]
        for offset, mode in ((-0.2, "text"), (0.2, "audio")):
            axes.bar([i + offset for i in range(len(shown))],
                     [runs[mode]["metrics"]["all"].get(k) or 0 for k in shown], width=0.4, label=mode)
        axes.set_xticks(range(len(shown)), shown, fontsize=7)
        axes.set_ylim(0, 1)
        axes.set_title(f"{name}: text mode vs audio mode", fontsize=9)
        axes.legend(fontsize=7)
    return figure_uri(figure)


def _headline(datasets: list[Dataset], results: dict[str, dict[str, Any]]) -> Table:
    rows = []
    for dataset in datasets:
        for mode, run in results.get(dataset.name, {}).items():
            metrics = run["metrics"]["all"]
            label = f"{dataset.name} ({'tuned on' if dataset.tuned_on else 'not tuned on'})"
            rows.append([label, mode, *[metrics.get(key) for key, _ in HEADLINE]])
    return Table(["set", "mode", *[title for _, title in HEADLINE]], rows,
                 "All cases of each set; n/a = not labelled in that set. Grounding = share of numbers, dates and "
                 "IDs in the summary that the transcript says (1 - hallucination rate).")


def _dataset_section(dataset: Dataset, runs: dict[str, Any]) -> Section:
    columns = [(mode, split) for mode, run in runs.items() for split in run["metrics"]]
    names = [k for k, v in next(iter(runs.values()))["metrics"]["all"].items()
             if k not in _DETAIL_SKIP and any(runs[m]["metrics"][s].get(k) is not None for m, s in columns)]
    table = Table(["metric", *[f"{mode}, {split}" for mode, split in columns]],
                  [[name, *[runs[m]["metrics"][s].get(name) for m, s in columns]] for name in names],
                  "held-out = the half of the set never looked at while tuning (fixed by a hash of the case id)")
    figures, notes = [], [f"Source: {dataset.source}.", *dataset.notes]
    if dataset.tuned_on:
        notes.insert(0, "Tuned on: the code was adjusted looking at this set; read the held-out column.")
    first = next(iter(runs.values()))
    if first["confusion"]:
        figures.append(_confusion_figure(dataset.name, first["confusion"]))
    recall = first["metrics"]["all"]["redaction_recall_by_type"]
    if recall:
        spans = first["metrics"]["all"]["redaction_spans_by_type"]
        figures.append(_bars_figure(f"{dataset.name}: redaction recall by type",
                                    {f"{k} ({spans[k]})": v for k, v in recall.items()}, "recall"))
    tables = [table]
    precision = first["metrics"]["all"]["redaction_precision_by_type"]
    if precision:
        tables.append(Table(["aftercall redaction type", "precision"], sorted(precision.items()),
                            "share of what was redacted that was labelled sensitive"))
    failing = [[mode, s["id"], ", ".join(s["leaks"]) or "-",
                f"{s['disposition'][0]} -> {s['disposition'][1]}" if "disposition" in s else "-"]
               for mode, run in runs.items() for s in run["cases"]
               if s["leaks"] or ("disposition" in s and s["disposition"][0] != s["disposition"][1])]
    if failing:
        tables.append(Table(["mode", "case", "leaked types", "disposition (expected -> got)"], failing[:40],
                            f"Cases with a leak or a wrong disposition ({len(failing)}; ids only, first 40)"))
    return Section(f"Set: {dataset.name}", tables=tables, figures=figures, notes=notes)


def write_eval_report(out: Path, datasets: list[Dataset], results: dict[str, dict[str, Any]],
                      verdicts: list[dict], skipped: list[str], args: argparse.Namespace) -> tuple[Path, Path]:
    meta = {"aftercall": __version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{os.cpu_count()} cores", "mode": args.mode, "split": args.split,
            "taxonomy": str(args.taxonomy or "shipped default (per-set taxonomies where a set has its own)")}
    gate_rows = [[v["gate"], v["set"], v["mode"], v["value"], "PASS" if v["passed"] else "FAIL"] for v in verdicts]
    overview = Section("Overview", tables=[
        Table(["gate", "set", "mode", "value", "verdict"], gate_rows, "Gates (exit 1 when any fails)"),
        _headline(datasets, results),
        Table(["set", "cases", "tuned on?", "source"],
              [[d.name, len(d.cases), "yes: optimistic" if d.tuned_on else "no", d.source] for d in datasets])],
        notes=skipped)
    figure = _modes_figure(results)
    sections = [overview]
    if figure:
        sections.append(Section("Recognition's cost: text mode vs audio mode", figures=[figure]))
    sections += [_dataset_section(d, results[d.name]) for d in datasets if d.name in results]
    data = {"gates": verdicts, "skipped": skipped,
            "sets": {d.name: {"source": d.source, "tuned_on": d.tuned_on, "notes": d.notes,
                              "results": results.get(d.name, {})} for d in datasets}}
    return write_report(out, "eval", "aftercall evaluation", data, sections, meta)
