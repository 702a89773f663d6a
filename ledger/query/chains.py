"""Every delegation's chain summarized at once: the input of the full scan's SQL pre-filter.

`violations()` cannot run the evaluator on millions of actions; it asks SQL for the actions
that might fail, and the evaluator (`authority`) decides those. To keep that set a superset,
each delegation gets, from one pass over the forest (ids, parents, windows, grant times and
revocations only; ~1 µs per delegation):

- `clean`: the chain reaches a root grant without loop or missing parent, within the depth
  limit, and no grant on it is a candidate finding (so every hop narrows its parent, and the
  delegation's own scopes, patterns and window decide exactly what the whole chain allows);
- the effective window (latest `not_before`, earliest `expires_at` on the chain), the time
  from which every hop is in the ledger, and the earliest revocation that reaches it.

An action whose delegation is not clean is always handed to the evaluator.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pyarrow as pa

__all__ = ["CHAIN_SCHEMA", "ChainRow", "mark_dirty", "summarize", "to_arrow"]

_NEVER = 1 << 62  # "no revocation", in microseconds since the epoch

#: (delegation_id, parent_delegation_id, not_before, expires_at, granted_at) in epoch µs
ChainRow = tuple[str, str | None, int, int, int]

CHAIN_SCHEMA = pa.schema(
    [
        ("delegation_id", pa.string()),
        ("clean", pa.bool_()),
        ("eff_nb", pa.timestamp("us", tz="UTC")),
        ("eff_exp", pa.timestamp("us", tz="UTC")),
        ("held_from", pa.timestamp("us", tz="UTC")),
        ("revoked_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(slots=True)
class _Info:
    ok: bool
    depth: int
    nb: int
    exp: int
    held: int
    cascade: int  # earliest cascading revocation of it or an ancestor: what children inherit
    revoked: int  # earliest revocation that reaches it
    dirty: bool


_BAD = _Info(False, 0, 0, 0, 0, _NEVER, _NEVER, True)


def summarize(
    rows: Iterable[ChainRow],
    revocations: Mapping[str, Iterable[tuple[int, bool]]],
    max_depth: int,
) -> dict[str, _Info]:
    """Chain summaries of every delegation in `rows` (first grant of each id), parents before
    children in the result's order. `revocations`: id -> (revoked at µs, cascade). Whether a
    chain is clean is settled later by `mark_dirty`, once the grants' findings are known."""
    parent: dict[str, str | None] = {}
    own: dict[str, tuple[int, int, int]] = {}
    for did, par, nb, exp, granted in rows:
        parent[did] = par
        own[did] = (nb, exp, granted)
    info: dict[str, _Info] = {}
    for start in parent:
        if start in info:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        node: str | None = start
        base: _Info | None = None
        while node is not None:
            if node in info:
                base = info[node]
                break
            if node in on_path or node not in parent:
                base = _BAD  # a loop, or a parent the ledger does not hold
                break
            on_path.add(node)
            path.append(node)
            node = parent[node]
        for did in reversed(path):
            base = info[did] = _extend(base, own[did], revocations.get(did), max_depth)
    return info


def _extend(
    up: _Info | None,
    mine: tuple[int, int, int],
    revs: Iterable[tuple[int, bool]] | None,
    max_depth: int,
) -> _Info:
    nb, exp, granted = mine
    any_rev = cascade_rev = _NEVER
    if revs:
        for at, cascade in revs:
            any_rev = min(any_rev, at)
            if cascade:
                cascade_rev = min(cascade_rev, at)
    if up is None:
        return _Info(True, 1, nb, exp, granted, cascade_rev, any_rev, max_depth < 1)
    if up is _BAD:
        return _BAD
    depth = up.depth + 1
    return _Info(
        True,
        depth,
        nb if nb > up.nb else up.nb,
        exp if exp < up.exp else up.exp,
        granted if granted > up.held else up.held,
        cascade_rev if cascade_rev < up.cascade else up.cascade,
        any_rev if any_rev < up.cascade else up.cascade,
        up.dirty or depth > max_depth,
    )


def mark_dirty(info: Mapping[str, _Info], parents: Mapping[str, str | None], bad: set[str]) -> None:
    """Make dirty every delegation in `bad` (a grant with a finding that can widen or void
    authority) and everything below it; `info` must be in parents-before-children order."""
    if not bad:
        return
    for did, summary in info.items():
        if summary is _BAD or summary.dirty:
            continue
        par = parents.get(did)
        if did in bad or (par is not None and info[par].dirty):
            summary.dirty = True


def to_arrow(info: Mapping[str, _Info]) -> pa.Table:
    """The summaries as the table the action scan joins (`_chains`)."""
    ids = list(info)
    vals = [info[i] for i in ids]
    return pa.Table.from_arrays(
        [
            pa.array(ids, pa.string()),
            pa.array([v.ok and not v.dirty for v in vals], pa.bool_()),
            pa.array([v.nb for v in vals], pa.int64()).cast(CHAIN_SCHEMA.field(2).type),
            pa.array([v.exp for v in vals], pa.int64()).cast(CHAIN_SCHEMA.field(3).type),
            pa.array([v.held for v in vals], pa.int64()).cast(CHAIN_SCHEMA.field(4).type),
            pa.array([None if v.revoked >= _NEVER else v.revoked for v in vals], pa.int64()).cast(
                CHAIN_SCHEMA.field(5).type
            ),
        ],
        schema=CHAIN_SCHEMA,
    )
