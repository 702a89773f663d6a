"""Chain of custody: who authorized an action, hop by hop up to the root grant.

One indexed point lookup per hop (a recursive CTE scans the whole table once per level), one
round trip for the action's decisions, credential, the actor's subagents and recent activity,
and the small tables (principals, retirements, revocations) from the Ledger's in-memory
snapshot. The chain is followed to its root however deep (`authority.resolve_chain`), and the
violations are decided by the same evaluator `violations()` uses (`authority`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger.errors import NotFoundError
from ledger.query import rules, scans
from ledger.query.authority import (
    Chain,
    Grant,
    action_violations,
    as_violations,
    credential_findings,
    grant_findings,
    resolve_chain,
)
from ledger.query.facts import LedgerFacts
from ledger.query.rules import Thresholds, Violation, iso, jsonable
from ledger.query.snapshot import Snapshot

__all__ = ["Hop", "Trace", "principal_level", "side_facts", "trace"]

_SIDE_SQL = """
SELECT 'dec', decision_id, decision, policy_id, principal_id, occurred_at, NULL, event_id, NULL
FROM decisions WHERE action_id = $aid
UNION ALL
SELECT 'dec', decision_id, decision, policy_id, principal_id, occurred_at, NULL, event_id, NULL
FROM decisions WHERE decision_id = $did
UNION ALL
SELECT 'cred', credential_id, principal_id, delegation_id, NULL, occurred_at, expires_at, event_id,
    NULL
FROM credentials WHERE credential_id = $cid
UNION ALL
SELECT 'sub', delegation_id, delegate_id, NULL, NULL, occurred_at, NULL, event_id, NULL
FROM delegations WHERE delegator_id = $actor
UNION ALL
SELECT 'near', NULL, NULL, NULL, NULL, NULL, NULL, NULL, count(*)
FROM actions WHERE principal_id = $actor AND occurred_at > $lo AND occurred_at < $hi
"""


@dataclass(slots=True)
class _Side:
    decisions: list[dict[str, Any]] = field(default_factory=list)
    cred: dict[str, Any] | None = None
    cred_revoked: datetime | None = None
    people: dict[str, dict[str, Any]] = field(default_factory=dict)
    near: int = 0
    subagents: list[Any] = field(default_factory=list)


@dataclass(slots=True)
class Hop:
    """One delegation in a chain, from the action's own delegation up to the root grant."""

    delegation_id: str
    parent_delegation_id: str | None
    delegator_id: str
    delegate_id: str
    scopes: list[str]
    resources: list[str]
    purpose: str | None
    not_before: datetime
    expires_at: datetime
    may_redelegate: bool
    granted_at: datetime
    revoked_at: datetime | None
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "delegation_id": self.delegation_id,
            "delegator_id": self.delegator_id,
            "delegate_id": self.delegate_id,
            "scopes": self.scopes,
            "resources": self.resources,
            "not_before": iso(self.not_before),
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
            "problems": self.problems,
            "parent_delegation_id": self.parent_delegation_id,
            "may_redelegate": self.may_redelegate,
            "purpose": self.purpose,
            "granted_at": iso(self.granted_at),
        }


@dataclass(slots=True)
class Trace:
    """Who authorized an action: the chain of custody and everything wrong along it."""

    action: dict[str, Any]
    chain: list[Hop]
    root_principal: str | None
    accountable: dict[str, str | None]
    violations: list[Violation]
    subagents: list[dict[str, str]]
    chain_complete: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": jsonable(self.action),
            "chain": [h.to_dict() for h in self.chain],
            "root_principal": self.root_principal,
            "accountable": self.accountable,
            "violations": [v.to_dict() for v in self.violations],
            "subagents": self.subagents,
            "chain_complete": self.chain_complete,
        }


def trace(snap: Snapshot, action_id: str, thresholds: Thresholds | None = None) -> Trace:
    """The action, its delegation chain up to the root grant (however deep), who is
    accountable, and every violation found on the action, on each hop, its credential and
    its actor: the same findings `violations()` reports for them (`authority` decides both).

    Raises `NotFoundError` when no action has that id."""
    th = thresholds or Thresholds()
    snap.point_lookups()
    act = _load_action(snap, action_id)
    facts = LedgerFacts(snap)
    did = act["delegation_id"]
    chain = resolve_chain(facts, did) if did is not None else None
    side = side_facts(snap, act, chain.hops if chain is not None else (), th)
    violations = _findings(snap, facts, th, act, chain, side)
    return _assemble(act, chain, facts, side, violations)


def _load_action(snap: Snapshot, action_id: str) -> dict[str, Any]:
    """The action's row (its earliest entry); `NotFoundError` when there is none."""
    act = snap.one("SELECT * FROM actions WHERE action_id = ?", [action_id])
    if act is None:
        raise NotFoundError(f"no action {action_id!r} in the ledger")
    return act


def _findings(
    snap: Snapshot,
    facts: LedgerFacts,
    th: Thresholds,
    act: dict[str, Any],
    chain: Chain | None,
    side: _Side,
) -> list[Violation]:
    """Everything wrong with the action, each hop of its chain, its credential and its
    actor, deduplicated and in `rules.dedupe` order."""
    found = action_violations(facts, _action_row(act, side), th, chain)
    found += _hop_violations(facts, chain.hops if chain is not None else (), side.people, th)
    found += _credential_violations(facts, side.cred)
    found += principal_level(snap, th, act, side.cred, side.people, side.near)
    return rules.dedupe(found)


def _action_row(act: dict[str, Any], side: _Side) -> dict[str, Any]:
    """The action facts row (`rules.ACTION_FACT_COLUMNS`) the full scan also builds."""
    cred = side.cred
    denied = sorted(d["decision_id"] for d in side.decisions if d["decision"] == "deny")
    return {
        **{k: act[k] for k in ("action_id", "event_id", "occurred_at", "principal_id")},
        **{k: act[k] for k in ("delegation_id", "credential_id", "operation", "resource")},
        "outcome": act["outcome"],
        "retired_at": side.people.get(act["principal_id"], {}).get("retired_at"),
        "denied_by": denied[0] if denied else None,
        "has_credential": cred is not None,
        "holder": cred and cred["principal_id"],
        "cred_issued": cred and cred["occurred_at"],
        "cred_expires": cred and cred["expires_at"],
        "cred_revoked": side.cred_revoked,
    }


def _hop_violations(
    facts: LedgerFacts,
    hops: Sequence[Grant],
    people: dict[str, dict[str, Any]],
    th: Thresholds,
) -> list[Violation]:
    """Each hop judged as a grant, exactly as the full scan judges it."""
    out: list[Violation] = []
    for hop in hops:
        did = hop.delegation_id
        found = grant_findings(facts, hop, resolve_chain(facts, did), th)
        out += as_violations(found, did, hop.event_id, hop.granted_at, hop.delegator_id)
        out += rules.grant_retirement_violations(
            did,
            hop.event_id,
            hop.granted_at,
            hop.delegator_id,
            hop.delegate_id,
            people.get(hop.delegator_id, {}).get("retired_at"),
            people.get(hop.delegate_id, {}).get("retired_at"),
        )
    return out


def _credential_violations(facts: LedgerFacts, cred: dict[str, Any] | None) -> list[Violation]:
    """The findings on the action's credential as issued (under its own delegation)."""
    if cred is None:
        return []
    return as_violations(
        credential_findings(
            facts, cred["credential_id"], cred["delegation_id"], cred["occurred_at"]
        ),
        cred["credential_id"],
        cred["event_id"],
        cred["occurred_at"],
        cred["principal_id"],
    )


def _hop_revocations(facts: LedgerFacts, hops: Sequence[Grant]) -> list[datetime | None]:
    """Per hop: the earliest revocation that reaches it (its own, or a cascading one above)."""
    out: list[datetime | None] = []
    for i in range(len(hops)):
        times = [
            rev.at
            for j in range(i, len(hops))
            for rev in facts.revocations(hops[j].delegation_id)
            if j == i or rev.cascade
        ]
        out.append(min(times) if times else None)
    return out


def _assemble(
    act: dict[str, Any],
    chain: Chain | None,
    facts: LedgerFacts,
    side: _Side,
    violations: list[Violation],
) -> Trace:
    """The verdict: the chain as `Hop`s, who is accountable, the findings, the subagents."""
    root = chain.root if chain is not None else None
    root_id = root.delegator_id if root else None
    return Trace(
        action={k: v for k, v in act.items() if k != "seq"},
        chain=_hops(chain.hops if chain is not None else (), facts, violations),
        root_principal=root_id,
        accountable=_accountable(act, root_id, side),
        violations=violations,
        subagents=[{"delegation_id": d, "delegate_id": p} for _, d, p in side.subagents],
        chain_complete=chain is None or chain.complete,
    )


def _hops(hops: Sequence[Grant], facts: LedgerFacts, violations: list[Violation]) -> list[Hop]:
    """Each grant of the chain with the revocation that reaches it and the kinds found on it;
    the action's own delegation also shows a REVOKED_DELEGATION that came from above."""
    revoked = _hop_revocations(facts, hops)
    first = hops[0].delegation_id if hops else None
    revoked_first = any(v.kind == "REVOKED_DELEGATION" for v in violations)
    return [
        _hop(
            hop,
            facts.snap.delegation(hop.delegation_id) or {},
            revoked[i],
            {v.kind for v in violations if v.hop == hop.delegation_id}
            | ({"REVOKED_DELEGATION"} if hop.delegation_id == first and revoked_first else set()),
        )
        for i, hop in enumerate(hops)
    ]


def _hop(hop: Grant, row: dict[str, Any], revoked_at: datetime | None, problems: set[str]) -> Hop:
    return Hop(
        delegation_id=hop.delegation_id,
        parent_delegation_id=hop.parent_id,
        delegator_id=hop.delegator_id,
        delegate_id=hop.delegate_id,
        scopes=list(hop.scopes),
        resources=list(hop.resources),
        purpose=row.get("purpose"),
        not_before=hop.not_before,
        expires_at=hop.expires_at,
        may_redelegate=hop.may_redelegate,
        granted_at=hop.granted_at,
        revoked_at=revoked_at,
        problems=sorted(problems),
    )


def _accountable(act: dict[str, Any], root: str | None, side: _Side) -> dict[str, str | None]:
    """Who answers for the action: the root delegator, the actor's owner, and the policy of
    the action's own decision (else of the first decision found about it)."""
    decisions = side.decisions
    policy = next((d for d in decisions if d["decision_id"] == act["decision_id"]), None)
    policy = policy or (decisions[0] if decisions else None)
    return {
        "root_delegator": root,
        "actor_owner": side.people.get(act["principal_id"], {}).get("owner_id"),
        "policy_id": policy["policy_id"] if policy else None,
    }


def side_facts(
    snap: Snapshot, act: dict[str, Any], chain: Sequence[Grant], th: Thresholds
) -> _Side:
    """Everything trace needs besides the chain: the action's decisions and credential, the
    actor's subagents and how many actions it took within one burst window of this one (one
    round trip), plus the principals and the credential's revocation from the in-memory
    small tables."""
    w = th.burst_window
    params = {
        "aid": act["action_id"],
        "did": act["decision_id"] or "",
        "cid": act["credential_id"] or "",
        "actor": act["principal_id"],
        "lo": act["occurred_at"] - w,
        "hi": act["occurred_at"] + w,
    }
    side = _Side()
    small = snap.small()
    cred_rows = _sort_side_rows(side, snap.con.execute(_SIDE_SQL, params).fetchall())
    names = {act["principal_id"]}
    for hop in chain:
        names.update((hop.delegator_id, hop.delegate_id))
    if cred_rows:
        side.cred = min(cred_rows, key=lambda c: (c["occurred_at"], c["event_id"]))
        names.add(side.cred["principal_id"])
        side.cred_revoked = small.cred_revoked.get(side.cred["credential_id"])
    names.update(d["principal_id"] for d in side.decisions)
    side.people = snap.people(names)
    side.subagents.sort()
    return side


def _sort_side_rows(side: _Side, rows: Iterable[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """File the rows of `_SIDE_SQL` into `side` (each decision once, subagents, the count
    near the action); returns the credential rows for the caller to pick the earliest."""
    cred_rows: list[dict[str, Any]] = []
    for src, id_, s1, s2, s3, t1, t2, ev, n in rows:
        if src == "dec":
            if all(d["decision_id"] != id_ for d in side.decisions):
                side.decisions.append(
                    {"decision_id": id_, "decision": s1, "policy_id": s2, "principal_id": s3}
                )
        elif src == "cred":
            cred_rows.append(
                {
                    "credential_id": id_,
                    "principal_id": s1,
                    "delegation_id": s2,
                    "occurred_at": t1,
                    "expires_at": t2,
                    "event_id": ev,
                }
            )
        elif src == "sub":
            side.subagents.append((t1, id_, s1))
        elif src == "near":
            side.near = int(n)
    return cred_rows


def principal_level(
    snap: Snapshot,
    th: Thresholds,
    act: dict[str, Any],
    cred: dict[str, Any] | None,
    people: dict[str, dict[str, Any]],
    near: int,
) -> list[Violation]:
    """LONG_LIVED_CREDENTIAL, UNOWNED_AGENT, UNKNOWN_PRINCIPAL and BURST around one action.

    Each is pre-checked from facts already at hand (or one narrow count) and only then
    confirmed by the same SQL `violations()` runs, so trace reports identical objects.
    """
    out = _long_lived(cred, th)
    out += _unowned(snap, act["principal_id"])
    missing = sorted(n for n, p in people.items() if p["registered"] is False)
    if missing:
        out += scans.unknown(snap.con, missing)
    out += _burst(snap, th, act, near)
    return out


def _long_lived(cred: dict[str, Any] | None, th: Thresholds) -> list[Violation]:
    """LONG_LIVED_CREDENTIAL of the action's credential, if it has one."""
    if cred is None:
        return []
    v = rules.long_lived_violation(
        cred["credential_id"],
        cred["event_id"],
        cred["occurred_at"],
        cred["principal_id"],
        cred["expires_at"],
        th,
    )
    return [v] if v is not None else []


def _unowned(snap: Snapshot, actor: str) -> list[Violation]:
    """UNOWNED_AGENT of the actor, judged on its latest registration, if that is an agent's."""
    small = snap.small()
    reg = small.regs.get(actor)
    if reg is None or reg[0] != "agent":
        return []
    owner = reg[1]
    owner_retired = (
        (small.retired[owner], small.retired_event[owner])
        if owner is not None and owner in small.retired
        else None
    )
    v = rules.unowned_violation(
        actor, owner, reg[3], reg[2], owner_retired, small.retired.get(actor)
    )
    return [v] if v is not None else []


def _burst(snap: Snapshot, th: Thresholds, act: dict[str, Any], near: int) -> list[Violation]:
    """The actor's BURST episode that covers the action; scanned for only when more than the
    limit of its actions lie within one window either side of it."""
    if near <= th.burst_actions:
        return []
    t, w = act["occurred_at"], th.burst_window
    return [
        b
        for b in scans.bursts(snap.con, th, act["principal_id"])
        if b.occurred_at - w < t <= (b.ends_at or b.occurred_at)
    ]
