"""The `checkpoints` table: every signed tree head the ledger has kept, in signing order.

The table is created with the Merkle state (`treestore`), so every ledger file has it; this
module reads and appends rows, and says which origin the ledger has. Checking them is
`ledger.integrity`'s job.

`n` numbers the checkpoints 1, 2, 3, … in signing order, with no gap and no repeat (`verify`
fails on a gap: a signed checkpoint deleted). `vkey` holds the verifier key of every key that
signed the note, one per line (several after a key handover: C2SP notes carry one signature
line per key).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import duckdb

from ledger.store._store import default_origin

if TYPE_CHECKING:
    from ledger.store._store import Store

__all__ = [
    "SCHEMA_SQL",
    "Stored",
    "claim_origin",
    "default_origin",
    "insert",
    "latest",
    "ledger_origin",
    "record_first_origin",
    "stored",
]

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

    @property
    def vkeys(self) -> list[str]:
        """The verifier key of each key that signed the note (one per line of `vkey`)."""
        return [line.strip() for line in self.vkey.splitlines() if line.strip()]


def stored(con: duckdb.DuckDBPyConnection) -> list[Stored]:
    """Every stored checkpoint in signing order; none when the table does not exist."""
    try:
        rows = con.execute(
            "SELECT n, size, root, origin, note, vkey, created_at FROM checkpoints "
            "ORDER BY n, created_at"
        ).fetchall()
    except duckdb.CatalogException:
        return []
    return [Stored(int(n), int(s), bytes(r), o, t, v, c) for n, s, r, o, t, v, c in rows]


def latest(con: duckdb.DuckDBPyConnection) -> Stored | None:
    """The checkpoint signed last (largest n), or None."""
    history = stored(con)
    return history[-1] if history else None


def insert(con: duckdb.DuckDBPyConnection, row: Stored) -> None:
    """Keep one more signed checkpoint (the caller numbers and checks it first)."""
    con.execute(
        "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?)",
        [row.n, row.size, row.root, row.origin, row.note, row.vkey, row.created_at],
    )


# -- the ledger's origin -------------------------------------------------------------------------


def record_first_origin(con: duckdb.DuckDBPyConnection) -> None:
    """For a ledger made before origins were recorded: keep the origin of its first stored
    checkpoint as the ledger's origin (a no-op when one is recorded or none is stored).
    Called inside `Store._create`'s transaction, before the default is recorded."""
    con.execute(
        "INSERT INTO ledger_meta SELECT 'origin', origin FROM checkpoints "
        "ORDER BY n LIMIT 1 ON CONFLICT DO NOTHING"
    )


def claim_origin(store: Store, origin: str) -> None:
    """Record `origin` as the ledger's, for a ledger just created by a writer that was given
    one (`consume --origin`): allowed only while it holds no entry and no checkpoint, i.e.
    before anything could have been signed or proven under another origin."""
    from ledger.errors import StoreError

    if store.read_only:
        raise StoreError(f"{store.path} is open read-only")
    if store.size() or stored(store.con):
        raise StoreError(f"{store.path} already holds entries: its origin is fixed")
    store.con.execute("INSERT OR REPLACE INTO ledger_meta VALUES ('origin', ?)", [origin])


def ledger_origin(store: Store) -> str:
    """The ledger's origin: the one recorded in `ledger_meta` when it was created; for a ledger
    made before that (and not opened writable since, which records it), the origin of its
    first stored checkpoint, else `agent-ledger/<file stem>`. Never the current file name
    when anything else is known: a renamed copy keeps its log's identity (C2SP
    tlog-checkpoint: the origin is "a unique identifier for the log identity")."""
    recorded = store.origin()
    if recorded is not None:
        return recorded
    history = stored(store.con)
    return history[0].origin if history else default_origin(store.path)
