"""The event contract: malformed events are rejected, misconduct is recorded as it happened."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.contract import events
from ledger.errors import ValidationError
from tests import factories as f


def valid_events() -> list[dict[str, Any]]:
    return [
        f.principal("agent:planner", owner="user:alice", model="gpt-x"),
        f.retired("agent:planner"),
        f.granted("d-1", "user:alice", "agent:planner", purpose="report"),
        f.revoked("d-1", cascade=False),
        f.credential("c-1", "agent:planner", delegation="d-1"),
        f.credential_revoked("c-1"),
        f.decided("dec-1", "agent:planner", action="a-1", delegation="d-1"),
        f.action("a-1", "agent:planner", delegation="d-1", decision="dec-1", tool="tool:http"),
    ]


@pytest.mark.parametrize("ev", valid_events(), ids=lambda e: e["type"])
def test_every_type_parses_and_round_trips_through_the_avro_form(ev: dict[str, Any]) -> None:
    model = events.parse_event(ev)
    assert model.type == ev["type"]
    assert events.parse_event_json(json.dumps(ev)) == model
    record = events.to_record(model)
    assert isinstance(record["occurred_at"], int)
    assert events.check_record(record, events.EVENT_TYPES[ev["type"]][2]) is None
    assert events.parse_event(events.to_json_dict(record)) == model


def test_models_are_frozen() -> None:
    model = events.parse_event(valid_events()[0])
    with pytest.raises(Exception, match="frozen"):
        model.event_id = "other"  # type: ignore[misc]


def test_timestamps_are_utc_microseconds() -> None:
    ev = f.granted("d-1", "user:a", "agent:b")
    ev["occurred_at"] = "2026-03-23T12:00:00.123456+02:00"
    ev["data"]["not_before"] = "2026-03-23T10:00:00"  # naive: taken as UTC
    model = events.parse_event(ev)
    assert model.occurred_at == datetime(2026, 3, 23, 10, 0, 0, 123456, tzinfo=UTC)
    assert model.data.not_before.tzinfo is UTC  # type: ignore[union-attr]
    record = events.to_record(model)
    assert record["occurred_at"] == events.to_micros(model.occurred_at)
    assert events.from_micros(record["occurred_at"]) == model.occurred_at


def _mutate(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    ev = copy.deepcopy(base or f.granted("d-1", "user:alice", "agent:planner"))
    *parents, last = path.split(".")
    target = ev
    for p in parents:
        target = target[p]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return ev


_DELETE = object()

MALFORMED = {
    "missing envelope field": (_mutate("producer", _DELETE), "producer"),
    "missing data field": (_mutate("data.delegate_id", _DELETE), "delegate_id"),
    "missing type": (_mutate("type", _DELETE), "type"),
    "id as number": (_mutate("data.delegation_id", 42), "delegation_id"),
    "scopes as string": (_mutate("data.scopes", "crm:read"), "scopes"),
    "bool as string": (_mutate("data.may_redelegate", "true"), "may_redelegate"),
    "bool as int": (_mutate("data.may_redelegate", 1), "may_redelegate"),
    "cascade as string": (
        _mutate("data.cascade", "false", f.revoked("d-1")),
        "cascade",
    ),
    "unparseable timestamp": (_mutate("occurred_at", "yesterday at noon"), "occurred_at"),
    "impossible date": (_mutate("occurred_at", "2026-02-30T10:00:00Z"), "occurred_at"),
    "number as timestamp": (_mutate("occurred_at", 1774260000), "occurred_at"),
    "numeric string as timestamp": (_mutate("data.not_before", "1774260000"), "not_before"),
    "bare date as timestamp": (_mutate("data.expires_at", "2026-03-24"), "expires_at"),
    "empty event_id": (_mutate("event_id", ""), "event_id"),
    "empty data id": (_mutate("data.delegate_id", ""), "delegate_id"),
    "empty optional id": (_mutate("data.parent_delegation_id", ""), "parent_delegation_id"),
    "type not matching data": (_mutate("type", "delegation.revoked"), ""),
    "unknown type": (_mutate("type", "delegation.stolen"), "unknown event type"),
    "extra envelope field": (_mutate("tenant", "acme"), "tenant"),
    "extra data field": (_mutate("data.admin", True), "admin"),
    "unknown enum value": (
        _mutate("data.outcome", "maybe", f.action("a-1", "agent:x")),
        "outcome",
    ),
    "expires_at equals not_before": (
        _mutate("data.expires_at", f.at(0)),
        "expires_at must be after not_before",
    ),
    "expires_at before not_before": (
        _mutate("data.expires_at", f.at(-5)),
        "expires_at must be after not_before",
    ),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_events_are_rejected_with_a_reason(case: str) -> None:
    ev, needle = MALFORMED[case]
    with pytest.raises(ValidationError) as dict_err:
        events.parse_event(ev)
    with pytest.raises(ValidationError) as json_err:
        events.parse_event_json(json.dumps(ev))
    for err in (dict_err, json_err):
        reason = str(err.value)
        assert needle in reason
        assert "\n" not in reason


@pytest.mark.parametrize(
    ("text", "needle"),
    [("{not json", "not valid JSON"), ("[1, 2]", "JSON object"), ('"event"', "JSON object")],
)
def test_non_objects_are_rejected(text: str, needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        events.parse_event_json(text)
    with pytest.raises(ValidationError, match="JSON object"):
        events.parse_event([1, 2])


MISCONDUCT = {
    "agent without owner": f.principal("agent:rogue", owner=None),
    "action outside the delegation's scope": f.action(
        "a-9", "agent:planner", delegation="d-1", operation="hr:delete", resource="hr/salaries"
    ),
    "action with no delegation at all": f.action("a-8", "agent:planner"),
    "credential that never expires": f.credential("c-9", "agent:planner", expires=None),
    "denied but executed": f.action("a-7", "agent:x", outcome="succeeded", decision="dec-deny"),
    "delegation from a non-delegate": f.granted("d-9", "agent:intruder", "agent:x", parent="d-1"),
}


@pytest.mark.parametrize("case", MISCONDUCT, ids=list(MISCONDUCT))
def test_misconduct_is_well_formed_and_accepted(case: str) -> None:
    model = events.parse_event(MISCONDUCT[case])
    record = events.to_record(model)
    assert events.check_record(record, events.EVENT_TYPES[model.type][2]) is None


# -- check_record (the consumer's hot path) agrees with the models --------------------------

_IDS = st.sampled_from(["", "x", "agent:planner", "user:ålice", "d-1"])
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=6)
_NEAR_MIN = events.MIN_MICROS
_NEAR_MAX = events.MAX_MICROS
_TIMES = st.one_of(
    st.integers(1_700_000_000_000_000, 1_800_000_000_000_000),
    st.integers(_NEAR_MIN - 3, _NEAR_MIN + 3),
    st.integers(_NEAR_MAX - 3, _NEAR_MAX + 3),
    st.integers(-(2**63), 2**63 - 1),
)


def _field_value(draw: st.DrawFn, schema: Any) -> Any:
    if isinstance(schema, list):
        return None if draw(st.booleans()) else _field_value(draw, schema[1])
    if isinstance(schema, dict):
        if schema["type"] == "enum":
            return draw(st.sampled_from(schema["symbols"]))
        if schema["type"] == "array":
            return draw(st.lists(_TEXT, max_size=2))
        return draw(_TIMES)  # long with logicalType timestamp-micros
    return {"string": draw(_IDS | _TEXT), "boolean": draw(st.booleans()), "long": draw(_TIMES)}[
        schema
    ]


@st.composite
def avro_records(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """Records as Avro can carry them: any strings, any longs, type and branch chosen apart."""
    from ledger.contract.codec import current_schema

    branches = current_schema()["fields"][-1]["type"]
    branch = draw(st.sampled_from(branches))
    etype = events.RECORD_TO_TYPE[f"ledger.v1.{branch['name']}"]
    if draw(st.integers(0, 9)) == 0:
        etype = draw(st.sampled_from([*events.EVENT_TYPES, "principal.deleted"]))
    data = {fld["name"]: _field_value(draw, fld["type"]) for fld in branch["fields"]}
    record = {
        "event_id": draw(_IDS),
        "type": etype,
        "occurred_at": draw(_TIMES),
        "producer": draw(_IDS),
        "trace_id": draw(st.none() | _TEXT),
        "span_id": None,
        "data": data,
    }
    return record, f"ledger.v1.{branch['name']}"


def _json_time(micros: int) -> str:
    if micros < events.MIN_MICROS:
        return "0000-01-01T00:00:00Z"
    if micros > events.MAX_MICROS:
        return "10000-01-01T00:00:00Z"
    return events.from_micros(micros).isoformat().replace("+00:00", "Z")


def _json_form(record: dict[str, Any], record_name: str) -> dict[str, Any]:
    """The JSON form of a record; timestamps fields are known from the Avro branch."""
    from ledger.contract.codec import current_schema

    branch = next(
        b for b in current_schema()["fields"][-1]["type"] if f"ledger.v1.{b['name']}" == record_name
    )
    data = dict(record["data"])
    for fld in branch["fields"]:
        if "timestamp-micros" in json.dumps(fld["type"]) and data[fld["name"]] is not None:
            data[fld["name"]] = _json_time(data[fld["name"]])
    return {**record, "occurred_at": _json_time(record["occurred_at"]), "data": data}


@settings(max_examples=400, deadline=None)
@given(avro_records())
def test_check_record_agrees_with_the_models(case: tuple[dict[str, Any], str]) -> None:
    record, record_name = case
    reason = events.check_record(record, record_name)
    try:
        events.parse_event(_json_form(record, record_name))
    except ValidationError as exc:
        assert reason is not None, f"models reject ({exc}) but check_record accepts"
    else:
        assert reason is None, f"models accept but check_record says {reason}"


def test_check_record_names_the_problem() -> None:
    record = events.to_record(events.parse_event(f.granted("d-1", "user:a", "agent:b")))
    name = "ledger.v1.DelegationGranted"
    assert "does not match" in str(
        events.check_record({**record, "type": "action.performed"}, name)
    )
    assert "unknown event type" in str(events.check_record({**record, "type": "x.y"}, name))
    assert "event_id" in str(events.check_record({**record, "event_id": ""}, name))
    data = {**record["data"], "expires_at": record["data"]["not_before"]}
    assert "expires_at" in str(events.check_record({**record, "data": data}, name))
    data = {**record["data"], "parent_delegation_id": ""}
    assert "parent_delegation_id" in str(events.check_record({**record, "data": data}, name))
    assert "occurred_at" in str(events.check_record({**record, "occurred_at": 2**62}, name))
