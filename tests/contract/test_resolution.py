"""Writer -> reader schema resolution decided up front, as fastavro then reads (Avro 1.11 rules)."""

from __future__ import annotations

import copy
import io
from typing import Any

import fastavro
import pytest

from ledger.contract.codec import current_schema, released_schemas
from ledger.contract.resolution import resolution_problem


def _record(name: str, *fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields), **extra}


def _reads(writer: dict[str, Any], reader: dict[str, Any], datum: Any) -> bool:
    """Whether fastavro reads `datum` written with `writer` using `reader`."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(copy.deepcopy(writer)), datum)
    out.seek(0)
    try:
        fastavro.schemaless_reader(
            out, fastavro.parse_schema(copy.deepcopy(writer)), fastavro.parse_schema(reader)
        )
    except Exception:
        return False
    return True


def test_the_shipped_and_released_schemas_resolve_to_the_current_one() -> None:
    reader = current_schema()
    assert resolution_problem(reader, reader) is None
    for older in released_schemas():
        assert resolution_problem(older, reader) is None


CASES: list[tuple[str, dict[str, Any], dict[str, Any], Any, str | None]] = [
    (
        "promotion",
        _record("R", {"name": "a", "type": "int"}),
        _record("R", {"name": "a", "type": "long"}),
        {"a": 1},
        None,
    ),
    (
        "no promotion back",
        _record("R", {"name": "a", "type": "long"}),
        _record("R", {"name": "a", "type": "int"}),
        {"a": 1},
        "field a: the writer's long cannot be read as int",
    ),
    (
        "missing field with default",
        _record("R"),
        _record("R", {"name": "a", "type": ["null", "string"], "default": None}),
        {},
        None,
    ),
    (
        "missing field without default",
        _record("R"),
        _record("R", {"name": "a", "type": "string"}),
        {},
        "field a: the reader needs it",
    ),
    (
        "extra writer field",
        _record("R", {"name": "a", "type": "string"}, {"name": "b", "type": "long"}),
        _record("R", {"name": "a", "type": "string"}),
        {"a": "x", "b": 2},
        None,
    ),
    (
        "other record name",
        _record("Order", {"name": "a", "type": "string"}),
        _record("R", {"name": "a", "type": "string"}),
        {"a": "x"},
        "the writer's record Order is not the reader's record R",
    ),
    (
        "enum symbol the reader lacks",
        _record("R", {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["a", "z"]}}),
        _record("R", {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["a"]}}),
        {"e": "a"},
        "enum E has no symbol 'z'",
    ),
    (
        "writer union with a branch the reader lacks",
        _record("R", {"name": "u", "type": ["null", "string", "long"]}),
        _record("R", {"name": "u", "type": ["null", "string"]}),
        {"u": "x"},
        "field u, writer union branch 2: the writer's long matches no branch",
    ),
    (
        "a reader union takes the writer's type",
        _record("R", {"name": "u", "type": "string"}),
        _record("R", {"name": "u", "type": ["null", "string"]}),
        {"u": "x"},
        None,
    ),
    (
        "named reference",
        _record(
            "R",
            {"name": "a", "type": {"type": "enum", "name": "E", "symbols": ["x"]}},
            {"name": "b", "type": "E"},
        ),
        _record(
            "R",
            {"name": "a", "type": {"type": "enum", "name": "E", "symbols": ["x", "y"]}},
            {"name": "b", "type": "E"},
        ),
        {"a": "x", "b": "x"},
        None,
    ),
    (
        "recursive record",
        _record("N", {"name": "next", "type": ["null", "N"]}),
        _record("N", {"name": "next", "type": ["null", "N"]}),
        {"next": {"next": None}},
        None,
    ),
]


@pytest.mark.parametrize(("writer", "reader", "datum", "problem"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_cases_agree_with_what_fastavro_reads(
    writer: dict[str, Any], reader: dict[str, Any], datum: Any, problem: str | None
) -> None:
    found = resolution_problem(writer, reader)
    if problem is None:
        assert found is None
        assert _reads(writer, reader, datum)
    else:
        assert found is not None and problem in found


def test_a_different_timestamp_unit_is_refused_though_avro_would_read_it() -> None:
    reader = current_schema()
    writer = copy.deepcopy(reader)
    writer["fields"][2]["type"] = {"type": "long", "logicalType": "timestamp-millis"}
    problem = resolution_problem(writer, reader)
    assert problem == (
        "field occurred_at: the reader's timestamp-micros is written as long (timestamp-millis)"
    )


def test_a_schema_that_does_not_parse_is_a_problem() -> None:
    assert "not a valid Avro schema" in str(resolution_problem({"type": "nope"}, current_schema()))
