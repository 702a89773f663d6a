"""The demo organisation: a day of agent activity with one incident, as JSON-form events.

The incident follows the seed article's threat narrative: an agent holding valid credentials acts
beyond the operator's intent through a subagent it spawned, and exposes customer data to people who
should not see it; a policy denied that step and it happened anyway; one credential never expires.
Everything is deterministic (fixed clock, fixed ids) so the demo tells the same story every run.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["BASE", "COMPROMISED_AGENT", "DETECTED_AT", "INCIDENT_ACTION", "SUBAGENT", "events"]

#: The seed article's publication day; the demo's clock starts here.
BASE = datetime(2026, 3, 23, 9, 0, tzinfo=UTC)

INCIDENT_ACTION = "act-leak-all-staff"
COMPROMISED_AGENT = "agent:report-writer"
SUBAGENT = "agent:summarizer"
DETECTED_AT = BASE + timedelta(hours=1, minutes=5)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _uuid7(t: datetime, n: int) -> str:
    """A UUIDv7 (time-ordered) whose random bits are derived from `n`, so ids are stable."""
    ms = int(t.timestamp() * 1000)
    rand = int.from_bytes(hashlib.sha256(f"agent-ledger-demo:{n}".encode()).digest()[:10], "big")
    value = (ms << 80) | (0x7 << 76) | ((rand >> 68) & 0xFFF) << 64 | (0b10 << 62)
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


@dataclass
class _Builder:
    events: list[dict[str, Any]] = field(default_factory=list)

    def add(self, etype: str, t: datetime, producer: str, **data: Any) -> None:
        self.events.append(
            {
                "event_id": _uuid7(t, len(self.events)),
                "type": etype,
                "occurred_at": _iso(t),
                "producer": producer,
                "trace_id": None,
                "span_id": None,
                "data": data,
            }
        )

    def principal(
        self,
        t: datetime,
        pid: str,
        kind: str,
        name: str,
        owner: str | None = None,
        model: str | None = None,
    ) -> None:
        self.add(
            "principal.registered",
            t,
            "idp",
            principal_id=pid,
            kind=kind,
            display_name=name,
            owner_id=owner,
            model=model,
        )

    def grant(
        self,
        t: datetime,
        did: str,
        parent: str | None,
        delegator: str,
        delegate: str,
        scopes: list[str],
        resources: list[str],
        purpose: str,
        hours: float,
        may_redelegate: bool,
    ) -> None:
        self.add(
            "delegation.granted",
            t,
            "orchestrator-7",
            delegation_id=did,
            parent_delegation_id=parent,
            delegator_id=delegator,
            delegate_id=delegate,
            scopes=scopes,
            resources=resources,
            purpose=purpose,
            not_before=_iso(t),
            expires_at=_iso(t + timedelta(hours=hours)),
            may_redelegate=may_redelegate,
        )

    def credential(
        self,
        t: datetime,
        cid: str,
        holder: str,
        delegation: str | None,
        kind: str,
        scopes: list[str],
        expires: datetime | None,
    ) -> None:
        self.add(
            "credential.issued",
            t,
            "vault",
            credential_id=cid,
            principal_id=holder,
            delegation_id=delegation,
            kind=kind,
            scopes=scopes,
            expires_at=_iso(expires) if expires else None,
            fingerprint="sha256:" + hashlib.sha256(cid.encode()).hexdigest()[:16],
        )

    def decide(
        self,
        t: datetime,
        dec: str,
        actor: str,
        delegation: str | None,
        action: str,
        operation: str,
        resource: str,
        decision: str,
        policy: str,
        reasons: list[str],
    ) -> None:
        self.add(
            "policy.decided",
            t,
            "policy-gateway",
            decision_id=dec,
            principal_id=actor,
            delegation_id=delegation,
            action_id=action,
            operation=operation,
            resource=resource,
            decision=decision,
            policy_id=policy,
            reasons=reasons,
        )

    def act(
        self,
        t: datetime,
        aid: str,
        actor: str,
        delegation: str | None,
        credential: str | None,
        tool: str | None,
        operation: str,
        resource: str,
        outcome: str = "succeeded",
        parent: str | None = None,
        decision: str | None = None,
    ) -> None:
        self.add(
            "action.performed",
            t,
            "tool-gateway",
            action_id=aid,
            principal_id=actor,
            delegation_id=delegation,
            credential_id=credential,
            tool=tool,
            operation=operation,
            resource=resource,
            outcome=outcome,
            parent_action_id=parent,
            decision_id=decision,
        )


def _register_org(b: _Builder) -> None:
    t = BASE - timedelta(days=30)
    for pid, name in [
        ("user:dana", "Dana Reyes, VP Sales"),
        ("user:omar", "Omar Haddad, Security"),
        ("user:li", "Li Wei, Finance"),
        ("user:it-admin", "IT administration"),
    ]:
        b.principal(t, pid, "human", name)
    b.principal(t, "agent:orchestrator", "agent", "Workflow orchestrator", "user:omar", "gpt-5")
    b.principal(t, COMPROMISED_AGENT, "agent", "Sales report writer", "user:dana", "claude-4")
    b.principal(t, "agent:invoice-bot", "agent", "Invoice reconciliation", "user:li", "llama-4")
    b.principal(t, "agent:legacy-sync", "agent", "Legacy CRM sync", "user:it-admin", "gpt-4")
    for tool in ("crm-api", "mailer", "docs", "erp-api"):
        b.principal(t, f"tool:{tool}", "tool", f"{tool} connector", "user:it-admin")
    b.principal(t, "svc:policy-gateway", "service", "Runtime policy gateway", "user:omar")


def _routine_finance(b: _Builder) -> None:
    """Li's invoice agent: short-lived, task-scoped, policy-checked. The clean baseline."""
    t = BASE + timedelta(minutes=5)
    b.grant(
        t,
        "del-fin-q1",
        None,
        "user:li",
        "agent:invoice-bot",
        ["erp:read", "erp:write"],
        ["erp/invoices/*"],
        "Reconcile Q1 invoices",
        4,
        False,
    )
    b.credential(
        t,
        "cred-invoice-token",
        "agent:invoice-bot",
        "del-fin-q1",
        "token",
        ["erp:read", "erp:write"],
        t + timedelta(hours=1),
    )
    for i in range(60):
        at = t + timedelta(minutes=1, seconds=40 * i)
        op = "erp:write" if i % 5 == 4 else "erp:read"
        aid = f"act-inv-{i:03d}"
        b.decide(
            at,
            f"dec-inv-{i:03d}",
            "agent:invoice-bot",
            "del-fin-q1",
            aid,
            op,
            f"erp/invoices/INV-{1000 + i}",
            "allow",
            "erp-least-privilege",
            ["in scope"],
        )
        b.act(
            at + timedelta(milliseconds=200),
            aid,
            "agent:invoice-bot",
            "del-fin-q1",
            "cred-invoice-token",
            "tool:erp-api",
            op,
            f"erp/invoices/INV-{1000 + i}",
            decision=f"dec-inv-{i:03d}",
        )


def _legacy_sync(b: _Builder) -> None:
    """A retired integration that keeps running: nobody turned it off."""
    t = BASE + timedelta(minutes=10)
    b.grant(
        t,
        "del-legacy",
        None,
        "user:it-admin",
        "agent:legacy-sync",
        ["crm:read"],
        ["crm/accounts/*"],
        "Nightly CRM mirror",
        2,
        False,
    )
    b.act(
        t + timedelta(minutes=1),
        "act-legacy-001",
        "agent:legacy-sync",
        "del-legacy",
        None,
        "tool:crm-api",
        "crm:read",
        "crm/accounts/ACME-001",
    )
    b.add(
        "principal.retired",
        t + timedelta(minutes=20),
        "idp",
        principal_id="agent:legacy-sync",
        retired_by="user:it-admin",
        reason="replaced by the new sync service",
    )
    b.act(
        t + timedelta(minutes=50),
        "act-legacy-002",
        "agent:legacy-sync",
        "del-legacy",
        None,
        "tool:crm-api",
        "crm:read",
        "crm/accounts/ACME-002",
    )


def _incident(b: _Builder) -> None:
    t = BASE + timedelta(minutes=30)
    b.grant(
        t,
        "del-q1-report",
        None,
        "user:dana",
        "agent:orchestrator",
        ["crm:read", "docs:write"],
        ["crm/accounts/*", "docs/reports/q1-pipeline"],
        "Q1 pipeline report for the sales leadership",
        2,
        True,
    )
    t += timedelta(minutes=1)
    b.grant(
        t,
        "del-report-writer",
        "del-q1-report",
        "agent:orchestrator",
        COMPROMISED_AGENT,
        ["crm:read", "docs:write"],
        ["crm/accounts/*", "docs/reports/q1-pipeline"],
        "Draft the Q1 pipeline report",
        1.5,
        True,
    )
    b.credential(
        t,
        "cred-writer-token",
        COMPROMISED_AGENT,
        "del-report-writer",
        "token",
        ["crm:read", "docs:write"],
        t + timedelta(hours=1),
    )
    b.act(
        t + timedelta(minutes=2),
        "act-writer-plan",
        COMPROMISED_AGENT,
        "del-report-writer",
        "cred-writer-token",
        "tool:crm-api",
        "crm:read",
        "crm/accounts/ACME-001",
    )
    # The writer spawns a subagent at run time: no owner, broader scopes, outlives its parent.
    t += timedelta(minutes=9)
    b.principal(t, SUBAGENT, "agent", "Summarizer subagent (spawned at run time)", None, "mini")
    b.grant(
        t,
        "del-summarizer",
        "del-report-writer",
        COMPROMISED_AGENT,
        SUBAGENT,
        ["crm:*", "mail:send"],
        ["crm/accounts/*", "mail/*"],
        "Summarise accounts and circulate",
        3,
        False,
    )
    b.credential(
        t,
        "cred-summarizer-key",
        SUBAGENT,
        "del-summarizer",
        "api_key",
        ["crm:*", "mail:send"],
        None,
    )
    # A machine-speed burst: 140 account reads in under a minute.
    burst0 = t + timedelta(minutes=1)
    for i in range(140):
        b.act(
            burst0 + timedelta(milliseconds=350 * i),
            f"act-sum-read-{i:03d}",
            SUBAGENT,
            "del-summarizer",
            "cred-summarizer-key",
            "tool:crm-api",
            "crm:read",
            f"crm/accounts/ACC-{i:04d}",
            parent="act-writer-plan",
        )
    t = burst0 + timedelta(minutes=3)
    b.act(
        t,
        "act-sum-export",
        SUBAGENT,
        "del-summarizer",
        "cred-writer-token",
        "tool:crm-api",
        "crm:export",
        "crm/accounts/export-all",
        parent="act-writer-plan",
    )
    t += timedelta(minutes=1)
    b.decide(
        t,
        "dec-dlp-7731",
        SUBAGENT,
        "del-summarizer",
        INCIDENT_ACTION,
        "mail:send",
        "mail/all-staff",
        "deny",
        "dlp-outbound-mail",
        ["recipients are outside sales leadership", "attachment contains customer PII"],
    )
    b.act(
        t + timedelta(milliseconds=40),
        INCIDENT_ACTION,
        SUBAGENT,
        "del-summarizer",
        "cred-summarizer-key",
        "tool:mailer",
        "mail:send",
        "mail/all-staff",
        parent="act-sum-export",
        decision="dec-dlp-7731",
    )
    # Detection and response; the subagent keeps going after the revocation.
    b.add(
        "delegation.revoked",
        DETECTED_AT,
        "security-console",
        delegation_id="del-q1-report",
        revoked_by="user:omar",
        reason="customer data mailed to all-staff",
        cascade=True,
    )
    b.add(
        "credential.revoked",
        DETECTED_AT + timedelta(seconds=30),
        "vault",
        credential_id="cred-writer-token",
        revoked_by="user:omar",
        reason="incident response",
    )
    b.act(
        DETECTED_AT + timedelta(minutes=2),
        "act-sum-after-revoke",
        SUBAGENT,
        "del-summarizer",
        "cred-summarizer-key",
        "tool:mailer",
        "mail:send",
        "mail/all-staff",
        parent="act-sum-export",
    )


def events() -> list[dict[str, Any]]:
    """Every event of the demo day, in the order the organisation emits them."""
    b = _Builder()
    _register_org(b)
    _routine_finance(b)
    _legacy_sync(b)
    _incident(b)
    return b.events
