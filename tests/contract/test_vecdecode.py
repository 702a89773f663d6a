"""The columnar reader takes a payload only to give exactly the lean per-event reader's row.

`verify` trusts `ColumnarReader` for most entries; any row it took wrongly would be a false
difference (or, worse, a missed one). So: on generated events of every type (strings long and
short, unicode, empty; lists of any length, in one block or many; nulls; extreme integers) and
on damaged copies of them (bytes flipped, cut, added), every row the columnar reader takes
equals the lean reader's row for that payload, and it takes every undamaged payload of the
current schema that has no ten-byte varint.
"""

from __future__ import annotations

import random
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.contract import events
from ledger.contract.codec import Codec, default_codec
from ledger.contract.fastdecode import BatchDecoder
from ledger.contract.vecdecode import ColumnarReader, view_schema
from tests import factories as f

CODEC = default_codec()
text = st.one_of(
    st.text(max_size=3),
    st.text(min_size=10, max_size=14),
    st.text(max_size=60),
    st.sampled_from(["", "agent:planner-0001", "ü" * 7, "✓" * 5, "x" * 12, "y" * 13]),
)
optional = st.one_of(st.none(), text)
micros = st.one_of(
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.integers(0, 1 << 53),
    st.integers(-64, 64),
)
strings = st.lists(text, max_size=20)

DATA = {
    "principal.registered": st.fixed_dictionaries(
        {
            "principal_id": text,
            "kind": st.sampled_from(["human", "agent", "service", "tool"]),
            "display_name": optional,
            "owner_id": optional,
            "model": optional,
        }
    ),
    "principal.retired": st.fixed_dictionaries(
        {"principal_id": text, "retired_by": text, "reason": optional}
    ),
    "delegation.granted": st.fixed_dictionaries(
        {
            "delegation_id": text,
            "parent_delegation_id": optional,
            "delegator_id": text,
            "delegate_id": text,
            "scopes": strings,
            "resources": strings,
            "purpose": optional,
            "not_before": micros,
            "expires_at": micros,
            "may_redelegate": st.booleans(),
        }
    ),
    "delegation.revoked": st.fixed_dictionaries(
        {"delegation_id": text, "revoked_by": text, "reason": optional, "cascade": st.booleans()}
    ),
    "credential.issued": st.fixed_dictionaries(
        {
            "credential_id": text,
            "principal_id": text,
            "delegation_id": optional,
            "kind": st.sampled_from(["token", "api_key", "certificate", "password", "other"]),
            "scopes": strings,
            "expires_at": st.one_of(st.none(), micros),
            "fingerprint": text,
        }
    ),
    "credential.revoked": st.fixed_dictionaries(
        {"credential_id": text, "revoked_by": text, "reason": optional}
    ),
    "policy.decided": st.fixed_dictionaries(
        {
            "decision_id": text,
            "principal_id": text,
            "delegation_id": optional,
            "action_id": optional,
            "operation": text,
            "resource": text,
            "decision": st.sampled_from(["allow", "deny"]),
            "policy_id": text,
            "reasons": strings,
        }
    ),
    "action.performed": st.fixed_dictionaries(
        {
            "action_id": text,
            "principal_id": text,
            "delegation_id": optional,
            "credential_id": optional,
            "tool": optional,
            "operation": text,
            "resource": text,
            "outcome": st.sampled_from(["succeeded", "failed", "denied"]),
            "parent_action_id": optional,
            "decision_id": optional,
        }
    ),
}


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    etype = draw(st.sampled_from(sorted(DATA)))
    return {
        "event_id": draw(text),
        "type": etype,
        "occurred_at": draw(micros),
        "producer": draw(text),
        "trace_id": draw(optional),
        "span_id": draw(optional),
        "data": draw(DATA[etype]),
    }


def _plain(table: pa.Table) -> list[dict[str, Any]]:
    """Rows with timestamps as their microseconds (any int64, even beyond datetime's years)."""
    schema = pa.schema(
        [pa.field(f.name, pa.int64()) if pa.types.is_timestamp(f.type) else f for f in table.schema]
    )
    return table.cast(schema).to_pylist()


def _lean_rows(
    values: list[bytes | None], codec: Codec = CODEC
) -> dict[int, tuple[str, dict[str, Any]]]:
    """payload index -> (event type, row) as the lean per-event reader gives it."""
    out: dict[int, tuple[str, dict[str, Any]]] = {}
    lean = BatchDecoder(codec, checked=False)
    for i, value in enumerate(values):
        got = lean.read_columns([value])
        if got is None or not got[0]:
            continue
        ((etype, table),) = got[4].items()
        row = _plain(table.cast(view_schema(etype)))[0]
        row.pop("pos")
        out[i] = (etype, row)
    return out


def _columnar_rows(
    array: pa.Array, codec: Codec = CODEC
) -> tuple[dict[int, tuple[str, dict[str, Any]]], list[int]]:
    tables, rest = ColumnarReader(codec).read(array)
    out = {}
    for etype, table in tables.items():
        assert table.schema == view_schema(etype)
        for row in _plain(table):
            out[row.pop("pos")] = (etype, row)
    assert sorted([*out, *rest.tolist()]) == list(range(len(array)))  # each payload once
    return out, rest.tolist()


def _agree(
    values: list[bytes | None], array: pa.Array | None = None, codec: Codec = CODEC
) -> list[int]:
    """Every row the columnar reader takes is the lean reader's; returns what it left."""
    array = pa.array(values, pa.binary()) if array is None else array
    taken, rest = _columnar_rows(array, codec)
    lean = _lean_rows(values, codec)
    for i, row in taken.items():
        assert lean.get(i) == row, f"payload {i}: {values[i]!r}"
    return rest


def _has_ten_byte_varint(record: dict[str, Any]) -> bool:
    big = 1 << 62  # zig-zag values of 2^63 and more take ten bytes

    def wide(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and not -big <= v < big

    return wide(record["occurred_at"]) or any(wide(v) for v in record["data"].values())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records(), min_size=1, max_size=40))
def test_generated_payloads_give_the_lean_readers_rows(batch: list[dict[str, Any]]) -> None:
    values: list[bytes | None] = [CODEC.encode(r) for r in batch]
    rest = _agree(values)
    assert rest == [i for i, r in enumerate(batch) if _has_ten_byte_varint(r)]


@pytest.mark.parametrize("seed", range(4))
def test_damaged_payloads_are_never_taken_wrongly(seed: int) -> None:
    rng = random.Random(seed)
    samples = [
        f.principal("agent:a", display_name="Ä agent ✓", model="m-1"),
        f.granted("d-1", "user:alice", "agent:a", parent="d-0", scopes=["a:b", "c:*"]),
        f.revoked("d-1", cascade=False),
        f.credential("c-1", "agent:a", delegation="d-1", expires=None),
        f.decided("dec-1", "agent:a", decision="deny", action="a-1", delegation="d-1"),
        f.action("a-1", "agent:a", delegation="d-1", tool="sql", trace_id="t" * 300),
    ]
    values: list[bytes | None] = []
    intact: list[bytes] = []
    for ev in samples:
        payload = CODEC.encode(events.to_record(events.parse_event(ev)))
        intact += [payload] * 5
        values += [payload[:n] for n in range(len(payload))]
        values += [payload + bytes([rng.randrange(256)]), payload + b"\x00" * 40]
        for _ in range(300):
            b = bytearray(payload)
            for _ in range(rng.randint(1, 3)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            values.append(bytes(b))
    values += intact
    rng.shuffle(values)
    values.insert(rng.randrange(len(values)), None)
    rest = _agree(values)
    # the damage around them (bad UTF-8 included) never keeps intact payloads from being taken
    assert not {i for i, v in enumerate(values) if v in intact} & set(rest)
    assert len(rest) < len(values) - len(intact)  # and some damaged ones still parse


def _zigzag(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        if z < 0x80:
            return bytes(out + bytes([z]))
        out.append((z & 0x7F) | 0x80)
        z >>= 7


def _string(s: str) -> bytes:
    raw = s.encode()
    return _zigzag(len(raw)) + raw


def _grant_with_blocks(scopes: bytes, codec: Codec) -> bytes:
    """A delegation.granted payload with `scopes` spelled as the given array bytes."""
    data = next(f for f in codec.schema["fields"] if f["name"] == "data")
    branch = [b["name"] for b in data["type"]].index("DelegationGranted")
    envelope = _string("e-1") + _string("delegation.granted") + _zigzag(7) + _string("p")
    envelope += b"\x00\x00" + _zigzag(branch)
    body = _string("d-1") + b"\x00" + _string("user:a") + _string("agent:b") + scopes
    body += _zigzag(1) + _string("crm/*") + _zigzag(0) + b"\x00" + _zigzag(1) + _zigzag(2)
    return codec.header + envelope + body + b"\x01"


def test_lists_in_several_blocks_and_sized_blocks() -> None:
    one = _zigzag(2) + _string("a:b") + _string("c:d") + _zigzag(0)
    blocks = _zigzag(1) + _string("a:b") + _zigzag(1) + _string("c:d") + _zigzag(0)
    sized_items = _string("a:b") + _string("c:d")
    sized = _zigzag(-2) + _zigzag(len(sized_items)) + sized_items + _zigzag(0)
    empty = _zigzag(0)
    values: list[bytes | None] = [_grant_with_blocks(a, CODEC) for a in (one, blocks, sized, empty)]
    assert _agree(values) == []
    taken, _ = _columnar_rows(pa.array(values, pa.binary()))
    assert [taken[i][1]["scopes"] for i in range(4)] == [["a:b", "c:d"]] * 3 + [[]]


def test_sliced_and_large_binary_batches() -> None:
    batch = [
        CODEC.encode(events.to_record(events.parse_event(f.action(f"a-{i}", "agent:a"))))
        for i in range(50)
    ]
    values: list[bytes | None] = list(batch)
    whole = pa.array(values, pa.binary())
    assert _agree(values[7:31], whole.slice(7, 24)) == []
    assert _agree(values, whole.cast(pa.large_binary())) == []


def test_a_string_that_is_not_utf8_is_left_to_the_per_event_readers() -> None:
    good = CODEC.encode(events.to_record(events.parse_event(f.action("a-1", "agent:a"))))
    bad = good.replace(b"agent:a", b"agent:\xff")
    other = CODEC.encode(events.to_record(events.parse_event(f.principal("agent:b"))))
    assert _agree([good, bad, other]) == [1]


def test_confluent_framing_of_an_id_registered_with_the_current_schema() -> None:
    codec = Codec(schema_ids={7: default_codec().schema})
    body = [
        codec.encode(events.to_record(events.parse_event(ev)))[10:]
        for ev in (f.action("a-1", "agent:a"), f.principal("agent:b"))
    ]
    values: list[bytes | None] = [b"\x00" + (7).to_bytes(4, "big") + b for b in body]
    values.append(b"\x00" + (8).to_bytes(4, "big") + body[0])  # an id nobody registered
    values.append(b"\x01" + (7).to_bytes(4, "big") + body[0])  # not the Confluent magic
    assert _agree(values, codec=codec) == [2, 3]
    codec.register_id(8, default_codec().schema)  # registered later: read from then on
    assert _agree(values, codec=codec) == [3]
