"""Event builders for agent code: time-ordered ids, envelopes, one method per event type.

Agent code calls `emitter.delegation_granted(...)` instead of hand-building envelopes; the
emitter validates the result like any other event. The Kafka key rule lives here too.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

__all__ = ["KEY_FIELDS", "EventBuilders", "partition_key", "uuid7"]

R = TypeVar("R")
KEY_FIELDS = ("delegation_id", "principal_id", "credential_id", "decision_id", "action_id")

_uuid_lock = threading.Lock()
_uuid_last = [0, 0]


def uuid7() -> str:
    """A UUIDv7-style id: 48-bit Unix ms, a 12-bit counter (monotonic in one process), random."""
    with _uuid_lock:
        ms = time.time_ns() // 1_000_000
        last_ms, counter = _uuid_last
        if ms <= last_ms:
            ms, counter = last_ms, counter + 1
            if counter > 0xFFF:
                ms, counter = ms + 1, 0
        else:
            counter = secrets.randbelow(0x800)
        _uuid_last[:] = [ms, counter]
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | secrets.randbits(62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def partition_key(record: Mapping[str, Any]) -> bytes:
    """The Kafka key: the event's delegation id, else its principal id (else another id)."""
    data = record["data"]
    for name in KEY_FIELDS:
        value = data.get(name)
        if value:
            return str(value).encode()
    return str(record["event_id"]).encode()


class EventBuilders(Generic[R]):
    """One method per event type, so agent code never hand-builds envelopes."""

    def _submit(self, event: dict[str, Any]) -> R:
        raise NotImplementedError

    def _event(self, etype: str, data: dict[str, Any], envelope: dict[str, Any]) -> R:
        unknown = set(envelope) - {"event_id", "occurred_at", "producer", "trace_id", "span_id"}
        if unknown:
            raise TypeError(f"unexpected argument(s): {', '.join(sorted(unknown))}")
        return self._submit(
            {
                "event_id": envelope.get("event_id") or uuid7(),
                "type": etype,
                "occurred_at": envelope.get("occurred_at") or datetime.now(UTC),
                "producer": envelope.get("producer") or self.producer_name,
                "trace_id": envelope.get("trace_id"),
                "span_id": envelope.get("span_id"),
                "data": data,
            }
        )

    producer_name: str = "agent"

    def principal_registered(
        self,
        principal_id: str,
        *,
        kind: str,
        display_name: str | None = None,
        owner_id: str | None = None,
        model: str | None = None,
        **envelope: Any,
    ) -> R:
        data = {"principal_id": principal_id, "kind": kind, "display_name": display_name,
                "owner_id": owner_id, "model": model}  # fmt: skip
        return self._event("principal.registered", data, envelope)

    def principal_retired(
        self, principal_id: str, retired_by: str, reason: str | None = None, **envelope: Any
    ) -> R:
        data = {"principal_id": principal_id, "retired_by": retired_by, "reason": reason}
        return self._event("principal.retired", data, envelope)

    def delegation_granted(
        self,
        delegation_id: str,
        *,
        delegator_id: str,
        delegate_id: str,
        scopes: Iterable[str],
        resources: Iterable[str],
        not_before: datetime | str,
        expires_at: datetime | str,
        may_redelegate: bool = False,
        parent_delegation_id: str | None = None,
        purpose: str | None = None,
        **envelope: Any,
    ) -> R:
        data = {"delegation_id": delegation_id, "parent_delegation_id": parent_delegation_id,
                "delegator_id": delegator_id, "delegate_id": delegate_id, "scopes": list(scopes),
                "resources": list(resources), "purpose": purpose, "not_before": not_before,
                "expires_at": expires_at, "may_redelegate": may_redelegate}  # fmt: skip
        return self._event("delegation.granted", data, envelope)

    def delegation_revoked(
        self,
        delegation_id: str,
        *,
        revoked_by: str,
        reason: str | None = None,
        cascade: bool = True,
        **envelope: Any,
    ) -> R:
        data = {"delegation_id": delegation_id, "revoked_by": revoked_by, "reason": reason,
                "cascade": cascade}  # fmt: skip
        return self._event("delegation.revoked", data, envelope)

    def credential_issued(
        self,
        credential_id: str,
        *,
        principal_id: str,
        kind: str,
        scopes: Iterable[str],
        fingerprint: str,
        expires_at: datetime | str | None = None,
        delegation_id: str | None = None,
        **envelope: Any,
    ) -> R:
        data = {"credential_id": credential_id, "principal_id": principal_id,
                "delegation_id": delegation_id, "kind": kind, "scopes": list(scopes),
                "expires_at": expires_at, "fingerprint": fingerprint}  # fmt: skip
        return self._event("credential.issued", data, envelope)

    def credential_revoked(
        self, credential_id: str, revoked_by: str, reason: str | None = None, **envelope: Any
    ) -> R:
        data = {"credential_id": credential_id, "revoked_by": revoked_by, "reason": reason}
        return self._event("credential.revoked", data, envelope)

    def policy_decided(
        self,
        decision_id: str,
        *,
        principal_id: str,
        operation: str,
        resource: str,
        decision: str,
        policy_id: str,
        reasons: Iterable[str] = (),
        delegation_id: str | None = None,
        action_id: str | None = None,
        **envelope: Any,
    ) -> R:
        data = {"decision_id": decision_id, "principal_id": principal_id,
                "delegation_id": delegation_id, "action_id": action_id, "operation": operation,
                "resource": resource, "decision": decision, "policy_id": policy_id,
                "reasons": list(reasons)}  # fmt: skip
        return self._event("policy.decided", data, envelope)

    def action_performed(
        self,
        action_id: str,
        *,
        principal_id: str,
        operation: str,
        resource: str,
        outcome: str,
        delegation_id: str | None = None,
        credential_id: str | None = None,
        tool: str | None = None,
        parent_action_id: str | None = None,
        decision_id: str | None = None,
        **envelope: Any,
    ) -> R:
        data = {"action_id": action_id, "principal_id": principal_id,
                "delegation_id": delegation_id, "credential_id": credential_id, "tool": tool,
                "operation": operation, "resource": resource, "outcome": outcome,
                "parent_action_id": parent_action_id, "decision_id": decision_id}  # fmt: skip
        return self._event("action.performed", data, envelope)
