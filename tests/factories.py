"""Builders of valid events in JSON form, for tests: override only what a test is about."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 3, 23, 10, 0, tzinfo=UTC)
_counter = itertools.count()


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def at(minutes: float) -> str:
    """ISO time `minutes` after T0."""
    return iso(T0 + timedelta(minutes=minutes))


def event(etype: str, data: dict[str, Any], minutes: float = 0, **envelope: Any) -> dict[str, Any]:
    ev = {
        "event_id": envelope.pop("event_id", None)
        or str(uuid.UUID(int=next(_counter) + (1 << 100))),
        "type": etype,
        "occurred_at": envelope.pop("occurred_at", None) or at(minutes),
        "producer": envelope.pop("producer", "test"),
        "trace_id": envelope.pop("trace_id", None),
        "span_id": envelope.pop("span_id", None),
        "data": data,
    }
    assert not envelope, envelope
    return ev


def principal(
    pid: str, kind: str = "agent", owner: str | None = "user:alice", minutes: float = -60, **kw: Any
) -> dict[str, Any]:
    data = {
        "principal_id": pid,
        "kind": kind,
        "display_name": kw.pop("display_name", None),
        "owner_id": owner if kind == "agent" else kw.pop("owner_id", None),
        "model": kw.pop("model", None),
    }
    return event("principal.registered", data, minutes, **kw)


def retired(pid: str, by: str = "user:admin", minutes: float = 0, **kw: Any) -> dict[str, Any]:
    return event(
        "principal.retired", {"principal_id": pid, "retired_by": by, "reason": None}, minutes, **kw
    )


def granted(
    did: str,
    delegator: str,
    delegate: str,
    parent: str | None = None,
    scopes: list[str] | None = None,
    resources: list[str] | None = None,
    start: float = 0,
    end: float = 60,
    may_redelegate: bool = True,
    minutes: float | None = None,
    **kw: Any,
) -> dict[str, Any]:
    data = {
        "delegation_id": did,
        "parent_delegation_id": parent,
        "delegator_id": delegator,
        "delegate_id": delegate,
        "scopes": scopes if scopes is not None else ["crm:read"],
        "resources": resources if resources is not None else ["crm/*"],
        "purpose": kw.pop("purpose", None),
        "not_before": at(start),
        "expires_at": at(end),
        "may_redelegate": may_redelegate,
    }
    return event("delegation.granted", data, start if minutes is None else minutes, **kw)


def revoked(
    did: str, by: str = "user:alice", cascade: bool = True, minutes: float = 0, **kw: Any
) -> dict[str, Any]:
    return event(
        "delegation.revoked",
        {"delegation_id": did, "revoked_by": by, "reason": None, "cascade": cascade},
        minutes,
        **kw,
    )


def credential(
    cid: str,
    holder: str,
    delegation: str | None = None,
    expires: float | None = 30,
    kind: str = "token",
    minutes: float = 0,
    **kw: Any,
) -> dict[str, Any]:
    data = {
        "credential_id": cid,
        "principal_id": holder,
        "delegation_id": delegation,
        "kind": kind,
        "scopes": kw.pop("scopes", ["crm:read"]),
        "expires_at": None if expires is None else at(expires),
        "fingerprint": "sha256:abcd",
    }
    return event("credential.issued", data, minutes, **kw)


def credential_revoked(
    cid: str, by: str = "user:admin", minutes: float = 0, **kw: Any
) -> dict[str, Any]:
    return event(
        "credential.revoked",
        {"credential_id": cid, "revoked_by": by, "reason": None},
        minutes,
        **kw,
    )


def decided(
    dec_id: str,
    actor: str,
    decision: str = "allow",
    action: str | None = None,
    delegation: str | None = None,
    operation: str = "crm:read",
    resource: str = "crm/accounts/1",
    minutes: float = 1,
    **kw: Any,
) -> dict[str, Any]:
    data = {
        "decision_id": dec_id,
        "principal_id": actor,
        "delegation_id": delegation,
        "action_id": action,
        "operation": operation,
        "resource": resource,
        "decision": decision,
        "policy_id": kw.pop("policy_id", "policy-1"),
        "reasons": [],
    }
    return event("policy.decided", data, minutes, **kw)


def action(
    aid: str,
    actor: str,
    delegation: str | None = None,
    operation: str = "crm:read",
    resource: str = "crm/accounts/1",
    outcome: str = "succeeded",
    minutes: float = 2,
    credential_id: str | None = None,
    decision: str | None = None,
    parent: str | None = None,
    tool: str | None = None,
    **kw: Any,
) -> dict[str, Any]:
    data = {
        "action_id": aid,
        "principal_id": actor,
        "delegation_id": delegation,
        "credential_id": credential_id,
        "tool": tool,
        "operation": operation,
        "resource": resource,
        "outcome": outcome,
        "parent_action_id": parent,
        "decision_id": decision,
    }
    return event("action.performed", data, minutes, **kw)
