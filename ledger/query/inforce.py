"""Authority at a point in time: what could this principal do at T, and through whom?

`authority_at` lists every delegation granted to the principal, each with its full path to the
root grant, whether it was in force at T (and why not), and the scopes and resource patterns
that survive every hop; given an operation and a resource it says allowed or not, with the
reasons per delegation. It asks the same evaluator as `violations` and `trace`
(`authority.action_findings`), so "allowed here" means "no delegation finding there".

Cost: the delegations granted to the principal, and their chains, come from the snapshot's
in-memory forest (loaded once per snapshot: about a second per million delegations), so an
answer costs no query; evaluating it is microseconds per hop.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger.query.authority import (
    Chain,
    Finding,
    action_findings,
    chain_findings,
    effective_resources,
    effective_scopes,
    resolve_chain,
)
from ledger.query.facts import LedgerFacts
from ledger.query.rules import Thresholds, iso
from ledger.query.snapshot import Snapshot

__all__ = ["Authority", "Standing", "authority_at"]


@dataclass(slots=True)
class Standing:
    """One delegation granted to the principal, as it stood at the time asked about."""

    delegation_id: str
    path: list[dict[str, Any]]
    root_principal: str | None
    in_force: bool
    problems: list[dict[str, str | None]]
    effective_scopes: list[str]
    effective_resources: list[str]
    allowed: bool | None = None
    reasons: list[dict[str, str | None]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "delegation_id": self.delegation_id,
            "in_force": self.in_force,
            "allowed": self.allowed,
            "root_principal": self.root_principal,
            "effective_scopes": self.effective_scopes,
            "effective_resources": self.effective_resources,
            "problems": self.problems,
            "reasons": self.reasons,
            "path": self.path,
        }


@dataclass(slots=True)
class Authority:
    """The answer: every delegation of `principal_id` at `at`; with an operation and a
    resource, `allowed` (some delegation in force allows it) and through which one."""

    principal_id: str
    at: datetime
    operation: str | None
    resource: str | None
    delegations: list[Standing]
    allowed: bool | None
    allowed_by: str | None
    #: a registered human needs no delegation (NO_DELEGATION does not apply to humans)
    own_authority: bool = False

    @property
    def in_force(self) -> list[Standing]:
        return [s for s in self.delegations if s.in_force]

    def to_dict(self) -> dict[str, Any]:
        return {
            "principal_id": self.principal_id,
            "at": iso(self.at),
            "operation": self.operation,
            "resource": self.resource,
            "allowed": self.allowed,
            "allowed_by": self.allowed_by,
            "own_authority": self.own_authority,
            "in_force": [s.delegation_id for s in self.in_force],
            "delegations": [s.to_dict() for s in self.delegations],
        }


def _finding(f: Finding) -> dict[str, str | None]:
    return {"kind": f.kind, "detail": f.detail, "delegation_id": f.hop}


def _path(chain: Chain) -> list[dict[str, Any]]:
    return [
        {
            "delegation_id": h.delegation_id,
            "delegator_id": h.delegator_id,
            "delegate_id": h.delegate_id,
            "scopes": list(h.scopes),
            "resources": list(h.resources),
            "not_before": iso(h.not_before),
            "expires_at": iso(h.expires_at),
        }
        for h in chain.hops
    ]


def _with_ancestors(
    rows: dict[str, tuple[str | None, int, int, str, str]], ids: Iterable[str]
) -> set[str]:
    """`ids` and every ancestor the in-memory forest knows (loops and missing parents end a
    walk; the evaluator reports them)."""
    out: set[str] = set()
    for did in ids:
        node: str | None = did
        while node is not None and node not in out:
            out.add(node)
            row = rows.get(node)
            node = row[0] if row is not None else None
    return out


def authority_at(
    snap: Snapshot,
    principal_id: str,
    at: datetime,
    operation: str | None = None,
    resource: str | None = None,
    th: Thresholds | None = None,
) -> Authority:
    """Every delegation granted to `principal_id` as it stood at `at` (UTC); with `operation`
    and `resource` (both or neither), whether the rules allowed that action then."""
    th = th or Thresholds()
    facts = LedgerFacts(snap)
    asked = operation is not None and resource is not None
    out: list[Standing] = []
    forest = snap.graph()
    mine = sorted(forest.granted_to.get(principal_id, ()))
    facts.load_from_forest(_with_ancestors(forest.rows, mine))
    for did in mine:
        grant = facts.grant(did)
        if grant is None or grant.granted_at > at:
            continue  # not granted yet at `at`
        chain = resolve_chain(facts, did)
        problems = chain_findings(facts, chain, at, th)
        root = chain.root
        standing = Standing(
            did,
            _path(chain),
            root.delegator_id if root else None,
            not problems,
            [_finding(f) for f in problems],
            effective_scopes(chain),
            effective_resources(chain),
        )
        if asked:
            assert operation is not None and resource is not None
            reasons = action_findings(facts, chain, principal_id, operation, resource, at, th)
            standing.allowed = not reasons
            standing.reasons = [_finding(f) for f in reasons]
        out.append(standing)
    out.sort(key=lambda s: (not s.in_force, s.delegation_id))
    allowed_by = next((s.delegation_id for s in out if s.allowed), None)
    human = facts.kind(principal_id) == "human"
    allowed = None if not asked else allowed_by is not None or human
    return Authority(
        principal_id, at, operation, resource, out, allowed, allowed_by, human and asked
    )
