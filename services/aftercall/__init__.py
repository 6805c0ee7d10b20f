"""aftercall: structured, redacted post-call summaries on the appliance."""

__version__ = "0.1.0"
