"""Templates per queue: a site leaves fields out of the summary for a queue, or adds sections of its own, as its
agents' wrap-up templates do (`[summarise.templates.<queue>]` in the config file).

The summary still meets the contract: a field left out keeps its key with an empty value, and extra sections go under
`sections`, each the call's sentences that mention one of its cue words, in the third person.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Mapping

from aftercall.core.errors import ConfigError
from aftercall.core.transcript import Transcript
from aftercall.summarise import extract
from aftercall.summarise.contract import Summary

# The fields a queue may leave out, and the empty value each keeps so that the contract still holds. The record of the
# call (disposition, resolution, sentiment, escalation, reason) always stays.
OMITTABLE: dict[str, Any] = {"issue": "", "actions_taken": [], "follow_ups": [], "entities": [], "narrative": "",
                             "verification": [], "customer_tried": [], "decisions": [], "call": None}
_SECTION_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_MAX_SECTION_SENTENCES = 5
_FIELDS = set(Summary.__dataclass_fields__)


@dataclass(frozen=True)
class Template:
    omit: tuple[str, ...] = ()
    # Section name -> cue words ("medication" -> ("dose", "tablet")).
    sections: Mapping[str, tuple[str, ...]] | None = None


def parse_templates(raw: Mapping[str, Any]) -> dict[str, Template]:
    """`summarise.templates` as read from the config file: queue -> {"omit": [...], section: [cue words], ...}.
    ConfigError naming the key for anything else."""
    templates = {}
    for queue, table in raw.items():
        where = f"config summarise.templates.{queue}"
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: must be a table ([summarise.templates.{queue}] in the config file)")
        sections: dict[str, tuple[str, ...]] = {}
        for key, words in table.items():
            if not isinstance(words, (list, tuple)) or not all(isinstance(w, str) and w.strip() for w in words):
                raise ConfigError(f"{where}.{key}: must be a list of strings")
            if key == "omit":
                unknown = sorted(set(words) - set(OMITTABLE))
                if unknown:
                    raise ConfigError(f"{where}.omit: {', '.join(unknown)} cannot be left out (these can: "
                                      f"{', '.join(OMITTABLE)})")
            elif not _SECTION_NAME.fullmatch(key) or key in _FIELDS:
                raise ConfigError(f"{where}.{key}: a section needs a name of lower-case letters, digits and _ that "
                                  "is no field of the summary")
            elif not words:
                raise ConfigError(f"{where}.{key}: name at least one cue word")
            else:
                sections[key] = tuple(w.strip() for w in words)
        templates[queue] = Template(tuple(table.get("omit", ())), sections)
    return templates


def apply_template(summary: dict[str, Any], template: Template, transcript: Transcript) -> dict[str, Any]:
    """The summary as the queue's template has it: fields left out emptied, its own sections added."""
    summary = dict(summary)
    for name in template.omit:
        summary[name] = copy.copy(OMITTABLE[name])  # each summary its own empty list, never a shared one
        summary.get("evidence", {}).pop(name, None)
    if template.sections:
        said = extract.sentences(transcript.turns)
        summary["sections"], summary["evidence"] = {}, dict(summary.get("evidence", {}))
        for name, words in template.sections.items():
            cue = re.compile(r"\b(?:%s)\b" % "|".join(re.escape(w) for w in words), re.IGNORECASE)
            found = [s for s in said if cue.search(s.text)][:_MAX_SECTION_SENTENCES]
            summary["sections"][name] = [extract.sentence_case(extract.third_person(extract.strip_filler(s.text),
                                                                                    s.speaker)) for s in found]
            summary["evidence"][f"sections/{name}"] = [[s.turn] for s in found]
    return summary
