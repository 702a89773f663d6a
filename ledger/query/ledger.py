"""The investigator's questions, answered from the ledger's projections alone.

`trace` walks an action's delegation chain with one indexed point lookup per hop (faster than a
recursive CTE, which scans the whole table per level); `blast_radius` walks downstream one level
per query; `violations` is a full scan (see `rules`). Results are dataclasses with `to_dict()`
giving JSON-ready values (timestamps ISO 8601 UTC with a trailing Z).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import duckdb

from ledger._text import first_line
from ledger.errors import ConfigError, StoreError, ValidationError
from ledger.query import blast, custody, inforce, rules, scans
from ledger.query.blast import BlastRadius
from ledger.query.custody import Trace
from ledger.query.inforce import Authority
from ledger.query.rules import Thresholds, Violation, as_utc, jsonable
from ledger.query.snapshot import Snapshot
from ledger.store import Store
from ledger.store.catalog import catalog_problems
from ledger.store.projections import projected_size

__all__ = ["InventoryItem", "Ledger", "SqlResult"]

_ALLOWED_SQL = {"SELECT", "EXPLAIN"}


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
        #: the lookups and caches `trace` and `blast_radius` share
        self.snapshot = Snapshot(store)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        read_only: bool = True,
        thresholds: Thresholds | None = None,
    ) -> Ledger:
        """Open a ledger file whose projections cover every entry (else: run `ledger rebuild`).

        External access (files, extensions, ATTACH) is switched off. `sql()` accepts only
        SELECT/EXPLAIN statements and, on a ledger opened writable, runs them inside a
        transaction that is always rolled back: whatever a statement does (a data-modifying
        CTE, `EXPLAIN ANALYZE DELETE`), the file does not change. (The configuration is not
        locked: point lookups run single-threaded, scans on every core, and switching needs
        SET.)
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
            problems = catalog_problems(store.con)
            if problems:
                raise StoreError(
                    f"{store.path}: {problems[0]}; answers could be altered: run `ledger verify`"
                )
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

    # -- trace --------------------------------------------------------------------------------

    def trace(self, action_id: str) -> Trace:
        """The action, its delegation chain up to the root grant, who is accountable, and
        every violation found on the action, on each hop, its credential and its actor."""
        return custody.trace(self.snapshot, action_id, self.thresholds)

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
        return blast.blast_radius(self.snapshot, principal, delegation, credential, since, until)

    # -- authority at a point in time ------------------------------------------------------

    def authority(
        self,
        principal: str,
        at: datetime | None = None,
        operation: str | None = None,
        resource: str | None = None,
    ) -> Authority:
        """Every delegation of `principal` in force at `at` (default now), each with its path
        to the root and the scopes and patterns that survive every hop; with `operation` and
        `resource`, whether the rules allowed that action then (see `inforce`).

        Raises `ConfigError` when only one of `operation` and `resource` is given."""
        if (operation is None) != (resource is None):
            raise ConfigError("give both an operation and a resource, or neither")
        self.snapshot.point_lookups()
        when = as_utc(at) or datetime.now(UTC)
        return inforce.authority_at(
            self.snapshot, principal, when, operation, resource, self.thresholds
        )

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
        max_chain_depth: int | None = None,
        root_authorities: Iterable[str] | None = None,
    ) -> list[Violation]:
        """Every violation (of `kinds`, default all) whose event time is in [since, until].

        The keyword options override this ledger's `thresholds` for this call. Raises
        `ConfigError` for an unknown kind."""
        self.snapshot.full_scans()
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
            max_chain_depth if max_chain_depth is not None else th.max_chain_depth,
            frozenset(root_authorities) if root_authorities is not None else th.root_authorities,
        )
        found = scans.evaluate(self.snapshot, wanted, th)
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
        self.snapshot.full_scans()
        at = as_utc(at) or datetime.now(UTC)
        sql = f"""
        WITH named AS ({
            " UNION ".join(
                f"SELECT {c} AS pid FROM {t} WHERE {c} IS NOT NULL" for t, c, _ in scans.MENTIONS
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
            raise ValidationError(f"cannot parse query: {first_line(exc)}") from exc
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
        self.snapshot.full_scans()
        if self.store.read_only:
            return _run(self.con, query)
        self.con.execute("BEGIN TRANSACTION")
        try:
            return _run(self.con, query)
        finally:
            self.con.execute("ROLLBACK")


def _run(con: duckdb.DuckDBPyConnection, query: str) -> SqlResult:
    try:
        cur = con.execute(query)
        columns = [d[0] for d in cur.description or ()]
        rows = cur.fetchall()
    except duckdb.Error as exc:
        raise ValidationError(f"query failed: {first_line(exc)}") from exc
    return SqlResult(columns, rows)
