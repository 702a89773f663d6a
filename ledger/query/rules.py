"""The authority rules of DESIGN.md, evaluated at event time (`occurred_at`), never arrival order.

Action- and delegation-level rules are decided by the Python functions `action_violations` and
`delegation_violations` over one "facts" row each; the full scan (`ledger.scans`) gathers those
rows with SQL joins (pre-filtered by the same predicates written in SQL), `trace` (`ledger.custody`)
with point lookups, so both paths give the same answer.

Semantics chosen where the design is silent:
- Resource patterns are fnmatch globs (DuckDB GLOB): `*` matches any run of characters
  *including* `/` (so `crm/*` covers `crm/accounts/1`), `?` one character, `[..]`/`[!..]` sets.
- A delegation's effective revocation time is the earliest of its own revocations and every
  `cascade` revocation of an ancestor; `cascade=false` revokes only that delegation.
- Unregistered actors are treated as non-human (NO_DELEGATION applies); an action citing a
  delegation the ledger does not hold is NO_DELEGATION too, and one citing a credential the
  ledger never issued (or issued after the action) is CREDENTIAL_MISUSE.
- UNKNOWN_PRINCIPAL: one per principal id named as actor, delegator, delegate, credential holder,
  agent owner, decision principal or retiree that no `principal.registered` event ever names,
  reported at its earliest mention. `revoked_by`/`retired_by` are not checked.
- SCOPE_ESCALATION also covers a child whose resource patterns are not each matched by one of
  its parent's (the child pattern read as a literal string against the parent globs).
- BURST: one violation per episode: the first action at which a principal has more than N actions
  in the half-open window (t - W, t]; a new episode starts W after the last over-limit action.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Any
from uuid import UUID

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
)
ACTION_KINDS = frozenset(
    {
        "NO_DELEGATION",
        "NOT_DELEGATE",
        "OUT_OF_SCOPE",
        "RESOURCE_OUT_OF_SCOPE",
        "EXPIRED_DELEGATION",
        "REVOKED_DELEGATION",
        "RETIRED_PRINCIPAL",
        "DENIED_BUT_EXECUTED",
        "CREDENTIAL_MISUSE",
    }
)
DELEGATION_KINDS = frozenset({"SCOPE_ESCALATION", "REDELEGATION_NOT_ALLOWED", "RETIRED_PRINCIPAL"})


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
    """The tunable limits of LONG_LIVED_CREDENTIAL and BURST."""

    credential_max_lifetime: timedelta = timedelta(hours=24)
    burst_actions: int = 100
    burst_window: timedelta = timedelta(seconds=60)


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


def resource_covers(patterns: Iterable[str], resource: str) -> bool:
    return any(fnmatchcase(resource, p) for p in patterns)


def scope_covers_sql(scopes: str, op: str, var: str = "s") -> str:
    return (
        f"(len(list_filter({scopes}, lambda {var}: {var} = '*' OR {var} = {op} OR "
        f"(ends_with({var}, ':*') AND starts_with({op}, left({var}, length({var}) - 1))))) > 0)"
    )


def resource_covers_sql(patterns: str, resource: str, var: str = "pat") -> str:
    return f"(len(list_filter({patterns}, lambda {var}: {resource} GLOB {var})) > 0)"


def escalated_scopes(child: Sequence[str], parent: Sequence[str]) -> list[str]:
    return [s for s in child if not scope_covers(parent, s)]


def widened_resources(child: Sequence[str], parent: Sequence[str]) -> list[str]:
    return [r for r in child if not resource_covers(parent, r)]


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
    "actor_kind",
    "has_delegation",
    "delegate_id",
    "scopes",
    "resources",
    "not_before",
    "expires_at",
    "revoked_at",
    "revoked_via",
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


def action_violations(f: Mapping[str, Any]) -> list[Violation]:
    """Every action-level violation of one action, from its facts row."""
    out: list[Violation] = []
    aid, actor, t = f["action_id"], f["principal_id"], f["occurred_at"]
    did = f["delegation_id"]

    def add(kind: str, detail: str, hop: str | None = None) -> None:
        out.append(Violation(kind, aid, f["event_id"], t, actor, detail, hop))

    if did is None:
        if f["actor_kind"] != "human":
            what = f["actor_kind"] or "unregistered principal"
            add("NO_DELEGATION", f"{actor} ({what}) performed {f['operation']} with no delegation.")
    elif not f["has_delegation"]:
        add("NO_DELEGATION", f"{actor} cited delegation {did}, which the ledger does not hold.")
    else:
        if f["delegate_id"] != actor:
            add(
                "NOT_DELEGATE",
                f"{actor} acted under {did}, which was granted to {f['delegate_id']}.",
                did,
            )
        if not scope_covers(f["scopes"], f["operation"]):
            add(
                "OUT_OF_SCOPE",
                f"{f['operation']} is not covered by {did}'s scopes {f['scopes']}.",
                did,
            )
        if not resource_covers(f["resources"], f["resource"]):
            add(
                "RESOURCE_OUT_OF_SCOPE",
                f"{f['resource']} matches none of {did}'s resources {f['resources']}.",
                did,
            )
        if not f["not_before"] <= t < f["expires_at"]:
            add(
                "EXPIRED_DELEGATION",
                f"acted at {iso(t)}, outside {did}'s window "
                f"[{iso(f['not_before'])}, {iso(f['expires_at'])}).",
                did,
            )
        if _before_or_at(f["revoked_at"], t):
            via = f["revoked_via"]
            how = "" if via == did else f" through its ancestor {via}"
            add(
                "REVOKED_DELEGATION",
                f"acted under {did} after it was revoked{how} at {iso(f['revoked_at'])}.",
                via,
            )
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

DELEGATION_FACT_COLUMNS = (
    "delegation_id",
    "event_id",
    "occurred_at",
    "parent_delegation_id",
    "delegator_id",
    "delegate_id",
    "scopes",
    "resources",
    "expires_at",
    "has_parent",
    "par_scopes",
    "par_resources",
    "par_expires",
    "par_may_redelegate",
    "par_delegate",
    "delegator_retired_at",
    "delegate_retired_at",
)


def delegation_violations(f: Mapping[str, Any]) -> list[Violation]:
    """Every grant-level violation of one delegation, from its facts row."""
    out: list[Violation] = []
    did, t, who = f["delegation_id"], f["occurred_at"], f["delegator_id"]
    parent = f["parent_delegation_id"]

    def add(kind: str, detail: str, principal: str | None = who) -> None:
        out.append(Violation(kind, did, f["event_id"], t, principal, detail, did))

    if f["has_parent"]:
        extra = escalated_scopes(f["scopes"], f["par_scopes"])
        wider = widened_resources(f["resources"], f["par_resources"])
        if extra:
            add("SCOPE_ESCALATION", f"{did} grants scopes {extra} not held by parent {parent}.")
        elif wider:
            add("SCOPE_ESCALATION", f"{did} grants resources {wider} beyond parent {parent}.")
        elif f["expires_at"] > f["par_expires"]:
            add(
                "SCOPE_ESCALATION",
                f"{did} expires at {iso(f['expires_at'])}, after parent {parent} "
                f"({iso(f['par_expires'])}).",
            )
        if not f["par_may_redelegate"]:
            add("REDELEGATION_NOT_ALLOWED", f"{did} re-delegates {parent}, which forbids it.")
        elif f["par_delegate"] != who:
            add(
                "REDELEGATION_NOT_ALLOWED",
                f"{who} re-delegated {parent}, which was granted to {f['par_delegate']}.",
            )
    if _before_or_at(f["delegator_retired_at"], t):
        add("RETIRED_PRINCIPAL", f"{who} granted {did} after being retired.")
    if _before_or_at(f["delegate_retired_at"], t):
        add(
            "RETIRED_PRINCIPAL",
            f"{did} delegates to {f['delegate_id']}, already retired.",
            f["delegate_id"],
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
