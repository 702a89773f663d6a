"""Query tables derived only from `entries`: a cache of the ledger, never a source of truth.

One plain table per event type, one row per event, appended inside the ledger's own transaction
(Arrow, no per-row SQL). Nothing is resolved at insert time (no ancestor paths to fix up when a
parent arrives late), so arrival order cannot change the tables' contents; lineage is walked at
query time with indexed point lookups. `rebuild` recreates every table from the payloads.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ledger.contract.codec import Codec
from ledger.contract.columns import SCHEMAS, TABLE_NAMES, Row, rows_to_arrow
from ledger.errors import StoreError
from ledger.store._store import Appended, Store
from ledger.store.schemas import ledger_codec

__all__ = [
    "INDEXES",
    "META_TABLE",
    "TABLE_NAMES",
    "UNCOMPRESSED",
    "Projections",
    "create_indexes",
    "insert_tables",
    "projected_size",
    "rebuild",
]

#: point lookups the investigator queries make (ART indexes; everything else is a scan).
#: Each costs ~0.1 µs per appended row; blast radius by principal or credential goes from a
#: scan of every action to a few hundred row fetches (bench/RESULTS.md, queries).
INDEXES: tuple[tuple[str, str], ...] = (
    ("actions", "action_id"),
    ("actions", "delegation_id"),
    ("actions", "principal_id"),
    ("actions", "credential_id"),
    ("delegations", "delegation_id"),
    ("credentials", "credential_id"),
    ("credentials", "delegation_id"),
    ("credentials", "principal_id"),
    ("decisions", "decision_id"),
    ("decisions", "action_id"),
)

#: high-cardinality columns that point lookups fetch row by row, stored without compression:
#: fetching one row of a DICT_FSST column costs ~10 µs, uncompressed ~1 µs (measured at 10M
#: events, where blast radius by principal fetches hundreds of actions). Low-cardinality
#: columns (principal_id, tool, operation) fetch cheaply compressed and stay so; scans pay
#: for the wider columns (see bench/RESULTS.md). Answers never depend on it.
UNCOMPRESSED: dict[str, frozenset[str]] = {
    "actions": frozenset({"action_id", "credential_id", "resource"}),
    "credentials": frozenset({"credential_id"}),
}
META_TABLE = "projection_meta"


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
        for table, columns, _ in SCHEMAS.values():
            cols = ", ".join(_column_ddl(table, n, t) for n, t in columns)
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

    def on_append(self, con: duckdb.DuckDBPyConnection, appended: Appended) -> None:
        batch = appended.batch
        insert_tables(con, appended.first_seq, batch.rows)
        # only extends a contiguous coverage: projections marked stale stay stale until rebuilt
        con.execute(
            f"UPDATE {META_TABLE} SET value = ? WHERE key = 'size' AND value = ?",
            [appended.first_seq + len(batch), appended.first_seq],
        )


def _column_ddl(table: str, name: str, sql_type: str) -> str:
    if name in UNCOMPRESSED.get(table, ()):
        return f"{name} {sql_type} USING COMPRESSION uncompressed"
    return f"{name} {sql_type}"


def create_indexes(con: duckdb.DuckDBPyConnection) -> None:
    """The `INDEXES`, on those tables that are base tables: a view standing in for one (an
    edit `verify` reports) must not stop the file from opening for `rebuild`."""
    tables = {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
        ).fetchall()
    }
    for table, column in INDEXES:
        if table in tables:
            con.execute(f"CREATE INDEX IF NOT EXISTS {table}_{column}_idx ON {table} ({column})")


def insert_tables(
    con: duckdb.DuckDBPyConnection, first_seq: int, rows: dict[str, pa.Table]
) -> None:
    """Insert `rows_to_arrow` tables, each row's seq being `first_seq` + its pos."""
    for etype, rows_of_type in rows.items():
        name = SCHEMAS[etype][0]
        table = rows_of_type
        if first_seq:
            table = table.set_column(0, "seq", pc.add(table.column(0), first_seq))
        view = f"_proj_{name}"
        con.register(view, table)
        try:
            con.execute(f"INSERT INTO {name} SELECT * FROM {view}")
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
    codec = ledger_codec(store.con, codec)  # and the writer schemas the file keeps by id
    con = store.con
    ext = Projections()
    done = 0
    try:
        con.execute("BEGIN TRANSACTION")
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
        for table in (*TABLE_NAMES, META_TABLE):
            # a view standing in for a projection table goes too (`verify` reports it)
            con.execute(f"DROP {'VIEW' if table in views else 'TABLE'} IF EXISTS {table}")
        ext.create_schema(con, indexes=False)
        reader_con = con.cursor()  # a second cursor streams entries while `con` inserts
        reader = reader_con.sql(
            "SELECT seq, event_id, payload FROM entries ORDER BY seq"
        ).to_arrow_reader(batch_size)
        for batch in reader:
            cols = batch.to_pydict()
            rows: list[Row] = []
            for seq, event_id, payload in zip(
                cols["seq"], cols["event_id"], cols["payload"], strict=True
            ):
                record, _ = codec.decode(payload)
                rows.append((seq, record["type"], event_id, record["occurred_at"], record["data"]))
            insert_tables(con, 0, rows_to_arrow(rows))
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
