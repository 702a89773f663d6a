"""Query tables derived only from `entries`: a cache of the ledger, never a source of truth.

One plain table per event type, one row per event, appended inside the ledger's own transaction
(Arrow, no per-row SQL). Nothing is resolved at insert time (no ancestor paths to fix up when a
parent arrives late), so arrival order cannot change the tables' contents; lineage is walked at
query time with indexed point lookups. `rebuild` recreates every table from the payloads.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from ledger.codec import Codec, default_codec
from ledger.errors import StoreError

if TYPE_CHECKING:
    from ledger.store import Entry, Store

_TS = pa.timestamp("us", tz="UTC")
_SQL_TO_ARROW: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "VARCHAR[]": pa.list_(pa.string()),
    "TIMESTAMPTZ": _TS,
    "BOOLEAN": pa.bool_(),
}

#: event type -> (table, data columns with their SQL types); every table also starts with
#: seq, event_id and occurred_at of the entry the row came from.
TABLES: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "principal.registered": (
        "principals",
        (
            ("principal_id", "VARCHAR"),
            ("kind", "VARCHAR"),
            ("display_name", "VARCHAR"),
            ("owner_id", "VARCHAR"),
            ("model", "VARCHAR"),
        ),
    ),
    "principal.retired": (
        "retirements",
        (("principal_id", "VARCHAR"), ("retired_by", "VARCHAR"), ("reason", "VARCHAR")),
    ),
    "delegation.granted": (
        "delegations",
        (
            ("delegation_id", "VARCHAR"),
            ("parent_delegation_id", "VARCHAR"),
            ("delegator_id", "VARCHAR"),
            ("delegate_id", "VARCHAR"),
            ("scopes", "VARCHAR[]"),
            ("resources", "VARCHAR[]"),
            ("purpose", "VARCHAR"),
            ("not_before", "TIMESTAMPTZ"),
            ("expires_at", "TIMESTAMPTZ"),
            ("may_redelegate", "BOOLEAN"),
        ),
    ),
    "delegation.revoked": (
        "revocations",
        (
            ("delegation_id", "VARCHAR"),
            ("revoked_by", "VARCHAR"),
            ("reason", "VARCHAR"),
            ("cascade", "BOOLEAN"),
        ),
    ),
    "credential.issued": (
        "credentials",
        (
            ("credential_id", "VARCHAR"),
            ("principal_id", "VARCHAR"),
            ("delegation_id", "VARCHAR"),
            ("kind", "VARCHAR"),
            ("scopes", "VARCHAR[]"),
            ("expires_at", "TIMESTAMPTZ"),
            ("fingerprint", "VARCHAR"),
        ),
    ),
    "credential.revoked": (
        "credential_revocations",
        (("credential_id", "VARCHAR"), ("revoked_by", "VARCHAR"), ("reason", "VARCHAR")),
    ),
    "policy.decided": (
        "decisions",
        (
            ("decision_id", "VARCHAR"),
            ("principal_id", "VARCHAR"),
            ("delegation_id", "VARCHAR"),
            ("action_id", "VARCHAR"),
            ("operation", "VARCHAR"),
            ("resource", "VARCHAR"),
            ("decision", "VARCHAR"),
            ("policy_id", "VARCHAR"),
            ("reasons", "VARCHAR[]"),
        ),
    ),
    "action.performed": (
        "actions",
        (
            ("action_id", "VARCHAR"),
            ("principal_id", "VARCHAR"),
            ("delegation_id", "VARCHAR"),
            ("credential_id", "VARCHAR"),
            ("tool", "VARCHAR"),
            ("operation", "VARCHAR"),
            ("resource", "VARCHAR"),
            ("outcome", "VARCHAR"),
            ("parent_action_id", "VARCHAR"),
            ("decision_id", "VARCHAR"),
        ),
    ),
}
TABLE_NAMES = tuple(table for table, _ in TABLES.values())
_COMMON = (("seq", "BIGINT"), ("event_id", "VARCHAR"), ("occurred_at", "TIMESTAMPTZ"))

#: point lookups the investigator queries make (ART indexes; everything else is a scan)
INDEXES: tuple[tuple[str, str], ...] = (
    ("actions", "action_id"),
    ("delegations", "delegation_id"),
    ("credentials", "credential_id"),
    ("decisions", "decision_id"),
    ("decisions", "action_id"),
)
META_TABLE = "projection_meta"

_Row = tuple[int, str, int, dict[str, Any]]  # seq, event_id, occurred_at micros, data


def _arrow_schema(columns: Sequence[tuple[str, str]]) -> pa.Schema:
    return pa.schema([(name, _SQL_TO_ARROW.get(sql, pa.int64())) for name, sql in columns])


_SCHEMAS = {
    etype: (table, (*_COMMON, *cols), _arrow_schema((*_COMMON, *cols)))
    for etype, (table, cols) in TABLES.items()
}


class Projections:
    """The `StoreExtension` keeping the investigator tables current with every append."""

    name = "projections"

    def create_schema(self, con: duckdb.DuckDBPyConnection, indexes: bool = True) -> None:
        existing = {
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
            ).fetchall()
        }
        for table, columns, _ in _SCHEMAS.values():
            cols = ", ".join(f"{n} {t}" for n, t in columns)
            con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({cols})")
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key VARCHAR NOT NULL, value BIGINT NOT NULL)"
        )
        if META_TABLE in existing and not set(TABLE_NAMES) <= existing:
            # a table was dropped: what is left no longer covers the ledger until a rebuild
            con.execute(f"UPDATE {META_TABLE} SET value = -1 WHERE key = 'size'")
        con.execute(
            f"INSERT INTO {META_TABLE} SELECT 'size', 0 "
            f"WHERE NOT EXISTS (SELECT 1 FROM {META_TABLE} WHERE key = 'size')"
        )
        if indexes:
            create_indexes(con)

    def on_append(self, con: duckdb.DuckDBPyConnection, entries: Sequence[Entry]) -> None:
        insert_rows(
            con, ((e.type, (e.seq, e.event_id, e.occurred_at, e.record["data"])) for e in entries)
        )
        # only extends a contiguous coverage: projections marked stale stay stale until rebuilt
        con.execute(
            f"UPDATE {META_TABLE} SET value = ? WHERE key = 'size' AND value = ?",
            [entries[-1].seq + 1, entries[0].seq],
        )


def create_indexes(con: duckdb.DuckDBPyConnection) -> None:
    for table, column in INDEXES:
        con.execute(f"CREATE INDEX IF NOT EXISTS {table}_{column}_idx ON {table} ({column})")


def insert_rows(con: duckdb.DuckDBPyConnection, rows: Iterable[tuple[str, _Row]]) -> None:
    """Insert (event type, row) pairs into their tables, one Arrow table per event type."""
    groups: dict[str, list[_Row]] = defaultdict(list)
    for etype, row in rows:
        groups[etype].append(row)
    for etype, group in groups.items():
        spec = _SCHEMAS.get(etype)
        if spec is None:
            continue
        table, columns, schema = spec
        arrays = [
            pa.array([r[0] for r in group], pa.int64()),
            pa.array([r[1] for r in group], pa.string()),
            pa.array([r[2] for r in group], pa.int64()).cast(_TS),
        ]
        for name, sql in columns[3:]:
            values = [r[3].get(name) for r in group]
            if sql == "TIMESTAMPTZ":
                arrays.append(pa.array(values, pa.int64()).cast(_TS))
            else:
                arrays.append(pa.array(values, _SQL_TO_ARROW[sql]))
        view = f"_proj_{table}"
        con.register(view, pa.Table.from_arrays(arrays, schema=schema))
        try:
            con.execute(f"INSERT INTO {table} SELECT * FROM {view}")
        finally:
            con.unregister(view)


def projected_size(con: duckdb.DuckDBPyConnection) -> int | None:
    """How many entries the projections cover; None when they are missing or incomplete."""
    try:
        row = con.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'size'").fetchone()
        present = con.execute(
            "SELECT count(*) FROM duckdb_tables() "
            "WHERE database_name = current_database() AND table_name IN (SELECT unnest(?))",
            [list(TABLE_NAMES)],
        ).fetchone()
    except duckdb.CatalogException:
        return None
    if row is None or present is None or present[0] != len(TABLE_NAMES) or row[0] < 0:
        return None
    return int(row[0])


def rebuild(
    store: Store,
    codec: Codec | None = None,
    batch_size: int = 50_000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Drop every projection table and rebuild it from the entries' payloads; returns rows read.

    One transaction: a failure leaves the old projections in place. Indexes are built after the
    bulk load, which is several times faster than maintaining them row by row.
    """
    if store.read_only:
        raise StoreError(f"{store.path} is open read-only; rebuild needs write access")
    codec = codec or default_codec()
    con = store.con
    ext = Projections()
    done = 0
    try:
        con.execute("BEGIN TRANSACTION")
        for table in (*TABLE_NAMES, META_TABLE):
            con.execute(f"DROP TABLE IF EXISTS {table}")
        ext.create_schema(con, indexes=False)
        reader_con = con.cursor()  # a second cursor streams entries while `con` inserts
        reader = reader_con.sql(
            "SELECT seq, event_id, payload FROM entries ORDER BY seq"
        ).to_arrow_reader(batch_size)
        for batch in reader:
            cols = batch.to_pydict()
            rows: list[tuple[str, _Row]] = []
            for seq, event_id, payload in zip(
                cols["seq"], cols["event_id"], cols["payload"], strict=True
            ):
                record, _ = codec.decode(payload)
                rows.append(
                    (record["type"], (seq, event_id, record["occurred_at"], record["data"]))
                )
            insert_rows(con, rows)
            done += len(rows)
            if progress:
                progress(done)
        reader_con.close()
        con.execute(f"UPDATE {META_TABLE} SET value = ? WHERE key = 'size'", [store.size()])
        create_indexes(con)
        con.execute("COMMIT")
    except BaseException as exc:
        con.execute("ROLLBACK")
        if isinstance(exc, duckdb.Error):
            raise StoreError(f"rebuild of {store.path} failed: {exc}") from exc
        raise
    return done
