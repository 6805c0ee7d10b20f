"""Shared core: errors, audio codecs, transcript types, config, logging, model-package checks."""
