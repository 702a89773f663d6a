"""The ledger file's catalog against the one a ledger is created with.

Every answer is a query, and a query is read through the file's own catalog: a macro saved in
the file can shadow a built-in function (`CREATE MACRO len(x) AS 1` makes every list look one
element long), a view can stand in for a table, and a column altered to `COLLATE NOCASE` or
another type makes two different values compare equal. None of that touches a row, so no check
of rows can see it. Here the file's tables are compared, by the `CREATE` statement DuckDB
renders for each, with those of a fresh in-memory ledger made by this code (same extensions),
and any macro, view, schema, sequence or type the ledger does not create is named.

Cost: a fresh in-memory ledger once per process (~20 ms) and a few catalog queries per call.
Indexes are not compared: they change speed, never an answer, and `rebuild` recreates them.
A table added to the ledger after format 1 (`LATER_TABLES`) may be absent from an older file
not opened writable since; when present it is compared like the rest.
"""

from __future__ import annotations

import functools
import re

import duckdb

from ledger.store._store import Store
from ledger.store.schemas import TABLE as SCHEMA_IDS

__all__ = ["LATER_TABLES", "catalog_problems", "expected_tables", "foreign_code"]

#: tables a ledger got after format 1 was first released: a file written before them has none
#: until it is next opened writable, and that is the same as holding no row (`schema_ids`: no
#: schema stored by id; its entries, if any, no longer decode, which `verify` reports)
LATER_TABLES = frozenset({SCHEMA_IDS})


@functools.cache
def expected_tables() -> dict[str, str]:
    """Table name -> the `CREATE TABLE` statement DuckDB renders for a fresh ledger."""
    with Store.open(":memory:") as store:
        return _tables(store.con)


#: a column's storage compression changes how fast rows are fetched, never what they hold; a
#: ledger made before `UNCOMPRESSED` columns existed (or rebuilt since) is still a ledger
_COMPRESSION = re.compile(r" USING COMPRESSION \w+")


def _tables(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    rows = con.execute(
        "SELECT table_name, sql FROM duckdb_tables() WHERE database_name = current_database()"
    ).fetchall()
    return {str(name): _COMPRESSION.sub("", str(sql)) for name, sql in rows}


def foreign_code(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Objects stored in the file that change how a query reads it: macros and functions,
    views, schemas, sequences and types the ledger never creates, as `kind name` strings."""
    found: list[str] = []
    queries = (
        ("macro", "SELECT function_name FROM duckdb_functions() WHERE NOT internal"),
        ("view", "SELECT view_name FROM duckdb_views() WHERE NOT internal"),
        ("schema", "SELECT schema_name FROM duckdb_schemas() WHERE NOT internal"),
        ("sequence", "SELECT sequence_name FROM duckdb_sequences() WHERE true"),
        ("type", "SELECT type_name FROM duckdb_types() WHERE NOT internal"),
    )
    for kind, sql in queries:
        rows = con.execute(f"{sql} AND database_name = current_database() ORDER BY 1").fetchall()
        found += [f"{kind} {name}" for (name,) in rows]
    return sorted(set(found))


def catalog_problems(con: duckdb.DuckDBPyConnection) -> list[str]:
    """One line per way the file's catalog differs from a ledger's: foreign code (see
    `foreign_code`), a table missing or not the ledger's, a ledger table defined otherwise
    (columns, types, collations, constraints). Empty when the catalog is a ledger's."""
    problems = [f"{what} is not part of a ledger" for what in foreign_code(con)]
    want, have = expected_tables(), _tables(con)
    for name in sorted(set(have) - set(want)):
        problems.append(f"table {name} is not part of a ledger")
    for name in sorted(set(want) & set(have)):
        if have[name] != want[name]:
            problems.append(f"table {name} is defined otherwise: {have[name]}")
    for name in sorted(set(want) - set(have) - LATER_TABLES):
        problems.append(f"table {name} is missing")
    return problems
