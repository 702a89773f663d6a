"""The rule vocabulary: kinds, thresholds, findings, and the rules beside the delegation chain.

Every check is at event time (`occurred_at`), never arrival order. The delegation rules (chains,
windows, revocations, scopes, resources, attenuation) are decided by `authority`, the one
evaluator; this module holds what they share (`Violation`, `Thresholds`, scope matching) and
the rules that need no chain: the actor's retirement, a denying decision, the credential used
(`side_violations`), a retired delegator or delegate (`grant_retirement_violations`),
LONG_LIVED_CREDENTIAL and UNOWNED_AGENT.

Semantics chosen where the design is silent:
- Scopes are `service:verb`, `service:*` (every verb of that service) or `*` (everything).
- Resources and patterns follow `patterns` (canonical paths; `*` crosses `/`).
- A principal's kind is its latest registration; unregistered actors are not human
  (NO_DELEGATION applies to them); an action citing a credential the ledger never issued (or
  issued after the action) is CREDENTIAL_MISUSE.
- UNKNOWN_PRINCIPAL: one per principal id named as actor, delegator, delegate, credential holder,
  agent owner, decision principal or retiree that no `principal.registered` event ever names,
  reported at its earliest mention. `revoked_by`/`retired_by` are not checked.
- BURST: one violation per episode: the first action at which a principal has more than N actions
  in the half-open window (t - W, t]; a new episode starts W after the last over-limit action.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

__all__ = [
    "ACTION_FACT_COLUMNS",
    "ACTION_KINDS",
    "CHAIN_KINDS",
    "CREDENTIAL_KINDS",
    "DELEGATION_KINDS",
    "KINDS",
    "Thresholds",
    "Violation",
    "as_utc",
    "dedupe",
    "earliest",
    "grant_retirement_violations",
    "iso",
    "jsonable",
    "long_lived_violation",
    "scope_covers",
    "scope_covers_sql",
    "side_violations",
    "unowned_violation",
]

KINDS = (
    "NO_DELEGATION",
    "NOT_DELEGATE",
    "OUT_OF_SCOPE",
    "RESOURCE_OUT_OF_SCOPE",
    "EXPIRED_DELEGATION",
    "REVOKED_DELEGATION",
    "SCOPE_ESCALATION",
    "REDELEGATION_NOT_ALLOWED",
    "RETIRED_PRINCIPAL",
    "DENIED_BUT_EXECUTED",
    "LONG_LIVED_CREDENTIAL",
    "CREDENTIAL_MISUSE",
    "UNOWNED_AGENT",
    "UNKNOWN_PRINCIPAL",
    "BURST",
    "DELEGATION_CYCLE",
    "UNKNOWN_DELEGATION",
    "ROOT_NOT_HUMAN",
    "CHAIN_TOO_DEEP",
    "INVALID_PATTERN",
)
#: the kinds whose failure means the chain itself carries no authority
CHAIN_KINDS = frozenset(
    {
        "DELEGATION_CYCLE",
        "UNKNOWN_DELEGATION",
        "ROOT_NOT_HUMAN",
        "CHAIN_TOO_DEEP",
        "EXPIRED_DELEGATION",
        "REVOKED_DELEGATION",
    }
)
ACTION_KINDS = frozenset(
    {
        "NO_DELEGATION",
        "NOT_DELEGATE",
        "OUT_OF_SCOPE",
        "RESOURCE_OUT_OF_SCOPE",
        "RETIRED_PRINCIPAL",
        "DENIED_BUT_EXECUTED",
        "CREDENTIAL_MISUSE",
        *CHAIN_KINDS,
    }
)
DELEGATION_KINDS = frozenset(
    {
        "SCOPE_ESCALATION",
        "REDELEGATION_NOT_ALLOWED",
        "RETIRED_PRINCIPAL",
        "INVALID_PATTERN",
        "DELEGATION_CYCLE",
        "UNKNOWN_DELEGATION",
        "ROOT_NOT_HUMAN",
        "CHAIN_TOO_DEEP",
    }
)
CREDENTIAL_KINDS = frozenset({"LONG_LIVED_CREDENTIAL", "UNKNOWN_DELEGATION"})


def iso(t: datetime | None) -> str | None:
    """ISO 8601 UTC with a trailing Z, the form every JSON output uses."""
    if t is None:
        return None
    return t.isoformat().replace("+00:00", "Z")


def as_utc(value: datetime | None) -> datetime | None:
    """Naive times are taken as UTC, as everywhere in the ledger."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def earliest(*values: datetime | None) -> datetime | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def jsonable(value: Any) -> Any:
    """A DuckDB value as JSON: timestamps ISO Z, bytes hex, decimals and UUIDs as strings."""
    if isinstance(value, datetime):
        return iso(as_utc(value).astimezone(UTC))  # type: ignore[union-attr]
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The tunable limits of the rules: LONG_LIVED_CREDENTIAL, BURST, CHAIN_TOO_DEEP, and the
    principals besides registered humans that may make root grants (ROOT_NOT_HUMAN)."""

    credential_max_lifetime: timedelta = timedelta(hours=24)
    burst_actions: int = 100
    burst_window: timedelta = timedelta(seconds=60)
    max_chain_depth: int = 32
    root_authorities: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Violation:
    """One finding. `hop` (not serialized): the delegation it concerns; `ends_at`: a burst's end."""

    kind: str
    subject_id: str
    event_id: str
    occurred_at: datetime
    principal_id: str | None
    detail: str
    hop: str | None = field(default=None, compare=False)
    ends_at: datetime | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "subject_id": self.subject_id,
            "event_id": self.event_id,
            "occurred_at": iso(self.occurred_at),
            "principal_id": self.principal_id,
            "detail": self.detail,
        }

    def sort_key(self) -> tuple[datetime, str, str, str, str]:
        return (
            self.occurred_at,
            self.event_id,
            self.kind,
            self.subject_id,
            self.principal_id or "",
        )


# -- matching -------------------------------------------------------------------------------


def scope_covers(scopes: Iterable[str], operation: str) -> bool:
    """`*` covers everything, `svc:*` every `svc:...`, anything else only itself."""
    return any(
        s in ("*", operation) or (s.endswith(":*") and operation.startswith(s[:-1])) for s in scopes
    )


def scope_covers_sql(scopes: str, op: str, var: str = "s") -> str:
    """SQL for `scope_covers` (the same three cases, so the two agree exactly)."""
    return (
        f"(len(list_filter({scopes}, lambda {var}: {var} = '*' OR {var} = {op} OR "
        f"(ends_with({var}, ':*') AND starts_with({op}, left({var}, length({var}) - 1))))) > 0)"
    )


# -- action-level rules -----------------------------------------------------------------------

#: columns of an action facts row (see ACTION_FACTS_SQL); trace builds the same dict by hand
ACTION_FACT_COLUMNS = (
    "action_id",
    "event_id",
    "occurred_at",
    "principal_id",
    "delegation_id",
    "credential_id",
    "operation",
    "resource",
    "outcome",
    "retired_at",
    "denied_by",
    "has_credential",
    "holder",
    "cred_issued",
    "cred_expires",
    "cred_revoked",
)


def _before_or_at(t: datetime | None, ref: datetime) -> bool:
    return t is not None and t <= ref


def side_violations(f: Mapping[str, Any]) -> list[Violation]:
    """The action-level rules beside the delegation chain: retirement of the actor, a denying
    decision, the credential used. From one action facts row."""
    out: list[Violation] = []
    aid, actor, t = f["action_id"], f["principal_id"], f["occurred_at"]

    def add(kind: str, detail: str) -> None:
        out.append(Violation(kind, aid, f["event_id"], t, actor, detail))

    if _before_or_at(f["retired_at"], t):
        add("RETIRED_PRINCIPAL", f"{actor} acted after being retired at {iso(f['retired_at'])}.")
    if f["outcome"] == "succeeded" and f["denied_by"] is not None:
        add(
            "DENIED_BUT_EXECUTED",
            f"{f['operation']} on {f['resource']} succeeded although decision "
            f"{f['denied_by']} denied it.",
        )
    cid = f["credential_id"]
    if cid is not None:
        reason = None
        if not f["has_credential"] or f["cred_issued"] > t:
            reason = "which had not been issued at that time"
        elif f["holder"] != actor:
            reason = f"which is held by {f['holder']}"
        elif _before_or_at(f["cred_revoked"], t):
            reason = f"which was revoked at {iso(f['cred_revoked'])}"
        elif _before_or_at(f["cred_expires"], t):
            reason = f"which expired at {iso(f['cred_expires'])}"
        if reason:
            add("CREDENTIAL_MISUSE", f"{actor} used credential {cid}, {reason}.")
    return out


# -- delegation-level rules -------------------------------------------------------------------


def grant_retirement_violations(
    delegation_id: str,
    event_id: str,
    at: datetime,
    delegator_id: str,
    delegate_id: str,
    delegator_retired_at: datetime | None,
    delegate_retired_at: datetime | None,
) -> list[Violation]:
    """RETIRED_PRINCIPAL for a grant: made by, or to, a principal already retired."""
    out = []
    if _before_or_at(delegator_retired_at, at):
        out.append(
            Violation(
                "RETIRED_PRINCIPAL",
                delegation_id,
                event_id,
                at,
                delegator_id,
                f"{delegator_id} granted {delegation_id} after being retired.",
                delegation_id,
            )
        )
    if _before_or_at(delegate_retired_at, at):
        out.append(
            Violation(
                "RETIRED_PRINCIPAL",
                delegation_id,
                event_id,
                at,
                delegate_id,
                f"{delegation_id} delegates to {delegate_id}, already retired.",
                delegation_id,
            )
        )
    return out


# -- principal- and credential-level rules ---------------------------------------------


def _hours(span: timedelta) -> str:
    hours = span.total_seconds() / 3600
    return f"{hours:g} h" if hours < 48 else f"{hours / 24:g} days"


def long_lived_violation(
    cid: str,
    event_id: str,
    at: datetime,
    holder: str,
    expires: datetime | None,
    th: Thresholds,
) -> Violation | None:
    """LONG_LIVED_CREDENTIAL for one issued credential, or None."""
    if expires is not None and expires - at <= th.credential_max_lifetime:
        return None
    limit = _hours(th.credential_max_lifetime)
    how = (
        "never expires"
        if expires is None
        else f"lives {_hours(expires - at)} (until {iso(expires)})"
    )
    detail = f"credential {cid} held by {holder} {how}; the limit is {limit}."
    return Violation("LONG_LIVED_CREDENTIAL", cid, event_id, at, holder, detail)


def unowned_violation(
    pid: str,
    owner: str | None,
    event_id: str,
    at: datetime,
    owner_retired: tuple[datetime, str] | None,
    agent_retired: datetime | None,
) -> Violation | None:
    """UNOWNED_AGENT for an agent's latest registration (at, event_id), or None: no owner, or
    an owner retired while the agent was not (reported when that became true)."""
    if owner is None:
        return Violation("UNOWNED_AGENT", pid, event_id, at, pid, f"agent {pid} has no owner.")
    if owner_retired is None:
        return None
    owner_at, owner_event = owner_retired
    if agent_retired is not None and agent_retired <= owner_at:
        return None
    later = owner_at > at
    return Violation(
        "UNOWNED_AGENT",
        pid,
        owner_event if later else event_id,
        owner_at if later else at,
        pid,
        f"agent {pid}'s owner {owner} was retired at {iso(owner_at)}.",
    )


def dedupe(violations: Iterable[Violation]) -> list[Violation]:
    seen: set[tuple[str, str, str, str | None]] = set()
    out = []
    for v in sorted(violations, key=Violation.sort_key):
        key = (v.kind, v.subject_id, v.event_id, v.principal_id)
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out
