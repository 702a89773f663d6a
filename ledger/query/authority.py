"""The one authority evaluator: is an action, a grant or a credential backed by a live chain?

Pure (no I/O): it reads facts through the small `Facts` protocol, so `trace` (point lookups),
`violations` (bulk, after a SQL pre-filter) and the runtime check ask the same functions and
cannot disagree. The rules are the README's ("For investigators": chains, patterns, the rule table):

- A chain is walked from the cited delegation to its root grant however deep, iteratively with
  a visited set. It fails closed: a parent the ledger does not hold (UNKNOWN_DELEGATION), an
  ancestry that loops, self-parent included (DELEGATION_CYCLE), more hops than
  `max_chain_depth` (CHAIN_TOO_DEEP) or a root grant not made by a registered human or an
  allow-listed root authority (ROOT_NOT_HUMAN) authorize nothing, and are reported, never
  truncated into "no finding".
- A delegation is in force at t when every hop was granted (event time) at or before t, t is
  inside every hop's [not_before, expires_at), and no revocation reaches it by t: its own
  (cascade or not) or a cascading one of any ancestor.
- An action needs its operation covered by the scopes of every hop and its resource (in
  canonical form, `patterns`) matched by a pattern of every hop.
- A grant is checked against its parent: scopes and patterns covered (attenuation decided on
  the pattern grammar), window inside the parent's at both ends, re-delegation allowed.

Cost: resolving a chain is one `Facts.grant` call per hop; evaluating it is linear in its
depth times the patterns per hop (matchers are compiled once and cached).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ledger.query import patterns
from ledger.query.rules import Thresholds, Violation, iso, scope_covers, side_violations

__all__ = [
    "Chain",
    "Facts",
    "Finding",
    "Grant",
    "Revocation",
    "action_findings",
    "action_violations",
    "as_violations",
    "chain_findings",
    "credential_findings",
    "effective_resources",
    "effective_scopes",
    "grant_findings",
    "resolve_chain",
    "root_allowed",
]


@dataclass(frozen=True, slots=True)
class Grant:
    """One `delegation.granted` (the first grant of an id, in event time, is the delegation)."""

    delegation_id: str
    parent_id: str | None
    delegator_id: str
    delegate_id: str
    scopes: tuple[str, ...]
    resources: tuple[str, ...]
    not_before: datetime
    expires_at: datetime
    may_redelegate: bool
    event_id: str
    granted_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Grant:
        """From a `delegations` projection row (as a dict)."""
        return cls(
            row["delegation_id"],
            row["parent_delegation_id"],
            row["delegator_id"],
            row["delegate_id"],
            tuple(row["scopes"]),
            tuple(row["resources"]),
            row["not_before"],
            row["expires_at"],
            bool(row["may_redelegate"]),
            row["event_id"],
            row["occurred_at"],
        )


@dataclass(frozen=True, slots=True)
class Revocation:
    """One `delegation.revoked`: when, and whether it reaches the descendants."""

    at: datetime
    cascade: bool


class Facts(Protocol):
    """What the evaluator may ask of a ledger (or of a test's naive model of one)."""

    def grant(self, delegation_id: str) -> Grant | None:
        """The delegation with this id, or None when the ledger never granted it."""
        ...

    def revocations(self, delegation_id: str) -> Sequence[Revocation]:
        """Every revocation of this delegation, in any order."""
        ...

    def kind(self, principal_id: str) -> str | None:
        """The principal's registered kind (its latest registration), None if never registered."""
        ...


@dataclass(frozen=True, slots=True)
class Chain:
    """A delegation and its ancestors as far as they can be followed.

    `hops[0]` is the cited delegation (when the ledger holds it), `hops[-1]` the root grant when
    the chain is complete. `missing` names an id on the way that the ledger does not hold;
    `cycle` the id at which the ancestry loops back."""

    cited: str
    hops: tuple[Grant, ...]
    missing: str | None = None
    cycle: str | None = None

    @property
    def complete(self) -> bool:
        """Reaches a root grant (no missing parent, no loop)."""
        return self.missing is None and self.cycle is None and bool(self.hops)

    @property
    def root(self) -> Grant | None:
        """The root grant, for a complete chain."""
        return self.hops[-1] if self.complete else None

    @property
    def depth(self) -> int:
        """Hops from the cited delegation up to (and including) the root grant."""
        return len(self.hops)


def resolve_chain(facts: Facts, delegation_id: str) -> Chain:
    """Walk from `delegation_id` to its root grant, however deep; stops only at a root, a
    missing id or a loop (each reported in the result)."""
    hops: list[Grant] = []
    seen: set[str] = set()
    did: str | None = delegation_id
    while did is not None:
        if did in seen:
            return Chain(delegation_id, tuple(hops), cycle=did)
        seen.add(did)
        grant = facts.grant(did)
        if grant is None:
            return Chain(delegation_id, tuple(hops), missing=did)
        hops.append(grant)
        did = grant.parent_id
    return Chain(delegation_id, tuple(hops))


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule that fails: its kind, a sentence, and the delegation (hop) it concerns."""

    kind: str
    detail: str
    hop: str | None = None


def root_allowed(facts: Facts, grant: Grant, th: Thresholds) -> bool:
    """A root grant's delegator is a registered human, or an allow-listed root authority."""
    return grant.delegator_id in th.root_authorities or facts.kind(grant.delegator_id) == "human"


def _revoked_at(facts: Facts, chain: Chain) -> tuple[datetime, str] | None:
    """(when, by which delegation) the cited delegation stopped being in force by revocation:
    its own revocations, or a cascading revocation of any ancestor."""
    best: tuple[datetime, str] | None = None
    for i, hop in enumerate(chain.hops):
        for rev in facts.revocations(hop.delegation_id):
            if (i == 0 or rev.cascade) and (best is None or rev.at < best[0]):
                best = (rev.at, hop.delegation_id)
    return best


def chain_findings(facts: Facts, chain: Chain, at: datetime, th: Thresholds) -> list[Finding]:
    """Why the chain does not carry authority at `at` (empty: it does, as far as the chain
    goes; operation and resource are `action_findings`' business)."""
    out: list[Finding] = []
    cited = chain.cited
    if chain.missing is not None:
        where = "" if chain.missing == cited else f" (in the chain of {cited})"
        out.append(
            Finding(
                "UNKNOWN_DELEGATION",
                f"delegation {chain.missing}{where} is not in the ledger: nothing authorizes it.",
                chain.missing,
            )
        )
    if chain.cycle is not None:
        out.append(
            Finding(
                "DELEGATION_CYCLE",
                f"the ancestry of {cited} loops back to {chain.cycle}: it has no root grant.",
                chain.cycle,
            )
        )
    if chain.depth > th.max_chain_depth:
        out.append(
            Finding(
                "CHAIN_TOO_DEEP",
                f"the chain of {cited} has {chain.depth} hops, more than the limit "
                f"{th.max_chain_depth}.",
                cited,
            )
        )
    root = chain.root
    if root is not None and not root_allowed(facts, root, th):
        who = facts.kind(root.delegator_id) or "unregistered"
        out.append(
            Finding(
                "ROOT_NOT_HUMAN",
                f"the root grant {root.delegation_id} of {cited} was made by "
                f"{root.delegator_id} ({who}), not by a registered human.",
                root.delegation_id,
            )
        )
    late = [h for h in chain.hops if h.granted_at > at]
    if late:
        hop = late[0]
        out.append(
            Finding(
                "UNKNOWN_DELEGATION",
                f"at {iso(at)} the ledger did not yet hold {hop.delegation_id} "
                f"(granted at {iso(hop.granted_at)}).",
                hop.delegation_id,
            )
        )
    for hop in chain.hops:
        if not hop.not_before <= at < hop.expires_at:
            via = "" if hop.delegation_id == cited else f" (in the chain of {cited})"
            out.append(
                Finding(
                    "EXPIRED_DELEGATION",
                    f"at {iso(at)}, outside {hop.delegation_id}'s window{via} "
                    f"[{iso(hop.not_before)}, {iso(hop.expires_at)}).",
                    hop.delegation_id,
                )
            )
            break
    revoked = _revoked_at(facts, chain)
    if revoked is not None and revoked[0] <= at:
        when, via = revoked
        how = "" if via == cited else f" through its ancestor {via}"
        out.append(
            Finding(
                "REVOKED_DELEGATION",
                f"{cited} was revoked{how} at {iso(when)}.",
                via,
            )
        )
    return out


def _scope_findings(chain: Chain, operation: str) -> list[Finding]:
    for hop in chain.hops:
        if not scope_covers(hop.scopes, operation):
            return [
                Finding(
                    "OUT_OF_SCOPE",
                    f"{operation} is not covered by {hop.delegation_id}'s scopes "
                    f"{list(hop.scopes)}.",
                    hop.delegation_id,
                )
            ]
    return []


def _resource_findings(chain: Chain, resource: str) -> list[Finding]:
    if patterns.canonical_resource(resource) is None:
        return [
            Finding(
                "RESOURCE_OUT_OF_SCOPE",
                f"{resource} climbs above its root with '..': it matches no pattern.",
                chain.cited,
            )
        ]
    for hop in chain.hops:
        if not patterns.matches_any(hop.resources, resource):
            return [
                Finding(
                    "RESOURCE_OUT_OF_SCOPE",
                    f"{resource} matches none of {hop.delegation_id}'s resources "
                    f"{list(hop.resources)}.",
                    hop.delegation_id,
                )
            ]
    return []


def action_findings(
    facts: Facts,
    chain: Chain | None,
    actor: str,
    operation: str,
    resource: str,
    at: datetime,
    th: Thresholds,
) -> list[Finding]:
    """Why `actor` may not perform `operation` on `resource` at `at` under `chain` (None: no
    delegation cited). Empty means the delegation rules allow it. Retirement, decisions and
    credentials are checked beside this (`rules`)."""
    if chain is None:
        kind = facts.kind(actor)
        if kind == "human":
            return []
        return [
            Finding(
                "NO_DELEGATION",
                f"{actor} ({kind or 'unregistered principal'}) performed {operation} "
                "with no delegation.",
            )
        ]
    out: list[Finding] = []
    if chain.hops and chain.hops[0].delegate_id != actor:
        hop = chain.hops[0]
        out.append(
            Finding(
                "NOT_DELEGATE",
                f"{actor} acted under {hop.delegation_id}, which was granted to {hop.delegate_id}.",
                hop.delegation_id,
            )
        )
    out += _scope_findings(chain, operation)
    out += _resource_findings(chain, resource)
    out += chain_findings(facts, chain, at, th)
    return out


def grant_findings(facts: Facts, grant: Grant, chain: Chain, th: Thresholds) -> list[Finding]:
    """Why a grant is not a sound delegation (its `chain` starts at the grant itself):
    patterns outside the grammar, an unknown or later parent, a loop or excessive depth, a root
    not made by a human, escalation beyond its parent, a forbidden re-delegation."""
    out: list[Finding] = []
    did = grant.delegation_id
    bad = patterns.invalid_patterns(grant.resources)
    if bad:
        why = "; ".join(f"{p!r} {patterns.pattern_problem(p)}" for p in bad)
        out.append(Finding("INVALID_PATTERN", f"{did} grants nothing through {why}.", did))
    if chain.cycle is not None:
        out.append(
            Finding(
                "DELEGATION_CYCLE",
                f"the ancestry of {did} loops back to {chain.cycle}: it has no root grant.",
                did,
            )
        )
    if chain.depth > th.max_chain_depth:
        out.append(
            Finding(
                "CHAIN_TOO_DEEP",
                f"{did} is {chain.depth} hops from its root grant, more than the limit "
                f"{th.max_chain_depth}.",
                did,
            )
        )
    if grant.parent_id is None:
        if not root_allowed(facts, grant, th):
            who = facts.kind(grant.delegator_id) or "unregistered"
            out.append(
                Finding(
                    "ROOT_NOT_HUMAN",
                    f"root grant {did} was made by {grant.delegator_id} ({who}), not by a "
                    "registered human or an allowed root authority.",
                    did,
                )
            )
        return out
    parent = facts.grant(grant.parent_id)
    if parent is None or parent.granted_at > grant.granted_at:
        when = "" if parent is None else f" before {iso(parent.granted_at)}"
        out.append(
            Finding(
                "UNKNOWN_DELEGATION",
                f"{did} cites parent {grant.parent_id}, which the ledger did not hold{when}.",
                did,
            )
        )
    if parent is None:
        return out
    out += _escalation(grant, parent)
    if not parent.may_redelegate:
        out.append(
            Finding(
                "REDELEGATION_NOT_ALLOWED",
                f"{did} re-delegates {parent.delegation_id}, which forbids it.",
                did,
            )
        )
    elif parent.delegate_id != grant.delegator_id:
        out.append(
            Finding(
                "REDELEGATION_NOT_ALLOWED",
                f"{grant.delegator_id} re-delegated {parent.delegation_id}, which was granted "
                f"to {parent.delegate_id}.",
                did,
            )
        )
    return out


def _escalation(grant: Grant, parent: Grant) -> list[Finding]:
    """SCOPE_ESCALATION: scopes, patterns or window wider than the parent's (one finding)."""
    did, pid = grant.delegation_id, parent.delegation_id
    reasons = []
    extra = [s for s in grant.scopes if not scope_covers(parent.scopes, s)]
    if extra:
        reasons.append(f"scopes {extra} not held by parent {pid}")
    wider = patterns.uncovered(grant.resources, parent.resources)
    if wider:
        reasons.append(f"resources {wider} beyond parent {pid}")
    if grant.not_before < parent.not_before:
        reasons.append(
            f"starts at {iso(grant.not_before)}, before parent {pid} ({iso(parent.not_before)})"
        )
    if grant.expires_at > parent.expires_at:
        reasons.append(
            f"expires at {iso(grant.expires_at)}, after parent {pid} ({iso(parent.expires_at)})"
        )
    if not reasons:
        return []
    return [Finding("SCOPE_ESCALATION", f"{did} grants {'; '.join(reasons)}.", did)]


def credential_findings(
    facts: Facts, credential_id: str, delegation_id: str | None, issued_at: datetime
) -> list[Finding]:
    """UNKNOWN_DELEGATION for a credential issued under a delegation the ledger did not hold."""
    if delegation_id is None:
        return []
    grant = facts.grant(delegation_id)
    if grant is not None and grant.granted_at <= issued_at:
        return []
    return [
        Finding(
            "UNKNOWN_DELEGATION",
            f"credential {credential_id} cites delegation {delegation_id}, which the ledger did "
            f"not hold when it was issued ({iso(issued_at)}).",
            delegation_id,
        )
    ]


def as_violations(
    findings: Iterable[Finding],
    subject: str,
    event_id: str,
    at: datetime,
    principal: str | None,
) -> list[Violation]:
    """The findings about one subject as `Violation`s (what `violations()` and `trace` report)."""
    return [Violation(f.kind, subject, event_id, at, principal, f.detail, f.hop) for f in findings]


def effective_scopes(chain: Chain) -> list[str]:
    """The scopes that survive every hop: each kept where every hop covers it (an operation is
    covered by the result exactly when every hop's scopes cover it)."""
    if not chain.hops:
        return []
    out = list(dict.fromkeys(chain.hops[-1].scopes))
    for hop in reversed(chain.hops[:-1]):
        keep = [s for s in out if scope_covers(hop.scopes, s)]
        keep += [s for s in hop.scopes if scope_covers(out, s) and s not in keep]
        out = keep
    return out


def effective_resources(chain: Chain) -> list[str]:
    """Valid patterns that survive every hop (each covered by a pattern of every hop). A
    conservative summary for display: a resource is allowed exactly when every hop matches it."""
    if not chain.hops:
        return []
    out = [p for p in dict.fromkeys(chain.hops[-1].resources) if patterns.is_valid_pattern(p)]
    for hop in reversed(chain.hops[:-1]):
        mine = [p for p in hop.resources if patterns.is_valid_pattern(p)]
        keep = [p for p in out if any(patterns.covers(q, p) for q in mine)]
        keep += [q for q in mine if any(patterns.covers(p, q) for p in out) and q not in keep]
        out = keep
    return out


def action_violations(
    facts: Facts, row: Mapping[str, Any], th: Thresholds, chain: Chain | None = None
) -> list[Violation]:
    """Every action-level violation of one action facts row (`rules.ACTION_FACT_COLUMNS`): the
    delegation rules here, retirement, decisions and credentials from `rules`. `chain` may be
    passed when the caller resolved it already (trace shows it)."""
    did = row["delegation_id"]
    if did is not None and chain is None:
        chain = resolve_chain(facts, did)
    found = action_findings(
        facts,
        chain if did is not None else None,
        row["principal_id"],
        row["operation"],
        row["resource"],
        row["occurred_at"],
        th,
    )
    out = as_violations(
        found, row["action_id"], row["event_id"], row["occurred_at"], row["principal_id"]
    )
    return out + side_violations(row)
