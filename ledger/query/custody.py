"""Chain of custody: who authorized an action, hop by hop up to the root grant.

One indexed point lookup per hop (a recursive CTE scans the whole table once per level), one
round trip for the action's decisions, credential, the actor's subagents and recent activity,
and the small tables (principals, retirements, revocations) from the Ledger's in-memory
snapshot. The violations are decided by the same functions `violations()` uses (`rules`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger.errors import NotFoundError
from ledger.query import rules, scans
from ledger.query.rules import Thresholds, Violation, iso, jsonable
from ledger.query.snapshot import Snapshot

_MAX_DEPTH = 64

_SIDE_SQL = """
SELECT 'dec', decision_id, decision, policy_id, principal_id, occurred_at, NULL, event_id, NULL
FROM decisions WHERE action_id = $aid
UNION ALL
SELECT 'dec', decision_id, decision, policy_id, principal_id, occurred_at, NULL, event_id, NULL
FROM decisions WHERE decision_id = $did
UNION ALL
SELECT 'cred', credential_id, principal_id, NULL, NULL, occurred_at, expires_at, event_id, NULL
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
    revs: dict[str, list[tuple[datetime, bool]]] = field(default_factory=dict)
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
    """The action, its delegation chain up to the root grant, who is accountable, and
    every violation found on the action, on each hop, its credential and its actor.

    Raises `NotFoundError` when no action has that id."""
    th = thresholds or Thresholds()
    snap.point_lookups()
    act = snap.one(
        "SELECT * FROM actions WHERE action_id = ?",
        [action_id],
    )
    if act is None:
        raise NotFoundError(f"no action {action_id!r} in the ledger")
    t, actor = act["occurred_at"], act["principal_id"]
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    did = act["delegation_id"]
    complete = True
    while did is not None and did not in seen and len(rows) < _MAX_DEPTH:
        seen.add(did)
        row = snap.delegation(did)
        if row is None:
            complete = False
            break
        rows.append(row)
        did = row["parent_delegation_id"]
    if did is not None and complete:
        complete = False  # a cycle or an absurd depth
    side = side_facts(snap, act, rows, th)
    revs, decisions, cred, people = side.revs, side.decisions, side.cred, side.people
    cred_revoked = side.cred_revoked
    effective = _effective_revocations(rows, revs)
    actor_info = people.get(actor, {})

    first = rows[0] if rows else None
    eff_at, eff_via = effective.get(first["delegation_id"], (None, None)) if first else (None, None)
    denied = sorted(d["decision_id"] for d in decisions if d["decision"] == "deny")
    facts = {
        "action_id": action_id,
        "event_id": act["event_id"],
        "occurred_at": t,
        "principal_id": actor,
        "delegation_id": act["delegation_id"],
        "credential_id": act["credential_id"],
        "operation": act["operation"],
        "resource": act["resource"],
        "outcome": act["outcome"],
        "actor_kind": actor_info.get("kind"),
        "has_delegation": first is not None,
        "delegate_id": first and first["delegate_id"],
        "scopes": first and first["scopes"],
        "resources": first and first["resources"],
        "not_before": first and first["not_before"],
        "expires_at": first and first["expires_at"],
        "revoked_at": eff_at,
        "revoked_via": eff_via,
        "retired_at": actor_info.get("retired_at"),
        "denied_by": denied[0] if denied else None,
        "has_credential": cred is not None,
        "holder": cred and cred["principal_id"],
        "cred_issued": cred and cred["occurred_at"],
        "cred_expires": cred and cred["expires_at"],
        "cred_revoked": cred_revoked,
    }
    found = rules.action_violations(facts)
    for i, r in enumerate(rows):
        par = rows[i + 1] if i + 1 < len(rows) else None
        found += rules.delegation_violations(_delegation_facts(r, par, people))
    found += principal_level(snap, th, act, cred, people, side.near)
    violations = rules.dedupe(found)

    chain = []
    first_id = first["delegation_id"] if first else None
    for r in rows:
        hop_id = r["delegation_id"]
        problems = {v.kind for v in violations if v.hop == hop_id}
        if hop_id == first_id and any(v.kind == "REVOKED_DELEGATION" for v in violations):
            problems.add("REVOKED_DELEGATION")
        chain.append(
            Hop(
                delegation_id=hop_id,
                parent_delegation_id=r["parent_delegation_id"],
                delegator_id=r["delegator_id"],
                delegate_id=r["delegate_id"],
                scopes=list(r["scopes"]),
                resources=list(r["resources"]),
                purpose=r["purpose"],
                not_before=r["not_before"],
                expires_at=r["expires_at"],
                may_redelegate=bool(r["may_redelegate"]),
                granted_at=r["occurred_at"],
                revoked_at=effective.get(hop_id, (None, None))[0],
                problems=sorted(problems),
            )
        )
    subagents = [{"delegation_id": d, "delegate_id": p} for _, d, p in side.subagents]
    policy = next((d for d in decisions if d["decision_id"] == act["decision_id"]), None)
    policy = policy or (decisions[0] if decisions else None)
    root = chain[-1].delegator_id if chain else None
    action = {k: v for k, v in act.items() if k != "seq"}
    return Trace(
        action=action,
        chain=chain,
        root_principal=root,
        accountable={
            "root_delegator": root,
            "actor_owner": actor_info.get("owner_id"),
            "policy_id": policy["policy_id"] if policy else None,
        },
        violations=violations,
        subagents=subagents,
        chain_complete=complete,
    )


def side_facts(
    snap: Snapshot, act: dict[str, Any], chain: Sequence[dict[str, Any]], th: Thresholds
) -> _Side:
    """Everything trace needs besides the chain: the action's decisions and credential, the
    actor's subagents and how many actions it took within one burst window of this one (one
    round trip), plus revocations and principals from the in-memory small tables."""
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
    cred_rows: list[dict[str, Any]] = []
    for src, id_, s1, s2, s3, t1, t2, ev, n in snap.con.execute(_SIDE_SQL, params).fetchall():
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
                    "occurred_at": t1,
                    "expires_at": t2,
                    "event_id": ev,
                }
            )
        elif src == "sub":
            side.subagents.append((t1, id_, s1))
        elif src == "near":
            side.near = int(n)
    names = {act["principal_id"]}
    for r in chain:
        names.update((r["delegator_id"], r["delegate_id"]))
        if r["delegation_id"] in small.revs:
            side.revs[r["delegation_id"]] = small.revs[r["delegation_id"]]
    if cred_rows:
        side.cred = min(cred_rows, key=lambda c: (c["occurred_at"], c["event_id"]))
        names.add(side.cred["principal_id"])
        side.cred_revoked = small.cred_revoked.get(side.cred["credential_id"])
    names.update(d["principal_id"] for d in side.decisions)
    side.people = snap.people(names)
    side.subagents.sort()
    return side


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
    con = snap.con
    t, actor = act["occurred_at"], act["principal_id"]
    out: list[Violation] = []
    if cred is not None:
        v = rules.long_lived_violation(
            cred["credential_id"],
            cred["event_id"],
            cred["occurred_at"],
            cred["principal_id"],
            cred["expires_at"],
            th,
        )
        out += [v] if v is not None else []
    small = snap.small()
    reg = small.regs.get(actor)
    if reg is not None and reg[0] == "agent":
        owner = reg[1]
        owner_retired = (
            (small.retired[owner], small.retired_event[owner])
            if owner is not None and owner in small.retired
            else None
        )
        v = rules.unowned_violation(
            actor, owner, reg[3], reg[2], owner_retired, small.retired.get(actor)
        )
        out += [v] if v is not None else []
    missing = sorted(n for n, p in people.items() if p["registered"] is False)
    if missing:
        out += scans.unknown(con, missing)
    w = th.burst_window
    if near > th.burst_actions:
        out += [
            b
            for b in scans.bursts(con, th, actor)
            if b.occurred_at - w < t <= (b.ends_at or b.occurred_at)
        ]
    return out


def _effective_revocations(
    chain: Sequence[dict[str, Any]], revs: dict[str, list[tuple[datetime, bool]]]
) -> dict[str, tuple[datetime | None, str | None]]:
    """Per hop: (earliest revocation in force, the hop whose revocation it is)."""
    out: dict[str, tuple[datetime | None, str | None]] = {}
    for i, hop in enumerate(chain):
        best: tuple[datetime, str] | None = None
        for j in range(i, len(chain)):
            hid = chain[j]["delegation_id"]
            for at, cascade in revs.get(hid, []):
                if (j == i or cascade) and (best is None or (at, hid) < best):
                    best = (at, hid)
        out[hop["delegation_id"]] = (best[0], best[1]) if best else (None, None)
    return out


def _delegation_facts(
    row: dict[str, Any], parent: dict[str, Any] | None, people: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    return {
        "delegation_id": row["delegation_id"],
        "event_id": row["event_id"],
        "occurred_at": row["occurred_at"],
        "parent_delegation_id": row["parent_delegation_id"],
        "delegator_id": row["delegator_id"],
        "delegate_id": row["delegate_id"],
        "scopes": row["scopes"],
        "resources": row["resources"],
        "expires_at": row["expires_at"],
        "has_parent": parent is not None,
        "par_scopes": parent and parent["scopes"],
        "par_resources": parent and parent["resources"],
        "par_expires": parent and parent["expires_at"],
        "par_may_redelegate": parent and parent["may_redelegate"],
        "par_delegate": parent and parent["delegate_id"],
        "delegator_retired_at": people.get(row["delegator_id"], {}).get("retired_at"),
        "delegate_retired_at": people.get(row["delegate_id"], {}).get("retired_at"),
    }
