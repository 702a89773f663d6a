"""A read view of one ledger file, with the lookups and caches every query shares.

`custody`, `blast` and the `Ledger` facade take a `Snapshot`, never each other's internals.
What it holds in memory is small next to `actions`: latest registrations, first retirements,
revocations (`SmallTables`, a few MB at 10M entries), a bounded LRU of delegation rows, and
the delegation forest (`Graph`, loaded on the first blast radius: ~0.3 s at 124k grants).
A read-only snapshot keeps them for its lifetime; a writable one reloads them when the
projections grew.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from ledger.store import Store
from ledger.store.projections import projected_size

__all__ = ["HOP_CACHE", "Graph", "SmallTables", "Snapshot", "dict_rows"]

#: delegation rows remembered by a read-only snapshot (chains share their upper hops)
HOP_CACHE = 50_000
#: ids a point lookup may join against through an index (a principal's delegations reach a
#: few hundred at 10M events); above it DuckDB scans with a Bloom filter
POINT_KEYS = 2048
#: DuckDB's default `dynamic_or_filter_threshold`, kept for scans
SCAN_KEYS = 50


@dataclass(slots=True)
class SmallTables:
    """The small tables trace consults on every call, held in memory per snapshot: principals
    (latest registration), first retirements, delegation and credential revocations."""

    size: int
    regs: dict[str, tuple[str, str | None, datetime, str]]
    retired: dict[str, datetime]
    retired_event: dict[str, str]
    revs: dict[str, list[tuple[datetime, bool]]]
    cred_revoked: dict[str, datetime]
    cascades: dict[str, datetime]

    @classmethod
    def load(cls, con: duckdb.DuckDBPyConnection, size: int) -> SmallTables:
        regs = {
            pid: (kind, owner, at, event_id)
            for pid, kind, owner, at, event_id in con.execute(
                "SELECT principal_id, arg_max(kind, (occurred_at, event_id)), "
                "arg_max(owner_id, (occurred_at, event_id)), max(occurred_at), "
                "arg_max(event_id, (occurred_at, event_id)) FROM principals GROUP BY 1"
            ).fetchall()
        }
        retired: dict[str, datetime] = {}
        retired_event: dict[str, str] = {}
        for pid, at, event_id in con.execute(
            "SELECT principal_id, min(occurred_at), arg_min(event_id, (occurred_at, event_id)) "
            "FROM retirements GROUP BY 1"
        ).fetchall():
            retired[pid], retired_event[pid] = at, event_id
        revs: dict[str, list[tuple[datetime, bool]]] = {}
        for did, at, cascade in con.execute(
            "SELECT delegation_id, occurred_at, cascade FROM revocations"
        ).fetchall():
            revs.setdefault(did, []).append((at, bool(cascade)))
        cred_revoked = dict(
            con.execute(
                "SELECT credential_id, min(occurred_at) FROM credential_revocations GROUP BY 1"
            ).fetchall()
        )
        cascades = {
            did: min(a for a, c in lst if c) for did, lst in revs.items() if any(c for _, c in lst)
        }
        return cls(size, regs, retired, retired_event, revs, cred_revoked, cascades)


@dataclass(slots=True)
class Graph:
    """The delegation forest in memory (id, parent, window, delegator, delegate of every grant;
    the first grant wins for a repeated id), loaded once per snapshot on the first blast radius.
    Walking it costs microseconds where a DuckDB level-by-level walk costs a scan per level."""

    size: int
    rows: dict[str, tuple[str | None, int, int, str, str]]
    children: dict[str, list[str]]
    granted_by: dict[str, list[str]]
    #: delegate -> the delegations granted to it
    granted_to: dict[str, list[str]]
    #: id -> (scopes, resources, may_redelegate, event_id, granted at µs): the rest of a grant
    detail: dict[str, tuple[list[str], list[str], bool, str, int]]

    @classmethod
    def load(cls, con: duckdb.DuckDBPyConnection, size: int) -> Graph:
        rows: dict[str, tuple[str | None, int, int, str, str]] = {}
        detail: dict[str, tuple[list[str], list[str], bool, str, int]] = {}
        children: dict[str, list[str]] = {}
        granted_by: dict[str, list[str]] = {}
        granted_to: dict[str, list[str]] = {}
        for did, parent, nb, exp, delegator, delegate, scopes, res, may, ev, at in con.execute(
            "SELECT delegation_id, parent_delegation_id, epoch_us(not_before), "
            "epoch_us(expires_at), delegator_id, delegate_id, scopes, resources, "
            "may_redelegate, event_id, epoch_us(occurred_at) FROM delegations "
            "ORDER BY occurred_at DESC, event_id DESC"
        ).fetchall():
            rows[did] = (parent, nb, exp, delegator, delegate)
            detail[did] = (scopes, res, may, ev, at)
        for did, (parent, _, _, delegator, delegate) in rows.items():
            if parent is not None:
                children.setdefault(parent, []).append(did)
            granted_by.setdefault(delegator, []).append(did)
            granted_to.setdefault(delegate, []).append(did)
        return cls(size, rows, children, granted_by, granted_to, detail)


def dict_rows(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> list[dict[str, Any]]:
    """Every row of `sql` as a dict keyed by column name."""
    cur = con.execute(sql, params) if params is not None else con.execute(sql)
    cols = [d[0] for d in cur.description or ()]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


class Snapshot:
    """Shared lookups over one open `Store`: rows by SQL, delegations by id, people, the
    small tables and the delegation forest, with the thread setting each kind of work wants."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.con = store.con
        self._small: SmallTables | None = None
        self._hops: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._graph: Graph | None = None
        row = self.con.execute("SELECT current_setting('threads')").fetchone()
        self.cores = int(row[0]) if row else 1
        self._threads = self.cores
        self._keys = SCAN_KEYS

    def threads(self, n: int) -> None:
        """Point-lookup work runs on one thread (on a busy 2-core box, waking a second one
        costs more than it saves and makes the tail 5x longer); scans use every core."""
        if self._threads != n:
            self.con.execute(f"SET threads = {int(n)}")
            self._threads = n

    def point_lookups(self) -> None:
        """Set up for a handful of indexed lookups (one thread; a join against up to
        `POINT_KEYS` ids, such as a principal's delegations, becomes an index lookup instead
        of a scan of the table: DuckDB's `dynamic_or_filter_threshold`)."""
        self.threads(1)
        self._join_keys(POINT_KEYS)

    def full_scans(self) -> None:
        """Set up for scans of whole tables (every core, DuckDB's default join filters)."""
        self.threads(self.cores)
        self._join_keys(SCAN_KEYS)

    def _join_keys(self, n: int) -> None:
        if self._keys != n:
            self.con.execute(f"SET dynamic_or_filter_threshold = {int(n)}")
            self._keys = n

    def rows(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        """Every row of `sql` as a dict keyed by column name."""
        return dict_rows(self.con, sql, params)

    def one(self, sql: str, params: Sequence[Any]) -> dict[str, Any] | None:
        """The earliest (occurred_at, event_id) row, picked in Python: an ORDER BY ... LIMIT 1
        on an indexed point lookup costs DuckDB several times the lookup itself."""
        found = self.rows(sql, params)
        if not found:
            return None
        if len(found) > 1 and "occurred_at" in found[0]:
            found.sort(key=lambda r: (r["occurred_at"], r["event_id"]))
        return found[0]

    def delegation(self, did: str) -> dict[str, Any] | None:
        """One delegation row by id (the earliest grant of a repeated id); on a read-only
        snapshot remembered in a bounded LRU of `HOP_CACHE` rows."""
        sql = "SELECT * FROM delegations WHERE delegation_id = ?"
        if not self.store.read_only:
            return self.one(sql, [did])
        cache = self._hops
        if did in cache:
            cache.move_to_end(did)
            return cache[did]
        row = self.one(sql, [did])
        if row is not None:
            cache[did] = row
            if len(cache) > HOP_CACHE:
                cache.popitem(last=False)
        return row

    def cached_delegation(self, did: str) -> dict[str, Any] | None:
        """The remembered row of `did` (read-only snapshots), without a query; None if absent."""
        row = self._hops.get(did) if self.store.read_only else None
        if row is not None:
            self._hops.move_to_end(did)
        return row

    def remember(self, rows: list[dict[str, Any]]) -> None:
        """Keep first-grant rows fetched in bulk in the LRU (read-only snapshots only)."""
        if not self.store.read_only:
            return
        cache = self._hops
        for row in rows:
            cache[row["delegation_id"]] = row
        while len(cache) > HOP_CACHE:
            cache.popitem(last=False)

    def covered_size(self) -> int:
        """How many entries the projections cover now (0 when they are missing)."""
        return projected_size(self.con) or 0

    def small(self) -> SmallTables:
        """The in-memory small tables; reloaded when the ledger grew (a writable snapshot)."""
        size = self._small.size if self._small else -1
        if self._small is None or not self.store.read_only:
            size = self.covered_size()
        if self._small is None or self._small.size != size:
            self._small = SmallTables.load(self.con, size)
        return self._small

    def graph(self) -> Graph:
        """The delegation forest; reloaded when the ledger grew (only when not read-only)."""
        cached = self._graph
        size = cached.size if cached is not None else -1
        if cached is None or not self.store.read_only:
            size = self.covered_size()
        if cached is None or cached.size != size:
            cached = self._graph = Graph.load(self.con, size)
        return cached

    def revocations(self, ids: Iterable[str]) -> dict[str, list[tuple[datetime, bool]]]:
        """(revoked at, cascade) of each of `ids` that was ever revoked."""
        revs = self.small().revs
        return {did: revs[did] for did in ids if did in revs}

    def people(self, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Registration and retirement of each id, and the retirement of their owners;
        `registered` is False for an id never registered (None for owners only)."""
        small = self.small()
        out: dict[str, dict[str, Any]] = {}
        for pid in names:
            reg = small.regs.get(pid)
            out[pid] = {
                "principal_id": pid,
                "kind": reg[0] if reg else None,
                "owner_id": reg[1] if reg else None,
                "registered": reg is not None,
                "retired_at": small.retired.get(pid),
            }
        for entry in list(out.values()):
            owner = entry["owner_id"]
            if owner is not None and owner not in out:
                out[owner] = {
                    "principal_id": owner,
                    "kind": None,
                    "owner_id": None,
                    "registered": None,
                    "retired_at": small.retired.get(owner),
                }
        return out
