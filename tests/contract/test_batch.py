"""The columnar batch decoder must give what decoding event by event gives: same verdicts, same
quarantine reasons, same projection rows, same arrival order."""

from __future__ import annotations

import io
import random
from typing import Any

import fastavro
import pyarrow as pa
import pytest

from ledger.contract import events
from ledger.contract.batch import Decoded, EventBatch, decode_values
from ledger.contract.codec import Codec
from ledger.contract.fastdecode import BatchDecoder
from ledger.store import Incoming
from tests import factories as f
from tests.contract.test_codec import OLD_DATUM, older_schema, write_with
from tests.contract.test_fastdecode import _samples


def _record(ev: dict[str, Any]) -> dict[str, Any]:
    return events.to_record(events.parse_event(ev))


def _assert_same(got: Decoded, want: Decoded) -> None:
    assert got.accepted == want.accepted
    assert got.event_id == want.event_id
    assert got.type == want.type
    assert got.occurred_at == want.occurred_at
    assert got.rejected == want.rejected
    assert got.rows.keys() == want.rows.keys()
    for etype, table in want.rows.items():
        assert got.rows[etype].equals(table), etype


def _invalid(codec: Codec) -> list[bytes]:
    """Well-formed Avro that `check_record` refuses, one per rule."""
    principal = _record(f.principal("agent:b"))
    granted = _record(f.granted("d-9", "user:a", "agent:b"))
    inverted = granted | {"data": granted["data"] | {"expires_at": granted["data"]["not_before"]}}
    return [
        codec.encode(principal | {"event_id": ""}),
        codec.encode(principal | {"producer": ""}),
        codec.encode(principal | {"data": principal["data"] | {"principal_id": ""}}),
        codec.encode(principal | {"occurred_at": events.MAX_MICROS + 1}),
        codec.encode(granted | {"data": granted["data"] | {"not_before": events.MIN_MICROS - 1}}),
        codec.encode(inverted),
        _mismatched(codec, principal | {"type": "principal.retired"}),
    ]


def _mismatched(codec: Codec, record: dict[str, Any]) -> bytes:
    """`record` with its data written as a PrincipalRegistered, whatever its type says."""
    body = io.BytesIO()
    datum = record | {"data": ("ledger.v1.PrincipalRegistered", record["data"])}
    fastavro.schemaless_writer(body, fastavro.parse_schema(codec.schema), datum)
    return codec.header + body.getvalue()


@pytest.mark.parametrize("seed", range(3))
def test_batch_decoder_agrees_with_event_by_event_decoding(codec: Codec, seed: int) -> None:
    rng = random.Random(seed)
    valid = [codec.encode(_record(ev)) for ev in _samples()]
    values: list[bytes | None] = [*valid, None, b"", *_invalid(codec)]
    for payload in valid:
        values.append(payload[: rng.randrange(len(payload))])
        b = bytearray(payload)
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(10, len(b))] = rng.randrange(256)
        values.append(bytes(b))
    values += valid
    rng.shuffle(values)

    want = decode_values(values, codec)  # fastavro and check_record, one event at a time
    got = decode_values(values, BatchDecoder(codec))

    _assert_same(got, want)
    assert len(want.rejected) >= len(_invalid(codec)) + 2
    reasons = " | ".join(r for _, r in want.rejected)
    for why in ("empty message", "event_id: String", "producer: String", "data.principal_id",
                "occurred_at: timestamp", "data.not_before", "expires_at must be after",
                "does not match data record"):  # fmt: skip
        assert why in reasons


def test_the_fast_path_decodes_valid_events_without_the_fallback(codec: Codec) -> None:
    values = [codec.encode(_record(ev)) for ev in _samples()] * 3
    decoder = BatchDecoder(codec)
    decoder.single = None  # type: ignore[assignment]  # any fallback would now fail loudly

    got = decode_values(values, decoder)

    assert got.accepted == list(range(len(values)))
    assert got.rejected == []
    assert sum(t.num_rows for t in got.rows.values()) == len(values)


def test_an_event_of_an_older_schema_keeps_its_place_in_the_batch() -> None:
    codec = Codec(extra_writer_schemas=[older_schema()])
    new = [codec.encode(_record(f.principal(f"agent:{i}"))) for i in range(3)]
    old = write_with(older_schema(), OLD_DATUM)
    values: list[bytes | None] = [new[0], old, b"junk", new[1], new[2]]

    got = decode_values(values, BatchDecoder(codec))

    _assert_same(got, decode_values(values, codec))
    assert got.accepted == [0, 1, 3, 4]
    assert got.event_id[1] == "old-1"
    rows = got.rows["principal.registered"]
    assert rows.column("pos").to_pylist() == [0, 1, 2, 3]
    assert rows.column("principal_id").to_pylist()[1] == "agent:x"
    assert rows.column("model").to_pylist()[1] is None


def test_rows_from_incoming_events_match_the_decoder(codec: Codec) -> None:
    payloads = [codec.encode(_record(ev)) for ev in _samples()]
    incoming = []
    for i, p in enumerate(payloads):
        record, _ = codec.decode(p)
        incoming.append(
            Incoming(record["event_id"], record["type"], record["occurred_at"], p, f"s{i}", record)
        )

    batch = EventBatch.from_incoming(incoming)
    decoded = decode_values(payloads, BatchDecoder(codec))

    assert batch.rows.keys() == decoded.rows.keys()
    for etype, table in batch.rows.items():
        assert table.equals(decoded.rows[etype]), etype
    assert decoded.batch(payloads, [f"s{i}" for i in range(len(payloads))]) == batch


def test_select_keeps_the_chosen_events_and_renumbers_their_rows(codec: Codec) -> None:
    evs = [f.principal("agent:a"), f.action("a-1", "agent:a"), f.principal("agent:b"),
           f.action("a-2", "agent:b"), f.action("a-3", "agent:b")]  # fmt: skip
    payloads = [codec.encode(_record(ev)) for ev in evs]
    batch = decode_values(payloads, BatchDecoder(codec)).batch(payloads, list("vwxyz"))

    kept = batch.select([1, 2, 4])

    assert kept.event_id == [evs[i]["event_id"] for i in (1, 2, 4)]
    assert kept.source == ["w", "x", "z"]
    assert kept.payload == [payloads[i] for i in (1, 2, 4)]
    actions = kept.rows["action.performed"]
    assert actions.column("pos").to_pylist() == [0, 2]
    assert actions.column("action_id").to_pylist() == ["a-1", "a-3"]
    principals = kept.rows["principal.registered"]
    assert principals.column("pos").to_pylist() == [1]
    assert principals.column("principal_id").to_pylist() == ["agent:b"]
    assert batch.select([]).rows == {}
    assert isinstance(kept.rows["action.performed"], pa.Table)
