"""The projection columns of each event type: the one table of what a decoded event becomes.

Derived from the Avro schema and checked field by field against it and the pydantic models
(`tests/contract/test_columns.py`), so a field added to the contract in one place and not the
others fails a test. Pure: Arrow only, no database. The store creates its tables from
`TABLES`; the decoders (`fastdecode`, `batch`) fill Arrow tables in `SCHEMAS` order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

__all__ = [
    "COMMON",
    "SCHEMAS",
    "TABLES",
    "TABLE_NAMES",
    "Row",
    "columns_to_arrow",
    "rows_to_arrow",
]

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


def columns_to_arrow(etype: str, lists: Sequence[list[Any]]) -> pa.Table:
    """One event type's rows from its column lists (pos, event_id, occurred_at, data...)."""
    schema = SCHEMAS[etype][2]
    arrays = [  # timestamps go in as ints of microseconds
        pa.array(values, field.type) for values, field in zip(lists, schema, strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=schema)
