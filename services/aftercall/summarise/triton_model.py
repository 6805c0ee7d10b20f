"""What the Triton `call_summariser` model does with a batch, kept out of `model.py` so it runs and is tested
without Triton: each request is a redacted transcript JSON (and optionally a taxonomy TOML), each answer the
summariser's JSON or that request's own error; one bad request never fails the batch."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from aftercall.core.errors import UserError
from aftercall.core.transcript import parse_transcript
from aftercall.summarise.summariser import EmbeddedSummariser
from aftercall.summarise.taxonomy import load_taxonomy, parse_taxonomy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    summary_json: bytes | None = None
    error: str | None = None


class CallSummariserModel:
    def __init__(self, summariser: EmbeddedSummariser | None = None):
        self._summariser = summariser or EmbeddedSummariser()
        self._default_taxonomy = load_taxonomy()

    def answer(self, transcript_json: bytes, taxonomy_toml: bytes | None) -> Answer:
        try:
            transcript = parse_transcript(transcript_json)
            taxonomy = self._default_taxonomy
            if taxonomy_toml:
                taxonomy = parse_taxonomy(taxonomy_toml.decode("utf-8"), "TAXONOMY_TOML")
            summary = self._summariser.summarise(transcript, taxonomy)
            return Answer(summary_json=json.dumps(summary, ensure_ascii=False).encode("utf-8"))
        except UserError as exc:
            return Answer(error=str(exc))
        except UnicodeDecodeError:
            return Answer(error="TAXONOMY_TOML is not UTF-8")
        except Exception as exc:  # noqa: BLE001 - whatever one request does, the rest of its batch is answered
            logger.exception("call_summariser failed on one request")
            return Answer(error=f"the summariser failed on this transcript ({type(exc).__name__})")
