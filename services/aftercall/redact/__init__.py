"""PCI/PII/PHI redaction of transcripts and summaries, after spoken numbers are turned into digits."""

from aftercall.redact.redactor import Redaction, Redactor

__all__ = ["Redaction", "Redactor"]
