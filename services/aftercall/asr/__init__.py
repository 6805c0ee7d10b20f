"""The Riva-compatible speech server (`aftercall serve asr`)."""
