"""Summaries from redacted transcripts: the embedded model (in-process) now, a Triton endpoint later."""
