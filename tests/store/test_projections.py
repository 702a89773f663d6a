"""Projections are a cache of `entries`: same transaction as the append, rebuildable exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from ledger.errors import StoreError
from ledger.query.ledger import Ledger
from ledger.store import Store
from ledger.store.projections import (
    INDEXES,
    TABLE_NAMES,
    UNCOMPRESSED,
    Projections,
    projected_size,
    rebuild,
)
from tests import factories as f
from tests.query.test_rules import build, scenario


def _answers(db: Path) -> dict[str, Any]:
    with Ledger.open(db) as ledger:
        return {
            "violations": [v.to_dict() for v in ledger.violations()],
            "traces": [ledger.trace(a).to_dict() for a in ("cv1", "km1", "dd2", "nd1")],
            "blast": ledger.blast_radius(delegation="c1").to_dict() | {"at": None},
            "blast_p": ledger.blast_radius(principal="agent:a").to_dict() | {"at": None},
            "inventory": [i.to_dict() for i in ledger.inventory(at=f.T0)],
            "tables": {
                t: ledger.sql(f"SELECT * FROM {t} ORDER BY seq").to_dict() for t in TABLE_NAMES
            },
        }


def test_one_row_per_event_in_its_table(db_path: Path) -> None:
    events = [
        f.principal("user:alice", kind="human"),
        f.principal("agent:a"),
        f.retired("agent:a", minutes=50),
        f.granted("d1", "user:alice", "agent:a", scopes=["crm:read", "crm:write"]),
        f.revoked("d1", cascade=False, minutes=40),
        f.credential("k1", "agent:a", "d1", expires=None),
        f.credential_revoked("k1", minutes=5),
        f.decided("x1", "agent:a", "deny", action="a1"),
        f.action("a1", "agent:a", "d1", tool="http"),
    ]
    build(db_path, events)
    with Store.open(db_path, read_only=True) as store:
        con = store.con
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLE_NAMES}
        assert counts == dict.fromkeys(TABLE_NAMES, 1) | {"principals": 2}
        row = con.execute(
            "SELECT delegation_id, scopes, not_before, expires_at, may_redelegate, seq "
            "FROM delegations"
        ).fetchone()
        assert row[0] == "d1" and row[1] == ["crm:read", "crm:write"] and row[4] is True
        assert row[2] == f.T0 and (row[3] - row[2]).total_seconds() == 3600
        assert row[5] == 3
        assert con.execute("SELECT cascade FROM revocations").fetchone()[0] is False
        assert con.execute("SELECT expires_at FROM credentials").fetchone()[0] is None
        assert projected_size(con) == len(events)


def test_a_failed_append_leaves_no_projection_rows(db_path: Path) -> None:
    build(db_path, [f.principal("agent:a")])

    class Boom:
        name = "boom"

        def create_schema(self, con: duckdb.DuckDBPyConnection) -> None:
            pass

        def on_append(self, con: duckdb.DuckDBPyConnection, entries: Any) -> None:
            raise duckdb.Error("boom")

    with pytest.raises(StoreError):
        build(
            db_path,
            [f.principal("agent:b"), f.action("a1", "agent:b")],
            extensions=[Projections(), Boom()],
        )
    with Store.open(db_path, read_only=True) as store:
        assert store.con.execute("SELECT count(*) FROM principals").fetchone()[0] == 1
        assert store.con.execute("SELECT count(*) FROM actions").fetchone()[0] == 0
        assert projected_size(store.con) == store.size() == 1


def test_rebuild_gives_identical_answers(tmp_path: Path) -> None:
    events, _ = scenario()
    db = build(tmp_path / "l.duckdb", events, batch_size=37)
    before = _answers(db)
    with Store.open(db) as store:
        assert rebuild(store, batch_size=100) == len(events)
    assert _answers(db) == before
    with Store.open(db) as store:
        for table in TABLE_NAMES:
            store.con.execute(f"DROP TABLE {table}")
    with pytest.raises(StoreError, match="rebuild"):
        Ledger.open(db)
    with Store.open(db) as store:
        rebuild(store)
    assert _answers(db) == before


def test_stale_projections_are_refused_not_silently_wrong(db_path: Path) -> None:
    build(db_path, [f.principal("agent:a"), f.action("a1", "agent:a")])
    with Store.open(db_path) as store:
        store.con.execute("UPDATE projection_meta SET value = 1")
    with pytest.raises(StoreError, match="cover 1 of 2 entries"):
        Ledger.open(db_path)


def test_rebuild_needs_write_access(db_path: Path) -> None:
    build(db_path, [f.principal("agent:a")])
    with Store.open(db_path, read_only=True) as store, pytest.raises(StoreError):
        rebuild(store)


def test_a_dropped_table_stays_stale_after_more_appends(db_path: Path) -> None:
    build(db_path, [f.principal("agent:a"), f.action("a1", "agent:a")])
    with Store.open(db_path) as store:
        store.con.execute("DROP TABLE actions")
    build(db_path, [f.action("a2", "agent:a")])  # recreates an empty `actions`, appends
    with pytest.raises(StoreError, match="rebuild"):
        Ledger.open(db_path)
    with Store.open(db_path) as store:
        rebuild(store)
    with Ledger.open(db_path) as ledger:
        assert [
            r["action_id"] for r in ledger.sql("SELECT action_id FROM actions ORDER BY 1").to_dict()
        ] == ["a1", "a2"]


def test_point_lookup_columns_are_stored_uncompressed_and_indexed(db_path: Path) -> None:
    build(db_path, scenario()[0])
    con = duckdb.connect(str(db_path))
    try:
        con.execute("FORCE CHECKPOINT")
        for table, columns in UNCOMPRESSED.items():
            storage = con.execute(
                f"SELECT DISTINCT column_name, compression FROM pragma_storage_info('{table}') "
                "WHERE segment_type = 'VARCHAR'"
            ).fetchall()
            kinds = {c: {k for n, k in storage if n == c} for c in columns}
            assert all(k <= {"Uncompressed", "Constant"} for k in kinds.values()), kinds
        indexed = set(
            con.execute("SELECT table_name, expressions FROM duckdb_indexes()").fetchall()
        )
        assert {(t, f"[{c}]") for t, c in INDEXES} <= indexed
    finally:
        con.close()


def test_a_ledger_made_before_uncompressed_columns_still_opens_with_the_same_answers(
    tmp_path: Path,
) -> None:
    """Compression changes how rows are fetched, never what they hold: a file whose tables
    were created without the clause (older ledgers) passes the catalog check and gives the
    same answers as one created now."""
    events = scenario()[0]
    new = build(tmp_path / "new.duckdb", events)
    old = build(tmp_path / "old.duckdb", events)
    con = duckdb.connect(str(old))
    try:
        for (index,) in con.execute("SELECT index_name FROM duckdb_indexes()").fetchall():
            con.execute(f"DROP INDEX {index}")
        for table in UNCOMPRESSED:
            cols = con.execute(
                "SELECT column_name, data_type FROM duckdb_columns() "
                "WHERE table_name = ? ORDER BY column_index",
                [table],
            ).fetchall()
            ddl = ", ".join(f"{n} {t}" for n, t in cols)
            con.execute(f"CREATE TABLE {table}_old ({ddl})")
            con.execute(f"INSERT INTO {table}_old SELECT * FROM {table}")
            con.execute(f"DROP TABLE {table}")
            con.execute(f"ALTER TABLE {table}_old RENAME TO {table}")
        assert "USING COMPRESSION" not in str(
            con.execute("SELECT sql FROM duckdb_tables() WHERE table_name = 'actions'").fetchone()
        )
    finally:
        con.close()
    with Store.open(old) as store:
        Projections().create_schema(store.con)
    assert _answers(old) == _answers(new)
