"""The projection columns of each event type: the one table of what a decoded event becomes.

`TABLES` is derived from the shipped Avro schema at import (one column per field of each `data`
record, in field order), so the wire form and the tables cannot drift apart; only the table
names live here. The pydantic models and the builders are checked field by field against the
same schema (`tests/contract/test_columns.py`). Pure: Arrow only, no database. The store
creates its tables from `TABLES`; the decoders (`fastdecode`, `batch`) fill Arrow tables in
`SCHEMAS` order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

from ledger.contract.codec import current_schema, full_name
from ledger.contract.events import EVENT_TYPES

__all__ = [
    "COMMON",
    "SCHEMAS",
    "TABLES",
    "TABLE_NAMES",
    "TABLE_OF",
    "Row",
    "columns_to_arrow",
    "data_records",
    "derive_tables",
    "rows_to_arrow",
    "sql_type",
]

_TS = pa.timestamp("us", tz="UTC")
_SQL_TO_ARROW: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "VARCHAR[]": pa.list_(pa.string()),
    "TIMESTAMPTZ": _TS,
    "BOOLEAN": pa.bool_(),
}

#: event type -> the projection table its events are appended to
TABLE_OF: dict[str, str] = {
    "principal.registered": "principals",
    "principal.retired": "retirements",
    "delegation.granted": "delegations",
    "delegation.revoked": "revocations",
    "credential.issued": "credentials",
    "credential.revoked": "credential_revocations",
    "policy.decided": "decisions",
    "action.performed": "actions",
}


def sql_type(avro_type: Any) -> str:
    """The column type of one Avro field type; a type with no column mapping is an error.

    string and enum -> VARCHAR, array of those -> VARCHAR[], timestamp-micros long ->
    TIMESTAMPTZ, boolean -> BOOLEAN; `["null", T]` is T (every data column is nullable).
    """
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        if len(avro_type) == 2 and len(branches) == 1:
            return sql_type(branches[0])
    elif avro_type == "string":
        return "VARCHAR"
    elif avro_type == "boolean":
        return "BOOLEAN"
    elif isinstance(avro_type, dict):
        kind = avro_type.get("type")
        if kind == "enum":
            return "VARCHAR"
        if kind == "long" and avro_type.get("logicalType") == "timestamp-micros":
            return "TIMESTAMPTZ"
        if kind == "array" and sql_type(avro_type["items"]) == "VARCHAR":
            return "VARCHAR[]"
    raise TypeError(f"no projection column type for the Avro type {avro_type!r}")


def data_records(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Full record name -> record, for every branch of `AuditEvent.data`."""
    data = next(f for f in schema["fields"] if f["name"] == "data")
    namespace = schema.get("namespace", "")
    return {full_name(record, namespace): record for record in data["type"]}


def derive_tables(schema: dict[str, Any]) -> dict[str, tuple[str, tuple[tuple[str, str], ...]]]:
    """`TABLES` of an `AuditEvent` schema: one column per field of each data record, in order."""
    records = data_records(schema)
    return {
        etype: (
            TABLE_OF[etype],
            tuple((f["name"], sql_type(f["type"])) for f in records[record]["fields"]),
        )
        for etype, (_, _, record) in EVENT_TYPES.items()
    }


#: event type -> (table, data columns with their SQL types), derived from the shipped Avro
#: schema; every table also starts with seq, event_id and occurred_at of the entry the row came
#: from.
TABLES = derive_tables(current_schema())
TABLE_NAMES = tuple(table for table, _ in TABLES.values())
COMMON = (("seq", "BIGINT"), ("event_id", "VARCHAR"), ("occurred_at", "TIMESTAMPTZ"))

Row = tuple[int, str, str, int, dict[str, Any]]  # pos, type, event_id, occurred_at micros, data


def _arrow_schema(columns: Sequence[tuple[str, str]]) -> pa.Schema:
    return pa.schema([(name, _SQL_TO_ARROW.get(sql, pa.int64())) for name, sql in columns])


SCHEMAS = {
    etype: (table, (*COMMON, *cols), _arrow_schema((("pos", "BIGINT"), *COMMON[1:], *cols)))
    for etype, (table, cols) in TABLES.items()
}


def rows_to_arrow(items: Iterable[Row]) -> dict[str, pa.Table]:
    """(pos, event type, event_id, occurred_at micros, data) -> one Arrow table per event type,
    in its table's column order with `pos` where `seq` goes (see `insert_tables`)."""
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in items:
        groups[row[1]].append(row)
    out: dict[str, pa.Table] = {}
    for etype, group in groups.items():
        spec = SCHEMAS.get(etype)
        if spec is None:
            continue
        lists: list[list[Any]] = [[r[0] for r in group], [r[2] for r in group]]
        lists.append([r[3] for r in group])
        lists += [[r[4].get(name) for r in group] for name, _ in spec[1][3:]]
        out[etype] = columns_to_arrow(etype, lists)
    return out


def columns_to_arrow(etype: str, lists: Sequence[list[Any]], raw: bool = False) -> pa.Table:
    """One event type's rows from its column lists (pos, event_id, occurred_at, data...).

    With `raw`, string values may be UTF-8 `bytes`: they are read as binary and cast, which
    validates them in bulk (raises `pyarrow.ArrowInvalid` on bytes that are not UTF-8)."""
    schema = SCHEMAS[etype][2]
    arrays = [  # timestamps go in as ints of microseconds
        _raw_array(values, field.type) if raw else pa.array(values, field.type)
        for values, field in zip(lists, schema, strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _raw_array(values: list[Any], kind: pa.DataType) -> pa.Array:
    if kind == pa.string():
        return pa.array(values, pa.binary()).cast(kind)
    if kind == pa.list_(pa.string()):
        return pa.array(values, pa.list_(pa.binary())).cast(kind)
    return pa.array(values, kind)
