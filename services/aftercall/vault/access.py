"""Who may do what: roles from `[access]`, matched against the caller's identity (its mTLS client certificate, or
from loopback the `x-aftercall-user` metadata a local UI or proxy sets after authenticating the person, or a signed
token from `aftercall tokens issue`).

- pbx: sends calls (CallIngest) and nothing else;
- agent: reads, edits and approves the summaries of their own calls;
- supervisor: the same for their team's calls (`teams`), and reads their own;
- auditor: reads every summary and the audit trail, changes nothing;
- admin: keys and retention (the `aftercall keys`/`erase` commands run with the key file); no summaries.

With no roles configured the appliance is in single-user mode: anyone who can reach it may do anything, which is
allowed only while every listener is on loopback (checked at start).
"""

from __future__ import annotations

from dataclasses import dataclass

from aftercall.core.errors import ConfigError, PermissionDeniedError
from aftercall.core.rpc import TOKEN_METADATA_KEY, caller_identity, require_identity
from aftercall.vault.config import AccessConfig
from aftercall.vault.keys import KeyRing
from aftercall.vault.tokens import verify_token

ROLES = ("pbx", "agent", "supervisor", "auditor", "admin")


@dataclass(frozen=True)
class Scope:
    """Which summaries a caller may see: all of them, or the calls of these agents."""

    agents: frozenset[str] | None  # None: every call

    def allows(self, agent_id: str) -> bool:
        return self.agents is None or agent_id in self.agents


class AccessPolicy:
    def __init__(self, config: AccessConfig, keys: KeyRing | None = None):
        self._keys = keys  # verifies signed tokens; None: tokens are not accepted
        self._roles: dict[str, str] = {}
        for role in ROLES:
            for subject in getattr(config, role):
                if subject in self._roles:
                    raise ConfigError(f"config access.{role}: {subject!r} already has the role {self._roles[subject]}")
                self._roles[subject] = role
        self._teams: dict[str, frozenset[str]] = {}
        for entry in config.teams:
            supervisor, _, members = entry.partition(":")
            if self._roles.get(supervisor.strip()) != "supervisor" or not members.split():
                raise ConfigError(f"config access.teams: {entry!r} must be 'SUPERVISOR: AGENT AGENT ...' for a "
                                  "subject listed in access.supervisor")
            self._teams[supervisor.strip()] = frozenset(members.split())

        self._trust_loopback_user = config.trust_loopback_user

    @property
    def enforced(self) -> bool:
        return bool(self._roles)

    @property
    def believes_loopback_user(self) -> bool:
        """Whether a user name a loopback client asserts (a local UI or proxy that authenticated the person) counts."""
        return not self.enforced or self._trust_loopback_user

    def identity(self, context, required_for: str = "") -> str | None:
        """The caller's identity as this policy believes it: the client certificate; else a signed token; else, from
        loopback, the user metadata (see AccessConfig.trust_loopback_user)."""
        loopback = self.believes_loopback_user
        certified = caller_identity(context, loopback_metadata=False)
        if certified is not None:
            return certified
        token = next((str(v) for k, v in context.invocation_metadata() or () if k == TOKEN_METADATA_KEY), None)
        if token is not None and self._keys is not None:
            return verify_token(self._keys, token)
        if required_for:
            return require_identity(context, required_for, loopback)
        return caller_identity(context, loopback)

    def role(self, identity: str | None) -> str | None:
        return self._roles.get(identity or "")

    def require(self, identity: str | None, action: str, *roles: str) -> None:
        if not self.enforced:
            return
        if self.role(identity) not in roles:
            who = f"{identity!r} ({self.role(identity) or 'no role'})" if identity else "an unidentified caller"
            raise PermissionDeniedError(f"{action} is for {' or '.join(roles)}; {who} may not")

    def summaries_scope(self, identity: str | None, action: str) -> Scope:
        """What `identity` may read (auditors, supervisors' teams, agents' own calls); raises if nothing."""
        if not self.enforced:
            return Scope(None)
        self.require(identity, action, "agent", "supervisor", "auditor")
        role = self.role(identity)
        if role == "auditor":
            return Scope(None)
        return Scope(frozenset({identity, *self._teams.get(identity, ())}))

    def change_scope(self, identity: str | None, action: str) -> Scope:
        """What `identity` may edit or approve: agents their own calls, supervisors their team's too."""
        if not self.enforced:
            return Scope(None)
        self.require(identity, action, "agent", "supervisor")
        return Scope(frozenset({identity, *self._teams.get(identity, ())}))
