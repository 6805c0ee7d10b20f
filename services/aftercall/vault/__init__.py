"""The vault: envelope encryption of everything stored, its keys, and (later) the audit trail."""
