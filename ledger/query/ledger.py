"""The investigator's questions, answered from the ledger's projections alone.

`trace` walks an action's delegation chain with one indexed point lookup per hop (faster than a
recursive CTE, which scans the whole table per level); `blast_radius` walks downstream one level
per query; `violations` is a full scan (see `rules`). Results are dataclasses with `to_dict()`
giving JSON-ready values (timestamps ISO 8601 UTC with a trailing Z).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import duckdb

from ledger import blast, custody, rules, scans
from ledger.blast import BlastRadius
from ledger.custody import Trace
from ledger.errors import ConfigError, StoreError, ValidationError
from ledger.projections import projected_size
from ledger.rules import Thresholds, Violation, as_utc, jsonable
from ledger.store import Store

_ALLOWED_SQL = {"SELECT", "EXPLAIN"}
_MAX_DEPTH = 64
_HOP_CACHE = 50_000


@dataclass(slots=True)
class _Small:
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
    def load(cls, con: duckdb.DuckDBPyConnection, size: int) -> _Small:
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
class InventoryItem:
    """One principal in the register: who it is, who empowered it, what it reached."""

    principal_id: str
    kind: str | None
    owner_id: str | None
    display_name: str | None
    model: str | None
    status: str
    unknown: bool
    retired_at: datetime | None
    delegated_by: list[str]
    delegated_to: list[str]
    tools: list[str]
    resources: list[str]
    live_credentials: list[str]
    actions: int

    def to_dict(self) -> dict[str, Any]:
        return {k: jsonable(getattr(self, k)) for k in self.__dataclass_fields__}


@dataclass(slots=True)
class SqlResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]

    def to_dict(self) -> list[dict[str, Any]]:
        return [
            {c: jsonable(v) for c, v in zip(self.columns, row, strict=True)} for row in self.rows
        ]


class Ledger:
    """Read access for investigators. Use `Ledger.open(path)`; close it (or use `with`)."""

    def __init__(self, store: Store, thresholds: Thresholds | None = None) -> None:
        self.store = store
        self.con = store.con
        self.thresholds = thresholds or Thresholds()
        self._small_cache: _Small | None = None
        self._hops: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._graph_cache: blast.Graph | None = None
        row = self.con.execute("SELECT current_setting('threads')").fetchone()
        self._cores = int(row[0]) if row else 1
        self._thread_setting = self._cores

    def _threads(self, n: int) -> None:
        """Point-lookup work runs on one thread (on a busy 2-core box, waking a second one
        costs more than it saves and makes the tail 5x longer); scans use every core."""
        if self._thread_setting != n:
            self.con.execute(f"SET threads = {int(n)}")
            self._thread_setting = n

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        read_only: bool = True,
        thresholds: Thresholds | None = None,
    ) -> Ledger:
        """Open a ledger file whose projections cover every entry (else: run `ledger rebuild`).

        A read-only ledger also has external access (files, extensions) switched off; `sql()`
        accepts only SELECT/EXPLAIN statements, so it can neither write nor change settings.
        (The configuration is not locked: point lookups run single-threaded, scans on every
        core, and switching needs SET.)
        """
        store = Store.open(path, read_only=read_only)
        try:
            covered = projected_size(store.con)
            size = store.size()
            if covered is None or covered != size:
                what = "missing" if covered is None else f"cover {covered} of {size} entries"
                raise StoreError(
                    f"{store.path}: the query projections are {what}; run `ledger rebuild`"
                )
            if read_only:
                store.con.execute("SET enable_external_access = false")
        except BaseException:
            store.close()
            raise
        return cls(store, thresholds)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- helpers ------------------------------------------------------------------------------

    def _one(self, sql: str, params: Sequence[Any]) -> dict[str, Any] | None:
        """The earliest (occurred_at, event_id) row, picked in Python: an ORDER BY ... LIMIT 1
        on an indexed point lookup costs DuckDB several times the lookup itself."""
        rows = self._all(sql, params)
        if not rows:
            return None
        if len(rows) > 1 and "occurred_at" in rows[0]:
            rows.sort(key=lambda r: (r["occurred_at"], r["event_id"]))
        return rows[0]

    def _all(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        return scans._rows(self.con, sql, params)

    def _delegation(self, did: str) -> dict[str, Any] | None:
        """One delegation row by id; on a read-only snapshot, remembered (bounded LRU): chains
        share their upper hops, so repeated traces in one tree skip most lookups."""
        if not self.store.read_only:
            return self._one("SELECT * FROM delegations WHERE delegation_id = ?", [did])
        cache = self._hops
        if did in cache:
            cache.move_to_end(did)
            return cache[did]
        row = self._one("SELECT * FROM delegations WHERE delegation_id = ?", [did])
        if row is not None:
            cache[did] = row
            if len(cache) > _HOP_CACHE:
                cache.popitem(last=False)
        return row

    def _revocations(self, ids: Iterable[str]) -> dict[str, list[tuple[datetime, bool]]]:
        revs = self._small().revs
        return {did: revs[did] for did in ids if did in revs}

    # -- trace --------------------------------------------------------------------------------

    def trace(self, action_id: str) -> Trace:
        """The action, its delegation chain up to the root grant, who is accountable, and
        every violation found on the action, on each hop, its credential and its actor."""
        return custody.trace(self, action_id)

    def _small(self) -> _Small:
        """The in-memory small tables; reloaded when the ledger grew (a writable Ledger)."""
        size = self._small_cache.size if self._small_cache else -1
        if self._small_cache is None or not self.store.read_only:
            size = projected_size(self.con) or 0
        if self._small_cache is None or self._small_cache.size != size:
            self._small_cache = _Small.load(self.con, size)
        return self._small_cache

    def _people(self, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Registration and retirement of each id, and the retirement of their owners;
        `registered` is False for an id never registered (None for owners only)."""
        small = self._small()
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

    # -- blast radius -------------------------------------------------------------------------

    def blast_radius(
        self,
        principal: str | None = None,
        delegation: str | None = None,
        credential: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> BlastRadius:
        """Everything reachable downstream of one subject, multi-hop (see `blast`)."""
        return blast.blast_radius(self, principal, delegation, credential, since, until)

    # -- violations, inventory, sql -------------------------------------------------------------

    def violations(
        self,
        kinds: Iterable[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        credential_max_lifetime: timedelta | None = None,
        burst_actions: int | None = None,
        burst_window: timedelta | None = None,
    ) -> list[Violation]:
        """Every violation (of `kinds`, default all) whose event time is in [since, until]."""
        self._threads(self._cores)
        wanted = list(kinds) if kinds is not None else None
        unknown = sorted(set(wanted or ()) - set(rules.KINDS))
        if unknown:
            raise ConfigError(
                f"unknown violation kind {', '.join(unknown)}; expected one of "
                + ", ".join(rules.KINDS)
            )
        th = self.thresholds
        th = Thresholds(
            credential_max_lifetime or th.credential_max_lifetime,
            burst_actions if burst_actions is not None else th.burst_actions,
            burst_window or th.burst_window,
        )
        found = scans.evaluate(self.con, wanted, th)
        since, until = as_utc(since), as_utc(until)
        return [
            v
            for v in found
            if (since is None or v.occurred_at >= since)
            and (until is None or v.occurred_at <= until)
        ]

    def inventory(self, at: datetime | None = None) -> list[InventoryItem]:
        """Every principal, registered or merely named, with its delegations, reach and live
        credentials (at `at`, default now)."""
        self._threads(self._cores)
        at = as_utc(at) or datetime.now(UTC)
        sql = f"""
        WITH named AS ({
            " UNION ".join(
                f"SELECT {c} AS pid FROM {t} WHERE {c} IS NOT NULL" for t, c, _ in scans._MENTIONS
            )
        } UNION SELECT principal_id FROM principals),
        reg AS (SELECT principal_id, arg_max(kind, (occurred_at, event_id)) AS kind,
                arg_max(owner_id, (occurred_at, event_id)) AS owner_id,
                arg_max(display_name, (occurred_at, event_id)) AS display_name,
                arg_max(model, (occurred_at, event_id)) AS model
                FROM principals GROUP BY 1),
        ret AS (SELECT principal_id, min(occurred_at) AS retired_at FROM retirements GROUP BY 1),
        din AS (SELECT delegate_id AS pid, list(DISTINCT delegator_id ORDER BY delegator_id) AS l
                FROM delegations GROUP BY 1),
        dout AS (SELECT delegator_id AS pid, list(DISTINCT delegate_id ORDER BY delegate_id) AS l
                 FROM delegations GROUP BY 1),
        acts AS (SELECT principal_id AS pid, count(*) AS n,
                 list(DISTINCT tool ORDER BY tool) FILTER (WHERE tool IS NOT NULL) AS tools,
                 list(DISTINCT resource ORDER BY resource) AS resources
                 FROM actions GROUP BY 1),
        crev AS (SELECT credential_id, min(occurred_at) AS revoked_at
                 FROM credential_revocations GROUP BY 1),
        live AS (SELECT c.principal_id AS pid,
                 list(DISTINCT c.credential_id ORDER BY c.credential_id) AS l
                 FROM credentials c LEFT JOIN crev USING (credential_id)
                 WHERE c.occurred_at <= $at AND (c.expires_at IS NULL OR c.expires_at > $at)
                   AND (crev.revoked_at IS NULL OR crev.revoked_at > $at)
                 GROUP BY 1)
        SELECT n.pid, reg.kind, reg.owner_id, reg.display_name, reg.model,
            reg.principal_id IS NULL AS unknown, ret.retired_at,
            coalesce(din.l, []), coalesce(dout.l, []), coalesce(acts.tools, []),
            coalesce(acts.resources, []), coalesce(live.l, []), coalesce(acts.n, 0)
        FROM named n
        LEFT JOIN reg ON reg.principal_id = n.pid
        LEFT JOIN ret ON ret.principal_id = n.pid
        LEFT JOIN din ON din.pid = n.pid
        LEFT JOIN dout ON dout.pid = n.pid
        LEFT JOIN acts ON acts.pid = n.pid
        LEFT JOIN live ON live.pid = n.pid
        ORDER BY n.pid
        """
        out = []
        for (
            pid,
            kind,
            owner,
            name,
            model,
            unknown,
            retired_at,
            din,
            dout,
            tools,
            res,
            live,
            n,
        ) in self.con.execute(sql, {"at": at}).fetchall():
            retired = retired_at is not None and retired_at <= at
            out.append(
                InventoryItem(
                    principal_id=pid,
                    kind=kind,
                    owner_id=owner,
                    display_name=name,
                    model=model,
                    status="retired" if retired else "active",
                    unknown=bool(unknown),
                    retired_at=retired_at,
                    delegated_by=list(din),
                    delegated_to=list(dout),
                    tools=list(tools),
                    resources=list(res),
                    live_credentials=list(live),
                    actions=int(n),
                )
            )
        return out

    def sql(self, query: str) -> SqlResult:
        """Run one read-only query (SELECT, WITH, SHOW, DESCRIBE, SUMMARIZE, EXPLAIN)."""
        try:
            statements = duckdb.extract_statements(query)
        except duckdb.Error as exc:
            raise ValidationError(f"cannot parse query: {_first_line(exc)}") from exc
        if not statements:
            raise ValidationError("empty query")
        for st in statements:
            name = str(st.type).rsplit(".", 1)[-1]
            if name not in _ALLOWED_SQL:
                raise ValidationError(
                    f"refused: {name} statements are not allowed; `ledger sql` is read-only "
                    "(SELECT, WITH, SHOW, DESCRIBE, SUMMARIZE, EXPLAIN)"
                )
        if len(statements) > 1:
            raise ValidationError("one statement at a time")
        self._threads(self._cores)
        try:
            cur = self.con.execute(query)
            columns = [d[0] for d in cur.description or ()]
            rows = cur.fetchall()
        except duckdb.Error as exc:
            raise ValidationError(f"query failed: {_first_line(exc)}") from exc
        return SqlResult(columns, rows)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
