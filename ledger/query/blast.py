"""Blast radius: everything reachable downstream of a principal, delegation or credential.

Descendants are walked one level per query (semi-join on parent ids); cascading revocations
flow down with them, and the seeds' own ancestors are walked up once so a revoked grandparent
still counts. Time windows are judged in Python on the few rows reached.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ledger.contract.events import from_micros
from ledger.errors import ConfigError, NotFoundError
from ledger.query import scans
from ledger.query.rules import as_utc, earliest, iso
from ledger.query.snapshot import Graph, Snapshot

_MAX_DEPTH = 64


@dataclass(slots=True)
class BlastRadius:
    """Everything reachable downstream of a principal, delegation or credential."""

    subject: dict[str, str]
    delegations: list[str]
    principals: list[str]
    credentials: list[str]
    actions: list[str]
    resources: list[str]
    still_active: dict[str, list[str]]
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "delegations": self.delegations,
            "principals": self.principals,
            "credentials": self.credentials,
            "actions": self.actions,
            "resources": self.resources,
            "still_active": self.still_active,
            "at": iso(self.at),
        }


def blast_radius(
    snap: Snapshot,
    principal: str | None = None,
    delegation: str | None = None,
    credential: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> BlastRadius:
    """Everything reachable downstream of one subject, multi-hop.

    principal: every delegation it granted and all their descendants, every action under
    them or by it, the credentials it holds. delegation: it and its descendants, and their
    actions. credential: the actions that used it, its delegation and that delegation's
    descendants. With since/until, only delegations and credentials valid at some point in
    [since, until] and actions inside it count; `still_active` is judged at `until` (or now).
    """
    snap.point_lookups()
    given = [
        (k, v)
        for k, v in (
            ("principal", principal),
            ("delegation", delegation),
            ("credential", credential),
        )
        if v is not None
    ]
    if len(given) != 1:
        raise ConfigError("give exactly one of principal, delegation or credential")
    kind, subject = given[0]
    since, until = as_utc(since), as_utc(until)
    lo = since or datetime.min.replace(tzinfo=UTC)
    hi = until or datetime.max.replace(tzinfo=UTC)
    at = until or datetime.now(UTC)
    seeds: list[str] = []
    cred_row = None
    if kind == "principal":
        seeds = sorted(snap.graph().granted_by.get(subject, ()))
        if not seeds and not principal_known(snap, subject):
            raise NotFoundError(f"no principal {subject!r} in the ledger")
    elif kind == "delegation":
        if subject not in snap.graph().rows:
            raise NotFoundError(f"no delegation {subject!r} in the ledger")
        seeds = [subject]
    else:
        cred_row = snap.one(
            "SELECT * FROM credentials WHERE credential_id = ?",
            [subject],
        )
        if cred_row is None:
            raise NotFoundError(f"no credential {subject!r} in the ledger")
        if cred_row["delegation_id"] is not None:
            seeds = [cred_row["delegation_id"]]

    dels = descendants(snap, seeds)
    kept = sorted(
        d for d, (nb, exp, rev, _) in dels.items() if nb <= hi and min(exp, rev or exp) > lo
    )
    active_dels = sorted(
        d for d, (_, exp, rev, _) in dels.items() if exp > at and (rev is None or rev > at)
    )
    delegates = {dels[d][3] for d in kept}

    cols = "action_id, principal_id, credential_id, resource"
    window = "occurred_at BETWEEN $lo AND $hi"
    parts = [
        f"SELECT {cols} FROM actions WHERE delegation_id IN (SELECT unnest($dids)) AND {window}"
    ]
    if kind == "principal":
        parts.append(f"SELECT {cols} FROM actions WHERE principal_id = $s AND {window}")
    if kind == "credential":
        parts.append(f"SELECT {cols} FROM actions WHERE credential_id = $s AND {window}")
    params: dict[str, Any] = {"dids": sorted(dels), "lo": lo, "hi": hi}
    if kind != "delegation":
        params["s"] = subject
    acts = snap.rows(" UNION ".join(parts), params)
    used = {a["credential_id"] for a in acts if a["credential_id"] is not None}
    if kind == "credential":
        used.add(subject)
    cols = "credential_id, principal_id, expires_at, occurred_at"
    parts = [
        f"SELECT {cols} FROM credentials WHERE delegation_id IN (SELECT unnest($dids))",
        f"SELECT {cols} FROM credentials WHERE credential_id IN (SELECT unnest($used))",
    ]
    params = {"dids": sorted(dels), "used": sorted(used)}
    if kind == "principal":
        parts.append(f"SELECT {cols} FROM credentials WHERE principal_id = $s")
        params["s"] = subject
    revoked = snap.small().cred_revoked
    creds = [
        {**c, "revoked_at": revoked.get(c["credential_id"])}
        for c in snap.rows(" UNION ".join(parts), params)
    ]
    kept_creds = [
        c
        for c in creds
        if c["occurred_at"] <= hi and min(c["expires_at"] or hi, c["revoked_at"] or hi) >= lo
    ]
    if cred_row is not None and all(c["credential_id"] != subject for c in kept_creds):
        kept_creds += [c for c in creds if c["credential_id"] == subject]
    active_creds = sorted(
        c["credential_id"]
        for c in kept_creds
        if (c["expires_at"] is None or c["expires_at"] > at)
        and (c["revoked_at"] is None or c["revoked_at"] > at)
    )
    principals = delegates | {a["principal_id"] for a in acts}
    principals |= {c["principal_id"] for c in kept_creds}
    if kind == "principal":
        principals.add(subject)
    return BlastRadius(
        subject={"kind": kind, "id": subject},
        delegations=kept,
        principals=sorted(principals),
        credentials=sorted({c["credential_id"] for c in kept_creds}),
        actions=sorted({a["action_id"] for a in acts}),
        resources=sorted({a["resource"] for a in acts}),
        still_active={
            "delegations": sorted(set(active_dels).intersection(kept)),
            "credentials": active_creds,
        },
        at=at,
    )


def principal_known(snap: Snapshot, pid: str) -> bool:
    if snap.people([pid])[pid]["registered"]:
        return True
    return bool(scans.unknown(snap.con, [pid]))


def descendants(
    snap: Snapshot, seeds: Sequence[str]
) -> dict[str, tuple[datetime, datetime, datetime | None, str]]:
    """id -> (not_before, expires_at, effective revocation, delegate) for seeds + descendants.

    Cascading revocations flow down from parent to child; each seed's ancestors are walked up
    too, so a revoked grandparent of a seed still counts.
    """
    g = snap.graph()
    revs = snap.small().revs
    cascades = snap.small().cascades
    out: dict[str, tuple[datetime, datetime, datetime | None, str]] = {}
    cascade_of: dict[str, datetime | None] = {}
    queue: deque[tuple[str, datetime | None]] = deque()
    for seed in dict.fromkeys(seeds):
        if seed in g.rows:
            queue.append((seed, _ancestor_cascade(g, cascades, seed)))
    while queue:
        did, inherited = queue.popleft()
        if did in out:
            continue
        _, nb, exp, _, delegate = g.rows[did]
        own = revs.get(did, [])
        eff = earliest(inherited, *(a for a, _ in own))
        out[did] = (from_micros(nb), from_micros(exp), eff, delegate)
        cascade_of[did] = earliest(inherited, *(a for a, c in own if c))
        for child in g.children.get(did, ()):
            if child not in out:
                queue.append((child, cascade_of[did]))
    return out


def _ancestor_cascade(g: Graph, cascades: dict[str, datetime], did: str) -> datetime | None:
    """Earliest cascading revocation of any strict ancestor of `did`."""
    if not cascades:
        return None
    best: datetime | None = None
    seen: set[str] = set()
    node = g.rows[did][0]
    while node is not None and node not in seen and len(seen) < _MAX_DEPTH:
        seen.add(node)
        best = earliest(best, cascades.get(node))
        node = g.rows[node][0] if node in g.rows else None
    return best
