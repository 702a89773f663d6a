"""Blast radius: everything reachable downstream of a principal, delegation or credential.

The subject is resolved to seed delegations, and the seeds' subtree is walked in the
snapshot's in-memory delegation forest (`Snapshot.graph()`: ~0.3 s to load at 124k grants,
once per snapshot; microseconds to walk), with cascading revocations flowing down and each
seed's ancestors walked up once so a revoked grandparent still counts. Then two round trips:
the actions in the window under those delegations (or by the subject), and the credentials
they cover or used. Time windows are judged in Python on the few rows reached. A principal
that granted nothing costs one more scan, of every table that names principals, to tell it
from a name the ledger never saw.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ledger.contract.events import from_micros
from ledger.errors import ConfigError, NotFoundError
from ledger.query import scans
from ledger.query.rules import as_utc, earliest, iso
from ledger.query.snapshot import Graph, Snapshot

__all__ = ["BlastRadius", "blast_radius", "descendants", "principal_known"]


#: the column of `actions` and `credentials` naming a principal or credential subject
_SUBJECT_COLUMN = {"principal": "principal_id", "credential": "credential_id"}

#: id -> (not_before, expires_at, effective revocation, delegate), as `descendants` gives it
_Reached = dict[str, tuple[datetime, datetime, datetime | None, str]]


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


@dataclass(frozen=True, slots=True)
class _Window:
    """[lo, hi] bounds what counts (unbounded ends stretched to the extremes); `at` is the
    instant `still_active` is judged at."""

    lo: datetime
    hi: datetime
    at: datetime


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
    kind, subject = _one_subject(principal, delegation, credential)
    win = _window(since, until)
    dels = descendants(snap, _seeds(snap, kind, subject))
    kept = _delegations_in(dels, win)
    dids = sorted(dels)
    acts = _actions(snap, kind, subject, dids, win)
    creds = _credentials(snap, kind, subject, dids, _used(kind, subject, acts))
    kept_creds = _credentials_in(creds, win, kind, subject)
    return BlastRadius(
        subject={"kind": kind, "id": subject},
        delegations=kept,
        principals=_principals(kind, subject, (dels[d][3] for d in kept), acts, kept_creds),
        credentials=sorted({c["credential_id"] for c in kept_creds}),
        actions=sorted({a["action_id"] for a in acts}),
        resources=sorted({a["resource"] for a in acts}),
        still_active={
            "delegations": _active_delegations(dels, kept, win.at),
            "credentials": _active_credentials(kept_creds, win.at),
        },
        at=win.at,
    )


def _one_subject(
    principal: str | None, delegation: str | None, credential: str | None
) -> tuple[str, str]:
    """(kind, id) of the one subject given; `ConfigError` unless exactly one is."""
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
    return given[0]


def _window(since: datetime | None, until: datetime | None) -> _Window:
    since, until = as_utc(since), as_utc(until)
    return _Window(
        lo=since or datetime.min.replace(tzinfo=UTC),
        hi=until or datetime.max.replace(tzinfo=UTC),
        at=until or datetime.now(UTC),
    )


def _seeds(snap: Snapshot, kind: str, subject: str) -> list[str]:
    """The delegations the subject stands for: those a principal granted, the delegation
    itself, or the one a credential was issued under. `NotFoundError` for an unknown subject."""
    if kind == "principal":
        seeds = sorted(snap.graph().granted_by.get(subject, ()))
        if not seeds and not principal_known(snap, subject):
            raise NotFoundError(f"no principal {subject!r} in the ledger")
        return seeds
    if kind == "delegation":
        if subject not in snap.graph().rows:
            raise NotFoundError(f"no delegation {subject!r} in the ledger")
        return [subject]
    cred = snap.one("SELECT * FROM credentials WHERE credential_id = ?", [subject])
    if cred is None:
        raise NotFoundError(f"no credential {subject!r} in the ledger")
    return [cred["delegation_id"]] if cred["delegation_id"] is not None else []


def _delegations_in(dels: _Reached, win: _Window) -> list[str]:
    """The reached delegations in force at some instant of the window, sorted."""
    return sorted(
        d for d, (nb, exp, rev, _) in dels.items() if nb <= win.hi and min(exp, rev or exp) > win.lo
    )


def _active_delegations(dels: _Reached, kept: Iterable[str], at: datetime) -> list[str]:
    """Those of `kept` neither expired nor revoked at `at`, sorted."""
    active = (d for d, (_, exp, rev, _) in dels.items() if exp > at and (rev is None or rev > at))
    return sorted(set(active).intersection(kept))


def _actions(
    snap: Snapshot, kind: str, subject: str, dids: list[str], win: _Window
) -> list[dict[str, Any]]:
    """The actions inside the window under any of `dids`, or taken by (with) the subject
    principal (credential)."""
    cols = "action_id, principal_id, credential_id, resource"
    window = "occurred_at BETWEEN $lo AND $hi"
    parts = [
        f"SELECT {cols} FROM actions WHERE delegation_id IN (SELECT unnest($dids)) AND {window}"
    ]
    params: dict[str, Any] = {"dids": dids, "lo": win.lo, "hi": win.hi}
    column = _SUBJECT_COLUMN.get(kind)
    if column is not None:
        parts.append(f"SELECT {cols} FROM actions WHERE {column} = $s AND {window}")
        params["s"] = subject
    return snap.rows(" UNION ".join(parts), params)


def _used(kind: str, subject: str, acts: Iterable[Mapping[str, Any]]) -> list[str]:
    """The credentials the actions used (and a subject credential), sorted."""
    used = {a["credential_id"] for a in acts if a["credential_id"] is not None}
    if kind == "credential":
        used.add(subject)
    return sorted(used)


def _credentials(
    snap: Snapshot, kind: str, subject: str, dids: list[str], used: list[str]
) -> list[dict[str, Any]]:
    """Every credential issued under `dids`, among `used`, or held by a subject principal,
    with when it was first revoked (`revoked_at`, None if never)."""
    cols = "credential_id, principal_id, expires_at, occurred_at"
    parts = [
        f"SELECT {cols} FROM credentials WHERE delegation_id IN (SELECT unnest($dids))",
        f"SELECT {cols} FROM credentials WHERE credential_id IN (SELECT unnest($used))",
    ]
    params: dict[str, Any] = {"dids": dids, "used": used}
    if kind == "principal":
        parts.append(f"SELECT {cols} FROM credentials WHERE principal_id = $s")
        params["s"] = subject
    revoked = snap.small().cred_revoked
    return [
        {**c, "revoked_at": revoked.get(c["credential_id"])}
        for c in snap.rows(" UNION ".join(parts), params)
    ]


def _credentials_in(
    creds: list[dict[str, Any]], win: _Window, kind: str, subject: str
) -> list[dict[str, Any]]:
    """The credentials valid at some instant of the window; a subject credential is kept
    even when it was not."""
    kept = [c for c in creds if _credential_valid_in(c, win)]
    if kind == "credential" and all(c["credential_id"] != subject for c in kept):
        kept += [c for c in creds if c["credential_id"] == subject]
    return kept


def _credential_valid_in(cred: Mapping[str, Any], win: _Window) -> bool:
    """Issued by the window's end, and not expired or revoked before its start."""
    return bool(
        cred["occurred_at"] <= win.hi
        and min(cred["expires_at"] or win.hi, cred["revoked_at"] or win.hi) >= win.lo
    )


def _active_credentials(kept: Iterable[Mapping[str, Any]], at: datetime) -> list[str]:
    """Those of `kept` neither expired nor revoked at `at`, sorted."""
    return sorted(
        c["credential_id"]
        for c in kept
        if (c["expires_at"] is None or c["expires_at"] > at)
        and (c["revoked_at"] is None or c["revoked_at"] > at)
    )


def _principals(
    kind: str,
    subject: str,
    delegates: Iterable[str],
    acts: Iterable[Mapping[str, Any]],
    creds: Iterable[Mapping[str, Any]],
) -> list[str]:
    """Who is touched, sorted: delegates of the kept delegations, actors, credential holders
    and a subject principal itself."""
    found = set(delegates) | {a["principal_id"] for a in acts}
    found |= {c["principal_id"] for c in creds}
    if kind == "principal":
        found.add(subject)
    return sorted(found)


def principal_known(snap: Snapshot, pid: str) -> bool:
    """Whether `pid` is registered or at least named anywhere in the ledger (the scan of
    mentions runs only for an id never registered)."""
    if snap.people([pid])[pid]["registered"]:
        return True
    return bool(scans.unknown(snap.con, [pid]))


def descendants(snap: Snapshot, seeds: Sequence[str]) -> _Reached:
    """id -> (not_before, expires_at, effective revocation, delegate) for seeds + descendants.

    Cascading revocations flow down from parent to child; each seed's ancestors are walked up
    too, so a revoked grandparent of a seed still counts.
    """
    g = snap.graph()
    revs = snap.small().revs
    cascades = snap.small().cascades
    out: _Reached = {}
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
    """Earliest cascading revocation of any strict ancestor of `did`, however deep (a loop
    ends the walk; every ancestor on it was seen)."""
    if not cascades:
        return None
    best: datetime | None = None
    seen: set[str] = set()
    node = g.rows[did][0]
    while node is not None and node not in seen:
        seen.add(node)
        best = earliest(best, cascades.get(node))
        node = g.rows[node][0] if node in g.rows else None
    return best
