"""The authority evaluator's `Facts`, answered from a ledger `Snapshot`.

Grants come from point lookups (the snapshot's LRU of delegation rows) or, for a bulk scan,
from `prefetch`, which loads every grant a set of chains needs in one query per level of the
forest; revocations and principal kinds come from the snapshot's in-memory small tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ledger.contract.events import from_micros
from ledger.query.authority import Grant, Revocation
from ledger.query.snapshot import Snapshot

__all__ = ["LedgerFacts"]

#: up to this many ids go by the ART index, one point lookup each; more by one scan
_INDEXED = 400

_GRANTS_SQL = """
SELECT d.* FROM delegations d SEMI JOIN (SELECT unnest($ids) AS id) i ON d.delegation_id = i.id
"""


class LedgerFacts:
    """`authority.Facts` over one snapshot; grants looked up once are kept for its lifetime."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self._grants: dict[str, Grant | None] = {}
        self._revs: dict[str, tuple[Revocation, ...]] = {}

    def grant(self, delegation_id: str) -> Grant | None:
        """The first grant of `delegation_id`, or None."""
        if delegation_id not in self._grants:
            row = self.snap.delegation(delegation_id)
            self._grants[delegation_id] = None if row is None else Grant.from_row(row)
        return self._grants[delegation_id]

    def revocations(self, delegation_id: str) -> Sequence[Revocation]:
        """Every revocation of `delegation_id`."""
        got = self._revs.get(delegation_id)
        if got is None:
            raw = self.snap.small().revs.get(delegation_id, ())
            got = self._revs[delegation_id] = tuple(Revocation(at, c) for at, c in raw)
        return got

    def kind(self, principal_id: str) -> str | None:
        """The latest registered kind of `principal_id`, None if never registered."""
        reg = self.snap.small().regs.get(principal_id)
        return reg[0] if reg else None

    def load_from_forest(self, ids: Iterable[str]) -> None:
        """Take the grants of `ids` from the snapshot's in-memory forest (no query)."""
        forest = self.snap.graph()
        for did in ids:
            if did in self._grants:
                continue
            row, more = forest.rows.get(did), forest.detail.get(did)
            if row is None or more is None:
                self._grants[did] = None
                continue
            parent, nb, exp, delegator, delegate = row
            scopes, resources, may, event_id, at = more
            self._grants[did] = Grant(
                did,
                parent,
                delegator,
                delegate,
                tuple(scopes),
                tuple(resources),
                from_micros(nb),
                from_micros(exp),
                bool(may),
                event_id,
                from_micros(at),
            )

    def load(self, ids: Iterable[str]) -> None:
        """Load the grants of exactly `ids` (callers that know the ancestors already, from an
        in-memory forest): a few ids go by the index (one IN list), many by one scan."""
        todo = []
        for did in {i for i in ids if i not in self._grants}:
            row = self.snap.cached_delegation(did)
            if row is None:
                todo.append(did)
            else:
                self._grants[did] = Grant.from_row(row)
        todo.sort()
        if not todo:
            return
        if len(todo) <= _INDEXED:
            marks = ", ".join("?" * len(todo))
            rows = self.snap.rows(
                f"SELECT * FROM delegations WHERE delegation_id IN ({marks})", todo
            )
        else:
            rows = self.snap.rows(_GRANTS_SQL, {"ids": todo})
        self._keep(todo, rows)

    def _keep(self, asked: Iterable[str], rows: list[dict[str, Any]]) -> dict[str, Grant]:
        rows.sort(key=lambda r: (r["occurred_at"], r["event_id"]), reverse=True)
        first = {r["delegation_id"]: r for r in rows}  # the first grant wins
        if len(first) <= _INDEXED:
            self.snap.remember(list(first.values()))
        found = {did: Grant.from_row(r) for did, r in first.items()}
        for did in asked:
            self._grants[did] = found.get(did)
        return found

    def prefetch(self, ids: Iterable[str]) -> None:
        """Load the grants of `ids` and of all their ancestors, one query per level."""
        todo = {i for i in ids if i not in self._grants}
        while todo:
            found = self._keep(todo, self.snap.rows(_GRANTS_SQL, {"ids": sorted(todo)}))
            todo = {
                g.parent_id
                for g in found.values()
                if g.parent_id is not None and g.parent_id not in self._grants
            }
