"""Avro single-object encoding: golden bytes, fingerprints, schema evolution, clear errors."""

from __future__ import annotations

import copy
import io
import json
import shutil
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form
from hypothesis import given, settings
from hypothesis import strategies as st

import ledger.contract.codec as codec_module
from bench.generate import generate
from ledger.contract import events
from ledger.contract.codec import HEADER_LEN, MAGIC, Codec, current_schema
from ledger.errors import CodecError
from tests import factories as f

GOLDEN_EVENT = {
    "event_id": "0193c1a0-0000-7000-8000-000000000042",
    "type": "delegation.granted",
    "occurred_at": "2026-03-23T10:00:00.000001Z",
    "producer": "orchestrator-7",
    "trace_id": "trace-1",
    "span_id": None,
    "data": {
        "delegation_id": "d-2",
        "parent_delegation_id": "d-1",
        "delegator_id": "agent:planner",
        "delegate_id": "agent:reporter",
        "scopes": ["crm:read", "crm:export"],
        "resources": ["crm/accounts/*"],
        "purpose": "quarterly report ✓",
        "not_before": "2026-03-23T10:00:00Z",
        "expires_at": "2026-03-23T11:00:00Z",
        "may_redelegate": False,
    },
}
#: The wire bytes of GOLDEN_EVENT. If this changes, the wire contract changed: producers in
#: other languages and every stored payload are affected (release the old schema, see README).
GOLDEN_HEX = (
    "c301b1e956d1b7c1a55a4830313933633161302d303030302d373030302d383030302d303030303030303030"
    "3034322464656c65676174696f6e2e6772616e74656482a0d090c3eba6061c6f7263686573747261746f722d"
    "37020e74726163652d31000406642d320206642d311a6167656e743a706c616e6e65721c6167656e743a7265"
    "706f72746572041063726d3a726561641463726d3a6578706f727400021c63726d2f6163636f756e74732f2a"
    "000228717561727465726c79207265706f727420e29c9380a0d090c3eba60680b0edf9ddeba60600"
)

# -- an independent CRC-64-AVRO (the Avro specification's reference algorithm) ---------------

_EMPTY = 0xC15D213AA4D7A795


def _table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_CRC_TABLE = _table()


def crc64_avro(data: bytes) -> int:
    fp = _EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _CRC_TABLE[(fp ^ byte) & 0xFF]
    return fp


def encode(ev: dict[str, Any], codec: Codec) -> bytes:
    return codec.encode(events.to_record(events.parse_event(ev)))


def test_golden_bytes(codec: Codec) -> None:
    payload = encode(GOLDEN_EVENT, codec)
    assert payload.hex() == GOLDEN_HEX
    assert payload[:2] == b"\xc3\x01"
    canonical = to_parsing_canonical_form(fastavro.parse_schema(current_schema()))
    assert payload[2:10] == crc64_avro(canonical.encode()).to_bytes(8, "little")


def test_golden_bytes_decode_with_plain_fastavro() -> None:
    """A reader that is not this codebase (fastavro with logical types) gets the event back."""
    body = io.BytesIO(bytes.fromhex(GOLDEN_HEX)[HEADER_LEN:])
    record = fastavro.schemaless_reader(body, fastavro.parse_schema(current_schema()), None)
    assert body.read() == b""
    assert record["event_id"] == GOLDEN_EVENT["event_id"]
    assert record["occurred_at"] == datetime(2026, 3, 23, 10, 0, 0, 1, tzinfo=UTC)
    assert record["data"]["purpose"] == "quarterly report ✓"
    assert record["data"]["may_redelegate"] is False
    assert record["span_id"] is None


def test_fastavro_fingerprint_agrees_with_independent_crc64() -> None:
    # the Avro specification's own test vector
    assert crc64_avro(b'"null"') == 7195948357588979594
    canonical = to_parsing_canonical_form(fastavro.parse_schema(current_schema()))
    for text in ['"null"', '"int"', canonical]:
        assert (
            fingerprint(text, "CRC-64-AVRO")
            == crc64_avro(text.encode()).to_bytes(8, "little").hex()
        )


def test_codec_fingerprint_is_the_header(codec: Codec) -> None:
    assert codec.header == MAGIC + codec.fingerprint
    assert len(codec.fingerprint) == 8
    assert codec.known_fingerprints[0] == codec.fingerprint.hex()


@pytest.mark.parametrize("etype", list(events.EVENT_TYPES))
def test_round_trip_every_type(codec: Codec, etype: str) -> None:
    ev = next(e for e in _factory_events() if e["type"] == etype)
    record = events.to_record(events.parse_event(ev))
    payload = codec.encode(record)
    decoded, name = codec.decode(payload)
    assert decoded == record
    assert name == events.EVENT_TYPES[etype][2]
    assert codec.peek_envelope(payload) == (record["event_id"], etype, record["occurred_at"])


def _factory_events() -> list[dict[str, Any]]:
    return [
        f.principal("agent:p", model="m"),
        f.retired("agent:p"),
        f.granted("d-1", "user:a", "agent:p"),
        f.revoked("d-1"),
        f.credential("c-1", "agent:p", expires=None),
        f.credential_revoked("c-1"),
        f.decided("dec-1", "agent:p", decision="deny"),
        f.action("a-1", "agent:p", outcome="denied"),
    ]


def _fastavro_bytes(codec: Codec, record: dict[str, Any]) -> bytes:
    datum = {**record, "data": (events.EVENT_TYPES[record["type"]][2], record["data"])}
    out = io.BytesIO()
    out.write(codec.header)
    fastavro.schemaless_writer(out, fastavro.parse_schema(current_schema()), datum)
    return out.getvalue()


def test_fast_encoder_writes_exactly_what_fastavro_writes(codec: Codec) -> None:
    for ev in generate(1500, seed=11):
        record = events.to_record(events.parse_event(ev))
        assert codec.encode(record) == _fastavro_bytes(codec, record)


@settings(max_examples=150, deadline=None)
@given(
    text=st.text(max_size=200),
    big=st.integers(-(2**63), 2**63 - 1),
    n=st.integers(0, 300),
)
def test_fast_encoder_matches_fastavro_on_long_strings_and_extreme_numbers(
    text: str, big: int, n: int
) -> None:
    codec = codec_module.default_codec()
    ev = f.credential("c-1", "agent:p")
    record = events.to_record(events.parse_event(ev))
    record = {**record, "occurred_at": big, "producer": text or "p"}
    record["data"] = {**record["data"], "scopes": [text] * (n % 70), "credential_id": "c" * n}
    try:
        expected = _fastavro_bytes(codec, record)
    except (ValueError, TypeError):  # lone surrogates cannot be UTF-8: fastavro refuses too
        with pytest.raises(CodecError):
            codec.encode(record)
        return
    assert codec.encode(record) == expected
    assert codec.decode(expected)[0] == record


def test_encode_errors_are_codec_errors(codec: Codec) -> None:
    record = events.to_record(events.parse_event(f.action("a-1", "agent:p")))
    with pytest.raises(CodecError, match="unknown event type"):
        codec.encode({**record, "type": "action.undone"})
    with pytest.raises(CodecError, match="cannot encode"):
        codec.encode({**record, "data": {**record["data"], "outcome": "maybe"}})
    with pytest.raises(CodecError, match="cannot encode"):
        codec.encode({**record, "producer": "\ud800"})


# -- decoding errors ------------------------------------------------------------------------


@pytest.fixture
def payload(codec: Codec) -> bytes:
    return encode(GOLDEN_EVENT, codec)


def test_random_bytes(codec: Codec) -> None:
    with pytest.raises(CodecError, match=r"not Avro single-object encoding \(c301\) or the Con"):
        codec.decode(bytes(range(1, 40)))
    # a first byte 0x00 is the Confluent wire format: bytes 1-4 are a schema id
    with pytest.raises(CodecError, match=r"unknown schema id 16909060 \(Confluent wire format\)"):
        codec.decode(bytes(range(40)))
    with pytest.raises(CodecError, match="shorter than the 10-byte header"):
        codec.decode(b"\xc3\x01\x00")


def test_wrong_magic(codec: Codec, payload: bytes) -> None:
    with pytest.raises(CodecError, match="starts with c300, expected c301"):
        codec.decode(b"\xc3\x00" + payload[2:])


def test_unknown_fingerprint(codec: Codec, payload: bytes) -> None:
    bogus = payload[:2] + b"\x11" * 8 + payload[10:]
    with pytest.raises(CodecError, match="unknown schema fingerprint 1111111111111111"):
        codec.decode(bogus)
    with pytest.raises(CodecError, match="unknown schema fingerprint"):
        codec.peek_envelope(bogus)


def test_truncated_body_at_every_length(codec: Codec, payload: bytes) -> None:
    for cut in range(HEADER_LEN, len(payload)):
        with pytest.raises(CodecError) as err:
            codec.decode(payload[:cut])
        assert "truncated" in str(err.value) or "undecodable" in str(err.value), cut


def test_trailing_bytes(codec: Codec, payload: bytes) -> None:
    with pytest.raises(CodecError, match="3 trailing bytes after the Avro record"):
        codec.decode(payload + b"\x00\x00\x00")


def test_union_index_out_of_range(codec: Codec, payload: bytes) -> None:
    broken = payload.replace(b"\x00\x04\x06d-2", b"\x00\x7e\x06d-2")  # data branch 63
    with pytest.raises(CodecError, match="union or enum index out of range"):
        codec.decode(broken)


def test_any_corruption_is_a_codec_error_or_a_record(codec: Codec, payload: bytes) -> None:
    """Fuzz: decoding never fails with anything but a CodecError."""
    import random

    rng = random.Random(7)
    for i in range(3000):
        if i % 2:
            body = rng.randbytes(rng.randint(0, 60))
            candidate = codec.header + body
        else:
            mutable = bytearray(payload)
            for _ in range(rng.randint(1, 3)):
                mutable[rng.randrange(HEADER_LEN, len(mutable))] = rng.getrandbits(8)
            candidate = bytes(mutable)
        try:
            record, name = codec.decode(candidate)
        except CodecError:
            continue
        assert name in events.RECORD_TO_TYPE
        assert isinstance(record["event_id"], str)


def test_invalid_utf8(codec: Codec, payload: bytes) -> None:
    broken = payload.replace(b"orchestrator-7", b"orchestrator\xff7")
    with pytest.raises(CodecError, match="UTF-8"):
        codec.decode(broken)


def test_peek_envelope_errors(codec: Codec, payload: bytes) -> None:
    with pytest.raises(CodecError, match="truncated"):
        codec.peek_envelope(payload[:12])
    with pytest.raises(CodecError):
        codec.peek_envelope(payload[:10] + b"\xff" * 12)


# -- schema evolution -----------------------------------------------------------------------


def older_schema() -> dict[str, Any]:
    """The contract before `span_id` and `PrincipalRegistered.model` existed."""
    schema = copy.deepcopy(current_schema())
    schema["fields"] = [fld for fld in schema["fields"] if fld["name"] != "span_id"]
    for branch in schema["fields"][-1]["type"]:
        if branch["name"] == "PrincipalRegistered":
            branch["fields"] = [fld for fld in branch["fields"] if fld["name"] != "model"]
    return schema


def write_with(schema: dict[str, Any], datum: dict[str, Any]) -> bytes:
    canonical = to_parsing_canonical_form(fastavro.parse_schema(copy.deepcopy(schema)))
    out = io.BytesIO()
    out.write(MAGIC + crc64_avro(canonical.encode()).to_bytes(8, "little"))
    fastavro.schemaless_writer(out, fastavro.parse_schema(copy.deepcopy(schema)), datum)
    return out.getvalue()


OLD_DATUM = {
    "event_id": "old-1",
    "type": "principal.registered",
    "occurred_at": 1_774_260_000_000_000,
    "producer": "idp-v0",
    "trace_id": None,
    "data": (
        "ledger.v1.PrincipalRegistered",
        {"principal_id": "agent:x", "kind": "agent", "display_name": None, "owner_id": "user:a"},
    ),
}


def test_event_written_with_an_older_schema_is_read_by_the_current_one() -> None:
    payload = write_with(older_schema(), OLD_DATUM)
    with pytest.raises(CodecError, match="unknown schema fingerprint"):
        Codec().decode(payload)
    codec = Codec(extra_writer_schemas=[older_schema()])
    assert len(codec.known_fingerprints) == 2
    record, name = codec.decode(payload)
    assert name == "ledger.v1.PrincipalRegistered"
    assert record["span_id"] is None  # filled from the reader's default
    assert record["data"]["model"] is None
    assert record["data"]["owner_id"] == "user:a"
    assert codec.peek_envelope(payload) == ("old-1", "principal.registered", 1_774_260_000_000_000)
    assert events.check_record(record, name) is None


def test_registering_the_current_schema_is_a_no_op() -> None:
    codec = Codec(extra_writer_schemas=[current_schema()])
    assert codec.known_fingerprints == [codec.fingerprint.hex()]


def test_writer_schema_must_keep_the_envelope_prefix() -> None:
    schema = older_schema()
    schema["fields"] = [schema["fields"][1], schema["fields"][0], *schema["fields"][2:]]
    with pytest.raises(CodecError, match="must start with fields event_id, type, occurred_at"):
        Codec(extra_writer_schemas=[schema])


def test_released_schemas_folder_is_picked_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file dropped in ledger/schemas/released is registered, without touching the real one."""
    package = tmp_path / "ledger"
    released = package / "schemas" / "released"
    released.mkdir(parents=True)
    shutil.copy(
        Path(str(resources.files("ledger.schemas") / "audit_event.avsc")), package / "schemas"
    )
    (released / "audit_event.v0.avsc").write_text(json.dumps(older_schema()))
    (released / "README.txt").write_text("not a schema")

    class FakeResources:
        @staticmethod
        def files(anchor: str) -> Path:
            assert anchor == "ledger"
            return package

    monkeypatch.setattr(codec_module, "resources", FakeResources)
    assert codec_module.released_schemas() == [older_schema()]
    record, _ = Codec().decode(write_with(older_schema(), OLD_DATUM))
    assert record["event_id"] == "old-1"


# -- the Confluent wire format: 0x00, 4-byte schema id, body ---------------------------------


def confluent(schema_id: int, schema: dict[str, Any], datum: dict[str, Any]) -> bytes:
    """A value as Confluent's serializers write it, from fastavro alone."""
    out = io.BytesIO()
    out.write(b"\x00" + schema_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(out, fastavro.parse_schema(copy.deepcopy(schema)), datum)
    return out.getvalue()


def test_a_schema_id_decodes_once_registered(codec: Codec, payload: bytes) -> None:
    value = b"\x00\x00\x00\x00\x07" + payload[HEADER_LEN:]
    with pytest.raises(CodecError, match=r"unknown schema id 7 \(Confluent wire format\)"):
        codec.decode(value)
    mine = Codec(schema_ids={7: current_schema()})
    assert mine.decode(value) == codec.decode(payload)
    assert mine.peek_envelope(value) == codec.peek_envelope(payload)
    assert mine.current_headers == {value[:5]} and mine.knows_id(7)
    assert not codec.knows_id(7)  # the shared codec is never changed


def test_an_older_writer_schema_by_id_is_resolved_to_the_current_one() -> None:
    value = confluent(3, older_schema(), OLD_DATUM)
    codec = Codec(schema_ids={3: older_schema()})
    assert codec.current_headers == set()  # not the current schema: fastavro resolves it
    record, name = codec.decode(value)
    assert (name, record["span_id"], record["data"]["model"]) == (
        "ledger.v1.PrincipalRegistered",
        None,
        None,
    )
    assert codec.peek_envelope(value) == ("old-1", "principal.registered", 1_774_260_000_000_000)


def test_a_schema_the_reader_cannot_resolve_is_refused_naming_the_id() -> None:
    codec = Codec()
    order = {"type": "record", "name": "Order", "fields": [{"name": "id", "type": "string"}]}
    with pytest.raises(CodecError, match=r"schema id 9: cannot be read as ledger\.v1\.AuditEvent"):
        codec.register_id(9, order)
    with pytest.raises(CodecError, match="schema id 9: not an Avro record schema"):
        codec.register_id(9, "string")
    millis = copy.deepcopy(current_schema())
    millis["fields"][2]["type"] = {"type": "long", "logicalType": "timestamp-millis"}
    with pytest.raises(CodecError, match="timestamp-micros is written as long"):
        codec.register_id(9, millis)
    assert not codec.knows_id(9)


def test_what_an_id_means_never_changes() -> None:
    codec = Codec(schema_ids={5: current_schema()})
    codec.register_id(5, current_schema())  # the same schema again: nothing to do
    with pytest.raises(CodecError, match="schema id 5: already registered with another"):
        codec.register_id(5, older_schema())
    codec.refuse_id(5, "ignored")
    assert codec.knows_id(5)


def test_a_refused_id_is_quarantined_with_its_reason_until_registered(payload: bytes) -> None:
    codec = Codec()
    value = b"\x00\x00\x00\x00\x0b" + payload[HEADER_LEN:]
    codec.refuse_id(11, "schema id 11: not found at the registry")
    with pytest.raises(CodecError, match=r"^schema id 11: not found at the registry$"):
        codec.decode(value)
    codec.register_id(11, current_schema())
    assert codec.refused_ids() == {} and codec.decode(value)[1] == "ledger.v1.DelegationGranted"


def test_the_id_state_rebuilds_the_same_codec(payload: bytes) -> None:
    codec = Codec(schema_ids={1: current_schema(), 2: older_schema()})
    codec.refuse_id(3, "schema id 3: no")
    copy_ = Codec()
    copy_.load_id_state(codec.id_state())
    assert copy_.id_state() == codec.id_state()
    assert copy_.current_headers == codec.current_headers
    value = b"\x00\x00\x00\x00\x01" + payload[HEADER_LEN:]
    assert copy_.decode(value) == codec.decode(value)
