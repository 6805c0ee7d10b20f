"""The [vault], [retention] and [access] sections: where the keys are, what is shredded when, and who may do what."""

from __future__ import annotations

from dataclasses import dataclass

from aftercall.core.config import Section, setting


@dataclass(frozen=True)
class VaultConfig(Section):
    """Where the key-encryption keys are kept: the key file, or a PKCS#11 token."""

    # The key-encryption keys (JSON, mode 0600, this user's). Empty: $XDG_CONFIG_HOME/aftercall/keys.json
    # (~/.config/aftercall/keys.json), apart from the data it protects. `aftercall keys init` makes it; `aftercall
    # serve` makes one on first start when there is none, and says so.
    key_file: str = ""
    # KEKs in a PKCS#11 token instead of the key file (which then lists their ids and states, and keeps the
    # blind-index key): the module (e.g. /usr/lib/softhsm/libsofthsm2.so), the token's label, and a 0600 file with
    # the user PIN.
    pkcs11_module: str = ""
    # The token's label.
    pkcs11_token: str = ""
    # The file holding the token's user PIN (mode 0600).
    pkcs11_pin_file: str = ""


@dataclass(frozen=True)
class RetentionConfig(Section):
    """What `aftercall retention run` crypto-shreds, by age in days (0 keeps it for ever)."""

    # Summaries with every version, by when the summary was made.
    summary_days: int = setting(0, between=(0, 36500))
    # Only the transcript inside each summary (the rest stays), by the same date.
    transcript_days: int = setting(0, between=(0, 36500))
    # Audio kept for an operator after a call failed for good.
    audio_days: int = setting(30, between=(0, 36500))
    # Legal hold: calls (by call id) and customers (by customer reference) nothing is removed from.
    hold_call_ids: tuple[str, ...] = ()
    # Legal hold by customer reference: nothing is removed from their calls.
    hold_customer_refs: tuple[str, ...] = ()


@dataclass(frozen=True)
class AccessConfig(Section):
    """Roles by identity (mTLS certificate CN, or from loopback the x-aftercall-user metadata). All empty: single-user
    mode, allowed only on loopback listeners."""

    # Identities that send calls (CallIngest), and nothing else.
    pbx: tuple[str, ...] = ()
    # Identities that read, edit and approve the summaries of their own calls.
    agent: tuple[str, ...] = ()
    # Identities that read, edit and approve their team's calls (teams), and read their own.
    supervisor: tuple[str, ...] = ()
    # Identities that read every summary and the audit trail, and change nothing.
    auditor: tuple[str, ...] = ()
    # Identities that manage keys and retention, and read no summaries.
    admin: tuple[str, ...] = ()
    # "SUPERVISOR: AGENT AGENT ...", one entry per supervisor.
    teams: tuple[str, ...] = ()
    # With roles set, believe the x-aftercall-user metadata from loopback (a local UI or proxy that authenticates
    # people); off, only client certificates count, because any local user could claim any name.
    trust_loopback_user: bool = False
