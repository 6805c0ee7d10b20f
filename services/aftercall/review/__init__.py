"""Stored summaries and their review (Summaries): get, search, edit, approve."""
