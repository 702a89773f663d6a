"""The `checkpoints` table: every signed tree head the ledger has kept, in signing order.

The table is created with the Merkle state (`treestore`), so every ledger file has it; this
module reads and appends rows. Checking them is `ledger.integrity`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb

__all__ = ["SCHEMA_SQL", "Stored", "insert", "stored"]

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS checkpoints (
    n          BIGINT NOT NULL,
    size       BIGINT NOT NULL,
    root       BLOB NOT NULL,
    origin     VARCHAR NOT NULL,
    note       VARCHAR NOT NULL,
    vkey       VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Stored:
    """A row of the `checkpoints` table (n counts checkpoints in the order they were signed)."""

    n: int
    size: int
    root: bytes
    origin: str
    note: str
    vkey: str
    created_at: datetime


def stored(con: duckdb.DuckDBPyConnection) -> list[Stored]:
    """Every stored checkpoint in signing order; none when the table does not exist."""
    try:
        rows = con.execute(
            "SELECT n, size, root, origin, note, vkey, created_at FROM checkpoints ORDER BY n"
        ).fetchall()
    except duckdb.CatalogException:
        return []
    return [Stored(int(n), int(s), bytes(r), o, t, v, c) for n, s, r, o, t, v, c in rows]


def insert(con: duckdb.DuckDBPyConnection, row: Stored) -> None:
    """Keep one more signed checkpoint (the caller numbers and checks it first)."""
    con.execute(
        "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?)",
        [row.n, row.size, row.root, row.origin, row.note, row.vkey, row.created_at],
    )
