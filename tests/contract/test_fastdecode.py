"""The consumer's generated decoder must agree with `Codec.decode` on every input, good or bad."""

from __future__ import annotations

import random
from typing import Any

import pytest

from ledger.contract import events
from ledger.contract.codec import Codec, current_schema
from ledger.contract.fastdecode import BatchDecoder, FastDecoder
from ledger.errors import CodecError
from tests import factories as f


def _samples() -> list[dict[str, Any]]:
    return [
        f.principal("agent:a", display_name="Ä agent ✓", model="m-1"),
        f.principal("user:alice", kind="human", owner=None),
        f.retired("agent:a"),
        f.granted(
            "d-1",
            "user:alice",
            "agent:a",
            parent="d-0",
            scopes=["a:b", "c:*"],
            resources=[],
            purpose="p",
        ),
        f.revoked("d-1", cascade=False),
        f.credential("c-1", "agent:a", delegation="d-1", expires=None),
        f.credential_revoked("c-1"),
        f.decided("dec-1", "agent:a", decision="deny", action="a-1", delegation="d-1"),
        f.action(
            "a-1",
            "agent:a",
            delegation="d-1",
            credential_id="c-1",
            tool="sql",
            parent="a-0",
            decision="dec-1",
            trace_id="t" * 300,
        ),
    ]


def _outcome(decode: Any, payload: bytes) -> Any:
    try:
        return decode(payload)
    except CodecError as exc:
        return ("error", str(exc))


def test_same_records_as_the_codec_without_falling_back(codec: Codec) -> None:
    fast = FastDecoder(codec)
    samples = _samples()
    payloads = [codec.encode(events.to_record(events.parse_event(ev))) for ev in samples]
    expected = [codec.decode(p) for p in payloads]
    fast.codec = None  # type: ignore[assignment]  # any fallback would now fail loudly

    assert [fast.decode(p) for p in payloads] == expected
    for (record, _), ev in zip(expected, samples, strict=True):
        assert events.to_json_dict(record) == ev


@pytest.mark.parametrize("seed", range(3))
def test_same_verdict_on_damaged_bytes(codec: Codec, seed: int) -> None:
    rng = random.Random(seed)
    fast = FastDecoder(codec)
    for ev in _samples():
        payload = codec.encode(events.to_record(events.parse_event(ev)))
        damaged = [payload[:n] for n in range(len(payload))]
        damaged += [payload + bytes([rng.randrange(256)])]
        for _ in range(150):
            b = bytearray(payload)
            for _ in range(rng.randint(1, 3)):
                b[rng.randrange(10, len(b))] = rng.randrange(256)
            damaged.append(bytes(b))
        for bad in damaged:
            assert _outcome(fast.decode, bad) == _outcome(codec.decode, bad), bad.hex()


def _varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append(z & 0x7F | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def test_read_long_agrees_with_the_varint_definition_at_every_length() -> None:
    from ledger.contract.fastdecode import _read_long, _Reject

    rng = random.Random(5)
    values = [0, -1, 1, 63, -64, 64, (1 << 63) - 1, -(1 << 63), 1_774_260_000_000_000]
    for bits in range(1, 64):
        values += [(1 << bits) - 1, 1 << bits, -(1 << bits), rng.getrandbits(bits)]
    for v in [v for v in values if -(1 << 63) <= v < 1 << 63]:
        wire = b"\x07" + _varint(v) + b"\x99\x01"
        assert _read_long(wire, 1) == (v, 1 + len(_varint(v))), v
        with pytest.raises((IndexError, _Reject)):
            _read_long(wire[: len(_varint(v))], 1)  # cut short: never a value


def test_the_lean_batch_reader_gives_the_same_rows(codec: Codec) -> None:
    """`BatchDecoder(checked=False)` (verify's reader) reads the same projection rows as the
    consumer's, raw UTF-8 strings included, and gives up on a batch with a non-UTF-8 string."""
    from ledger.contract.fastdecode import BatchDecoder

    payloads = [codec.encode(events.to_record(events.parse_event(ev))) for ev in _samples()]
    full = BatchDecoder(codec).read_columns(payloads)
    lean = BatchDecoder(codec, checked=False).read_columns(payloads)
    assert full is not None and lean is not None
    assert lean[0] == full[0] and lean[5] == full[5] == []
    assert (lean[1], lean[2], lean[3]) == ([], [], [])
    assert lean[4].keys() == full[4].keys()
    for etype, table in full[4].items():
        assert lean[4][etype].equals(table), etype
    name = b"agent:a"
    broken = payloads[0].replace(name, b"agent:\xff", 1)
    assert BatchDecoder(codec, checked=False).read_columns([broken]) is None


def test_an_id_of_the_current_schema_is_read_by_the_fast_paths_alike() -> None:
    """Values in the Confluent wire format naming an id of the current schema: the same records
    and rows as their single-object twins, without falling back; other ids fall back."""
    codec = Codec(schema_ids={42: current_schema()})
    payloads = [codec.encode(events.to_record(events.parse_event(ev))) for ev in _samples()]
    framed = [b"\x00\x00\x00\x00\x2a" + p[10:] for p in payloads]
    fast = FastDecoder(codec)
    expected = [codec.decode(p) for p in payloads]
    fast.codec = None  # type: ignore[assignment]  # any fallback would now fail loudly
    assert [fast.decode(v) for v in framed] == expected
    batch = BatchDecoder(codec)
    both = batch.read_columns([*payloads, *framed])
    assert both is not None and both[5] == []  # nothing left for the slow path
    single = batch.read_columns(payloads)
    assert single is not None
    assert both[1] == single[1] * 2
    lean = BatchDecoder(codec, checked=False).read_columns(framed)
    assert lean is not None and lean[5] == []
    for etype, table in single[4].items():
        assert lean[4][etype].equals(table), etype
    other = b"\x00\x00\x00\x00\x2b" + payloads[0][10:]
    mixed = batch.read_columns([other, *payloads])
    assert mixed is not None and mixed[5] == [0]
