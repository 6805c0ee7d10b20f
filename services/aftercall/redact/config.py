"""The [redact] section: the site's additions to the redaction rule table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from aftercall.core.config import Section, setting
from aftercall.redact.rules import RuleTable


@dataclass(frozen=True)
class RedactConfig(Section):
    """The site's additions to the redaction rule table (aftercall.redact.rules)."""

    # Extra cue words per type, e.g. NHS_NUMBER = ["mrn", "medical record number"]; NEUTRAL: the site's own
    # reference words, after which digits are kept ("job number").
    cues: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Names redacted wherever they are said, in any case (people the recogniser might not know as names).
    names: tuple[str, ...] = ()
    # Types not redacted (logged as a warning at start-up), e.g. ["LOCATION"] where the town is the call's subject.
    # CARD and CVV cannot be turned off.
    off: tuple[str, ...] = ()
    # The learned second opinion after the rules (aftercall.redact.tagger): a number or letters the rules left in
    # the clear is redacted when the model gives it at least this probability of being part of an ID. Lower catches
    # more garbled values and keeps fewer ordinary numbers; 1.0 turns the model off.
    tagger_threshold: float = setting(0.7, between=(0.05, 1.0))

    def validate(self) -> None:
        RuleTable(self.cues, self.names, self.off)
