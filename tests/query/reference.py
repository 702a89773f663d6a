"""A slow, obvious reference implementation of the delegation rules, straight from the README.

This is the oracle the differential tests (`test_reference.py`, `test_prefilter.py`) compare
`Ledger.violations()` and `Ledger.trace()` with. It is written from the README's "For
investigators" section (the in-force definition, the resource grammar and the rule table), not
from `ledger/query`: it imports nothing from the ledger, keeps its own glob matcher (a
memoized recursive one, no regular expressions), its own canonicalization of paths, its own
pattern-coverage decision (an exact automaton search over canonical paths) and its own chain
walk (parent by parent with a visited set, however deep).

It reads the JSON events the `tests.factories` builders produce, in any order, and decides
everything on event time: the first grant of a delegation id (by `occurred_at`, then
`event_id`) is the delegation, a principal's kind is its latest registration, its retirement
time is its earliest retirement.

Kinds decided here (`COVERED_KINDS`): NO_DELEGATION, NOT_DELEGATE, OUT_OF_SCOPE,
RESOURCE_OUT_OF_SCOPE, EXPIRED_DELEGATION, REVOKED_DELEGATION, SCOPE_ESCALATION,
REDELEGATION_NOT_ALLOWED, RETIRED_PRINCIPAL, DELEGATION_CYCLE, UNKNOWN_DELEGATION (actions,
grants and credentials), ROOT_NOT_HUMAN, CHAIN_TOO_DEEP, INVALID_PATTERN and
LONG_LIVED_CREDENTIAL. Not decided: DENIED_BUT_EXECUTED, CREDENTIAL_MISUSE, UNOWNED_AGENT,
UNKNOWN_PRINCIPAL, BURST.

Readings taken where the README leaves room (each one stated where it is used):

- "hops" counts grants: the cited delegation and each ancestor the walk reaches (a chain of
  33 grants has 33 hops). For a chain that loops or ends at a missing parent, the depth is the
  number of distinct grants the walk reached (a lower bound of the true distance to a root).
- "after retirement" is "at or after" the retirement time, as "at or after a revocation".
- A child pattern outside the grammar is never covered by its parent (an escalation as well as
  INVALID_PATTERN); an invalid parent pattern covers nothing.
- A child is checked against its parent (SCOPE_ESCALATION, REDELEGATION_NOT_ALLOWED) whenever
  the ledger holds the parent, even when the parent was granted after the child (the child is
  then UNKNOWN_DELEGATION too): the README qualifies neither row.
- Coverage of a child pattern is the README's definition, "every resource the child pattern
  matches is matched by the parent pattern", decided exactly over canonical paths (`covers`:
  `crm/?*` covers `crm/*`, since no canonical resource ends in `/`).
"""

from __future__ import annotations

import unicodedata
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache, lru_cache
from typing import Any

__all__ = [
    "COVERED_KINDS",
    "GRANT_SUBJECT_KINDS",
    "ActionView",
    "Report",
    "canonical",
    "covers",
    "glob_matches",
    "pattern_valid",
    "reference_report",
    "reference_violations",
]

COVERED_KINDS = frozenset(
    {
        "NO_DELEGATION",
        "NOT_DELEGATE",
        "OUT_OF_SCOPE",
        "RESOURCE_OUT_OF_SCOPE",
        "EXPIRED_DELEGATION",
        "REVOKED_DELEGATION",
        "SCOPE_ESCALATION",
        "REDELEGATION_NOT_ALLOWED",
        "RETIRED_PRINCIPAL",
        "DELEGATION_CYCLE",
        "UNKNOWN_DELEGATION",
        "ROOT_NOT_HUMAN",
        "CHAIN_TOO_DEEP",
        "INVALID_PATTERN",
        "LONG_LIVED_CREDENTIAL",
    }
)
#: the kinds whose subject may be a delegation id (a grant's findings)
GRANT_SUBJECT_KINDS = frozenset(
    {
        "SCOPE_ESCALATION",
        "REDELEGATION_NOT_ALLOWED",
        "INVALID_PATTERN",
        "RETIRED_PRINCIPAL",
        "DELEGATION_CYCLE",
        "UNKNOWN_DELEGATION",
        "ROOT_NOT_HUMAN",
        "CHAIN_TOO_DEEP",
    }
)

Pair = tuple[str, str]


# -- time and order ---------------------------------------------------------------------------


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _order(ev: Mapping[str, Any]) -> tuple[datetime, str]:
    return (_time(ev["occurred_at"]), ev["event_id"])


# -- resources and patterns (README: "Resources", "Patterns") --------------------------------


def canonical(resource: str) -> str | None:
    """NFC, no empty, `.` or `..` segments; None when `..` climbs above the root."""
    kept: list[str] = []
    for segment in unicodedata.normalize("NFC", resource).split("/"):
        if segment == "" or segment == ".":
            continue
        if segment == "..":
            if not kept:
                return None
            kept.pop()
            continue
        kept.append(segment)
    return "/".join(kept)


def pattern_valid(pattern: str) -> bool:
    """The README grammar: non-empty canonical path (NFC, no leading, trailing or doubled `/`),
    no `.`/`..` segment, literals anything but `* ? [ ] \\ /` and control characters."""
    if pattern == "" or unicodedata.normalize("NFC", pattern) != pattern:
        return False
    for segment in pattern.split("/"):
        if segment in ("", ".", ".."):
            return False
        for ch in segment:
            if ch in "*?":
                continue
            if ch in "[]\\" or unicodedata.category(ch) == "Cc":
                return False
    return True


def glob_matches(pattern: str, text: str) -> bool:
    """`*` any run (`/` included), `?` exactly one character, anything else itself; over the
    whole of `text`."""

    @cache
    def at(i: int, j: int) -> bool:
        if i == len(pattern):
            return j == len(text)
        c = pattern[i]
        if c == "*":
            return at(i + 1, j) or (j < len(text) and at(i, j + 1))
        if j == len(text):
            return False
        return (c == "?" or c == text[j]) and at(i + 1, j + 1)

    return at(0, 0)


def _resource_allowed(patterns: Iterable[str], resource: str) -> bool:
    """Does a valid pattern of `patterns` match the canonical form of `resource`?"""
    canon = canonical(resource)
    if canon is None:
        return False
    return any(pattern_valid(p) and glob_matches(p, canon) for p in patterns)


def _closure(pattern: str, states: Iterable[int]) -> frozenset[int]:
    out = set(states)
    todo = list(out)
    while todo:
        i = todo.pop()
        if i < len(pattern) and pattern[i] == "*" and i + 1 not in out:
            out.add(i + 1)
            todo.append(i + 1)
    return frozenset(out)


def _step(pattern: str, states: frozenset[int], ch: str) -> frozenset[int]:
    nxt = set()
    for i in states:
        if i == len(pattern):
            continue
        c = pattern[i]
        if c == "*":
            nxt.add(i)
        elif c == "?" or c == ch:
            nxt.add(i + 1)
    return _closure(pattern, nxt)


#: canonical-path automaton: S start (the empty path, i.e. the root), 0 start of a segment
#: after "/", 1 segment ".", 2 segment "..", 3 a proper segment; None is dead
def _path_step(state: str | None, ch: str) -> str | None:
    if state is None:
        return None
    if ch == "/":
        return "0" if state == "3" else None
    if ch == ".":
        return {"S": "1", "0": "1", "1": "2"}.get(state, "3")
    return "3"


@lru_cache(maxsize=65_536)
def covers(parent: str, child: str) -> bool:
    """Is every canonical resource the valid `child` matches matched by the valid `parent`?
    An invalid pattern is never covered and covers nothing.

    Exact: a breadth-first search of the product of the child's, the parent's and the
    canonical-path automata for a path the child matches and the parent does not, over the
    characters either pattern names, `/`, `.` and one character neither names. NFC is not
    modelled: the tests' valid patterns hold no combining marks."""
    if not pattern_valid(parent) or not pattern_valid(child):
        return False
    other = next(chr(c) for c in range(0xE000, 0xF000) if chr(c) not in parent + child)
    alphabet = sorted({*parent, *child, "/", ".", other} - {"*", "?"})
    start = (_closure(child, [0]), _closure(parent, [0]), "S")
    seen = {start}
    todo = deque([start])
    while todo:
        cs, ps, path = todo.popleft()
        if len(child) in cs and len(parent) not in ps and path in ("S", "3"):
            return False
        for ch in alphabet:
            nxt = (_step(child, cs, ch), _step(parent, ps, ch), _path_step(path, ch))
            if not nxt[0] or nxt[2] is None or nxt in seen:
                continue
            seen.add(nxt)
            todo.append(nxt)
    return True


# -- scopes (README: "Scopes") --------------------------------------------------------------


def _scope_allows(scope: str, operation: str) -> bool:
    if scope == "*" or scope == operation:
        return True
    if scope.endswith(":*"):
        service, sep, _verb = operation.partition(":")
        return bool(sep) and service == scope[:-2]
    return False


def _scopes_allow(scopes: Iterable[str], operation: str) -> bool:
    return any(_scope_allows(s, operation) for s in scopes)


def _scope_covered(parent_scopes: Sequence[str], scope: str) -> bool:
    """Every operation `scope` allows is allowed by one of `parent_scopes`."""
    if scope == "*":
        return "*" in parent_scopes
    if scope.endswith(":*"):
        return "*" in parent_scopes or scope in parent_scopes
    return _scopes_allow(parent_scopes, scope)


# -- the ledger's facts, naively ------------------------------------------------------------


@dataclass(frozen=True)
class _Grant:
    did: str
    parent: str | None
    delegator: str
    delegate: str
    scopes: tuple[str, ...]
    resources: tuple[str, ...]
    not_before: datetime
    expires_at: datetime
    may_redelegate: bool
    at: datetime


@dataclass
class _World:
    grants: dict[str, _Grant] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    retired: dict[str, datetime] = field(default_factory=dict)
    revocations: dict[str, list[tuple[datetime, bool]]] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)
    credentials: list[dict[str, Any]] = field(default_factory=list)


def _world(events: Iterable[Mapping[str, Any]]) -> _World:
    w = _World()
    for ev in sorted(events, key=_order):  # event time, then event id
        d, t, kind = ev["data"], _time(ev["occurred_at"]), ev["type"]
        if kind == "principal.registered":
            w.kinds[d["principal_id"]] = d["kind"]  # the latest registration wins
        elif kind == "principal.retired":
            w.retired.setdefault(d["principal_id"], t)  # the earliest retirement
        elif kind == "delegation.granted" and d["delegation_id"] not in w.grants:
            w.grants[d["delegation_id"]] = _Grant(  # the first grant is the delegation
                d["delegation_id"],
                d["parent_delegation_id"],
                d["delegator_id"],
                d["delegate_id"],
                tuple(d["scopes"]),
                tuple(d["resources"]),
                _time(d["not_before"]),
                _time(d["expires_at"]),
                d["may_redelegate"],
                t,
            )
        elif kind == "delegation.revoked":
            w.revocations.setdefault(d["delegation_id"], []).append((t, d["cascade"]))
        elif kind == "action.performed":
            w.actions.append({**d, "at": t})
        elif kind == "credential.issued":
            w.credentials.append({**d, "at": t})
    return w


@dataclass(frozen=True)
class _Walk:
    hops: tuple[_Grant, ...]  # the cited delegation first, then each ancestor reached
    end: str  # "root", "missing" or "cycle"


def _walk(w: _World, did: str) -> _Walk:
    """Parent by parent from `did`, with a visited set, until a root, a missing id or a loop."""
    hops: list[_Grant] = []
    visited: set[str] = set()
    current = did
    while True:
        if current in visited:
            return _Walk(tuple(hops), "cycle")
        visited.add(current)
        grant = w.grants.get(current)
        if grant is None:
            return _Walk(tuple(hops), "missing")
        hops.append(grant)
        if grant.parent is None:
            return _Walk(tuple(hops), "root")
        current = grant.parent


def _retired_by(w: _World, pid: str, t: datetime) -> bool:
    return pid in w.retired and w.retired[pid] <= t


def _root_ok(w: _World, grant: _Grant, roots: frozenset[str]) -> bool:
    return w.kinds.get(grant.delegator) == "human" or grant.delegator in roots


# -- the report -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionView:
    """What trace must show for one action: the chain's delegation ids (cited first) and the
    root grant's delegator when the chain reaches a root grant (else None)."""

    chain: tuple[str, ...]
    root_principal: str | None


@dataclass
class Report:
    """`pairs`: the (kind, subject_id) pairs the rules require; `actions`: each action's chain."""

    pairs: set[Pair] = field(default_factory=set)
    actions: dict[str, ActionView] = field(default_factory=dict)

    def about(self, ids: Iterable[str]) -> set[Pair]:
        """The pairs whose subject is one of `ids`."""
        keep = set(ids)
        return {p for p in self.pairs if p[1] in keep}


def _action_kinds(
    w: _World, act: Mapping[str, Any], max_depth: int, roots: frozenset[str]
) -> tuple[set[str], ActionView]:
    kinds: set[str] = set()
    actor, t, did = act["principal_id"], act["at"], act["delegation_id"]
    if _retired_by(w, actor, t):
        kinds.add("RETIRED_PRINCIPAL")
    if did is None:
        if w.kinds.get(actor) != "human":  # unregistered principals are not human
            kinds.add("NO_DELEGATION")
        return kinds, ActionView((), None)
    walk = _walk(w, did)
    hops = walk.hops
    if hops and hops[0].delegate != actor:
        kinds.add("NOT_DELEGATE")
    if any(not _scopes_allow(h.scopes, act["operation"]) for h in hops):
        kinds.add("OUT_OF_SCOPE")
    if canonical(act["resource"]) is None or any(
        not _resource_allowed(h.resources, act["resource"]) for h in hops
    ):
        kinds.add("RESOURCE_OUT_OF_SCOPE")
    if any(not h.not_before <= t < h.expires_at for h in hops):
        kinds.add("EXPIRED_DELEGATION")
    if any(
        at <= t and (i == 0 or cascade)
        for i, h in enumerate(hops)
        for at, cascade in w.revocations.get(h.did, ())
    ):
        kinds.add("REVOKED_DELEGATION")
    if walk.end == "missing" or any(h.at > t for h in hops):
        kinds.add("UNKNOWN_DELEGATION")
    if walk.end == "cycle":
        kinds.add("DELEGATION_CYCLE")
    if len(hops) > max_depth:
        kinds.add("CHAIN_TOO_DEEP")
    root = hops[-1] if walk.end == "root" else None
    if root is not None and not _root_ok(w, root, roots):
        kinds.add("ROOT_NOT_HUMAN")
    view = ActionView(tuple(h.did for h in hops), root.delegator if root else None)
    return kinds, view


def _grant_kinds(w: _World, g: _Grant, max_depth: int, roots: frozenset[str]) -> set[str]:
    kinds: set[str] = set()
    if not all(pattern_valid(p) for p in g.resources):
        kinds.add("INVALID_PATTERN")
    if _retired_by(w, g.delegator, g.at) or _retired_by(w, g.delegate, g.at):
        kinds.add("RETIRED_PRINCIPAL")
    walk = _walk(w, g.did)
    if walk.end == "cycle":
        kinds.add("DELEGATION_CYCLE")
    if len(walk.hops) > max_depth:
        kinds.add("CHAIN_TOO_DEEP")
    if g.parent is None:
        if not _root_ok(w, g, roots):
            kinds.add("ROOT_NOT_HUMAN")
        return kinds
    parent = w.grants.get(g.parent)
    if parent is None or parent.at > g.at:
        kinds.add("UNKNOWN_DELEGATION")
    if parent is None:
        return kinds
    window = g.not_before < parent.not_before or g.expires_at > parent.expires_at
    scopes = not all(_scope_covered(parent.scopes, s) for s in g.scopes)
    wider = not all(any(covers(p, c) for p in parent.resources) for c in g.resources)
    if window or scopes or wider:
        kinds.add("SCOPE_ESCALATION")
    if not parent.may_redelegate or parent.delegate != g.delegator:
        kinds.add("REDELEGATION_NOT_ALLOWED")
    return kinds


def reference_report(
    events: Iterable[Mapping[str, Any]],
    max_chain_depth: int = 32,
    root_authorities: frozenset[str] = frozenset(),
) -> Report:
    """Every covered finding of `events`, and each action's chain."""
    w = _world(events)
    report = Report()
    for act in w.actions:
        kinds, view = _action_kinds(w, act, max_chain_depth, root_authorities)
        report.pairs |= {(k, act["action_id"]) for k in kinds}
        report.actions[act["action_id"]] = view
    for g in w.grants.values():
        report.pairs |= {(k, g.did) for k in _grant_kinds(w, g, max_chain_depth, root_authorities)}
    for cred in w.credentials:
        cid, did, t = cred["credential_id"], cred["delegation_id"], cred["at"]
        if did is not None and (did not in w.grants or w.grants[did].at > t):
            report.pairs.add(("UNKNOWN_DELEGATION", cid))
        expires = cred["expires_at"]
        if expires is None or _time(expires) - t > timedelta(hours=24):
            report.pairs.add(("LONG_LIVED_CREDENTIAL", cid))
    return report


def reference_violations(
    events: Iterable[Mapping[str, Any]],
    max_chain_depth: int = 32,
    root_authorities: frozenset[str] = frozenset(),
) -> set[Pair]:
    """The (kind, subject_id) pairs the README's rules require for `events` (covered kinds)."""
    return reference_report(events, max_chain_depth, root_authorities).pairs
