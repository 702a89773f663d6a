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

__all__ = ["CHAIN_SCHEMA", "ChainRow", "summarize", "to_arrow"]

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
    candidates: set[str],
    max_depth: int,
) -> dict[str, _Info]:
    """Chain summaries of every delegation in `rows` (first grant of each id). `revocations`:
    id -> (revoked at µs, cascade); `candidates`: grants the evaluator must look at."""
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
        while True:
            if node in info:
                base = info[node]
                break
            if node is None:
                break  # path[-1] is a root grant
            if node in on_path or node not in parent:
                base = _BAD  # a loop, or a parent the ledger does not hold
                break
            on_path.add(node)
            path.append(node)
            node = parent[node]
        for did in reversed(path):
            info[did] = _extend(did, base, own[did], revocations.get(did, ()), candidates)
            base = info[did]
            if base.depth > max_depth:
                base.dirty = True
    return info


def _extend(
    did: str,
    up: _Info | None,
    mine: tuple[int, int, int],
    revs: Iterable[tuple[int, bool]],
    candidates: set[str],
) -> _Info:
    nb, exp, granted = mine
    any_rev = cascade_rev = _NEVER
    for at, cascade in revs:
        any_rev = min(any_rev, at)
        if cascade:
            cascade_rev = min(cascade_rev, at)
    if up is None:
        return _Info(True, 1, nb, exp, granted, cascade_rev, any_rev, did in candidates)
    if not up.ok:
        return _BAD
    return _Info(
        True,
        up.depth + 1,
        max(nb, up.nb),
        min(exp, up.exp),
        max(granted, up.held),
        min(cascade_rev, up.cascade),
        min(any_rev, up.cascade),
        up.dirty or did in candidates,
    )


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
