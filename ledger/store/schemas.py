"""Writer schemas resolved by Confluent schema id, kept in the ledger file beside the entries.

An entry in the Confluent wire format (`ledger.contract.framing`) names its writer schema only
by an id that a Schema Registry assigned, and the ledger hashes the bytes as received; so the
schema has to stay with them, or no one could read those entries offline (`verify`, `rebuild`,
an auditor with a copy of the file). Each schema is stored in `schema_ids` in the same
transaction as the entries appended with it (`Store.append(schemas=...)`) and never rewritten:
the file, not the registry, says what a stored id means, as it says where reading resumes.

What a row holds is committed in `ledger_meta` with it: `schema_sha256:ID` is

    SHA-256(TAG || u64(id) || i64(recorded_at micros) || u32(len(schema)) || schema || source)

(big-endian, UTF-8). `verify` recomputes it for every row (`schema_problems`), so a row
edited, added or deleted is found and named by its id. Like the meta chain, it does not
withstand someone who rewrites `ledger_meta` too: checkpoints sign the entries' bytes, which
name the schema only by its id.

A ledger made before this table gets it empty when next opened writable; read-only, it may
lack it (`catalog.LATER_TABLES`), which is the same as holding no schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from typing import NamedTuple

import duckdb

from ledger.contract.codec import Codec, default_codec
from ledger.errors import CodecError

__all__ = [
    "DIGEST_PREFIX",
    "DIGEST_TAG",
    "TABLE",
    "TABLE_SQL",
    "StoredSchema",
    "insert_schemas",
    "ledger_codec",
    "row_digest",
    "schema_problems",
    "stored_schemas",
]

TABLE = "schema_ids"
TABLE_SQL = """
CREATE TABLE IF NOT EXISTS schema_ids (
    schema_id   BIGINT PRIMARY KEY,
    schema      VARCHAR NOT NULL,
    source      VARCHAR NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL
);
"""
#: `ledger_meta` key prefix of each row's digest (`row_digest`)
DIGEST_PREFIX = "schema_sha256:"
DIGEST_TAG = b"agent-ledger/schema-id/v1\x00"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class StoredSchema(NamedTuple):
    """A writer schema the ledger resolved by id: its text as received (the registry's
    `schema` string, or an `ID.avsc` file's content) and where it came from
    (`registry:URL`, `file:PATH`)."""

    schema_id: int
    schema: str
    source: str


def row_digest(row: StoredSchema, recorded_us: int) -> bytes:
    """The digest `ledger_meta` keeps of one `schema_ids` row (see the module docstring)."""
    text, source = row.schema.encode(), row.source.encode()
    h = sha256(DIGEST_TAG)
    h.update(row.schema_id.to_bytes(8, "big") + recorded_us.to_bytes(8, "big", signed=True))
    h.update(len(text).to_bytes(4, "big") + text + source)
    return h.digest()


def _has_table(con: duckdb.DuckDBPyConnection) -> bool:
    rows = con.execute(
        "SELECT count(*) FROM duckdb_tables() "
        "WHERE database_name = current_database() AND table_name = ?",
        [TABLE],
    ).fetchall()
    return bool(rows[0][0])


def _rows(con: duckdb.DuckDBPyConnection) -> list[tuple[StoredSchema, int]]:
    """Every row with its recorded_at in microseconds, by id."""
    if not _has_table(con):
        return []
    rows = con.execute(
        f"SELECT schema_id, schema, source, epoch_us(recorded_at) FROM {TABLE} ORDER BY 1"
    ).fetchall()
    return [(StoredSchema(int(i), str(t), str(s)), int(u)) for i, t, s, u in rows]


def stored_schemas(con: duckdb.DuckDBPyConnection) -> dict[int, StoredSchema]:
    """Every schema the file holds, by id (none when the file has no `schema_ids` table)."""
    return {row.schema_id: row for row, _ in _rows(con)}


def insert_schemas(
    con: duckdb.DuckDBPyConnection, rows: Iterable[StoredSchema], recorded_us: int
) -> None:
    """Store `rows` (ids the file does not hold yet) and their digests, inside the caller's
    transaction. Raises `duckdb.Error` (a constraint, for an id already held)."""
    rows = list(rows)
    if not rows:
        return
    when = _EPOCH + timedelta(microseconds=recorded_us)
    con.executemany(
        f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?)",
        [[r.schema_id, r.schema, r.source, when] for r in rows],
    )
    con.executemany(
        "INSERT OR REPLACE INTO ledger_meta VALUES (?, ?)",
        [[f"{DIGEST_PREFIX}{r.schema_id}", row_digest(r, recorded_us).hex()] for r in rows],
    )


def schema_problems(con: duckdb.DuckDBPyConnection) -> list[str]:
    """One line per `schema_ids` row that is not what the ledger stored, or that the ledger
    cannot read entries with; empty when all agree. Each row's digest is recomputed and
    compared with the one recorded in `ledger_meta`: a row edited, added or deleted is named
    by its schema id."""
    recorded = {
        int(str(key).removeprefix(DIGEST_PREFIX)): str(value)
        for key, value in con.execute(
            "SELECT key, value FROM ledger_meta WHERE starts_with(key, ?)", [DIGEST_PREFIX]
        ).fetchall()
    }
    problems: list[str] = []
    codec = Codec()
    held: set[int] = set()
    for row, recorded_us in _rows(con):
        held.add(row.schema_id)
        want = recorded.get(row.schema_id)
        where = f"{TABLE}: the row of schema id {row.schema_id}"
        if want is None:
            problems.append(f"{where} was never recorded by the ledger (no {DIGEST_PREFIX} mark)")
            continue
        if row_digest(row, recorded_us).hex() != want:
            problems.append(f"{where} differs from the one the ledger stored (its digest)")
            continue
        try:
            codec.register_id(row.schema_id, json.loads(row.schema))
        except (CodecError, ValueError) as exc:
            problems.append(f"{where} cannot read entries: {exc}")
    for schema_id in sorted(set(recorded) - held):
        problems.append(
            f"{TABLE}: the row of schema id {schema_id}, which the ledger stored, is missing"
        )
    return problems


def ledger_codec(
    con: duckdb.DuckDBPyConnection, codec: Codec | None = None, *, fresh: bool = False
) -> Codec:
    """The codec that reads this file's entries: `codec` (default: the shipped one) and the
    writer schemas the file stores by schema id.

    Without stored schemas (and without `fresh`) that is `codec` itself; otherwise a new codec
    with `codec`'s extra schemas, the file's ids and those of `codec`'s the file does not hold
    (the file's meaning of an id wins), so neither a caller's codec nor the process-wide one
    is ever changed. A stored schema that does not register is refused with a
    reason naming its id (its entries then fail to decode with it; `schema_problems` reports
    the row)."""
    base = codec or default_codec()
    rows = stored_schemas(con)
    if not rows and not fresh:
        return base
    out = Codec(base.extra_schemas)
    for schema_id, row in rows.items():
        try:
            out.register_id(schema_id, json.loads(row.schema))
        except (CodecError, ValueError) as exc:
            out.refuse_id(
                schema_id,
                f"schema id {schema_id}: the schema stored for it in {TABLE} is not usable: {exc}",
            )
    for schema_id, writer in base.schema_ids.items():
        if schema_id not in rows:
            out.register_id(schema_id, writer)
    return out
