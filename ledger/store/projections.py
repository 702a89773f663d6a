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
import pyarrow.compute as pc

from ledger.codec import Codec, default_codec
from ledger.errors import StoreError

if TYPE_CHECKING:
    from ledger.store import Appended, Store

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

_Row = tuple[int, str, str, int, dict[str, Any]]  # pos, type, event_id, occurred_at micros, data


def _arrow_schema(columns: Sequence[tuple[str, str]]) -> pa.Schema:
    return pa.schema([(name, _SQL_TO_ARROW.get(sql, pa.int64())) for name, sql in columns])


_SCHEMAS = {
    etype: (table, (*_COMMON, *cols), _arrow_schema((("pos", "BIGINT"), *_COMMON[1:], *cols)))
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

    def on_append(self, con: duckdb.DuckDBPyConnection, appended: Appended) -> None:
        batch = appended.batch
        insert_tables(con, appended.first_seq, batch.rows)
        # only extends a contiguous coverage: projections marked stale stay stale until rebuilt
        con.execute(
            f"UPDATE {META_TABLE} SET value = ? WHERE key = 'size' AND value = ?",
            [appended.first_seq + len(batch), appended.first_seq],
        )


def create_indexes(con: duckdb.DuckDBPyConnection) -> None:
    for table, column in INDEXES:
        con.execute(f"CREATE INDEX IF NOT EXISTS {table}_{column}_idx ON {table} ({column})")


def rows_to_arrow(items: Iterable[_Row]) -> dict[str, pa.Table]:
    """(pos, event type, event_id, occurred_at micros, data) -> one Arrow table per event type,
    in its table's column order with `pos` where `seq` goes (see `insert_tables`)."""
    groups: dict[str, list[_Row]] = defaultdict(list)
    for row in items:
        groups[row[1]].append(row)
    out: dict[str, pa.Table] = {}
    for etype, group in groups.items():
        spec = _SCHEMAS.get(etype)
        if spec is None:
            continue
        lists: list[list[Any]] = [[r[0] for r in group], [r[2] for r in group]]
        lists.append([r[3] for r in group])
        lists += [[r[4].get(name) for r in group] for name, _ in spec[1][3:]]
        out[etype] = columns_to_arrow(etype, lists)
    return out


def columns_to_arrow(etype: str, lists: Sequence[list[Any]]) -> pa.Table:
    """One event type's rows from its column lists (pos, event_id, occurred_at, data...)."""
    schema = _SCHEMAS[etype][2]
    arrays = [  # timestamps go in as ints of microseconds
        pa.array(values, field.type) for values, field in zip(lists, schema, strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def insert_tables(
    con: duckdb.DuckDBPyConnection, first_seq: int, rows: dict[str, pa.Table]
) -> None:
    """Insert `rows_to_arrow` tables, each row's seq being `first_seq` + its pos."""
    for etype, rows_of_type in rows.items():
        name = _SCHEMAS[etype][0]
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
            rows: list[_Row] = []
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
