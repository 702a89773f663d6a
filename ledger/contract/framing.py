"""The two Avro framings of Kafka values, told apart by their first byte. Pure: no I/O.

    Avro single-object encoding (Apache Avro 1.11 specification, "Single-object encoding"):
        C3 01 | CRC-64-AVRO fingerprint of the writer schema, 8 bytes little-endian | body
    Confluent wire format (Confluent Schema Registry documentation, "Wire format"):
        00    | schema id assigned by a Schema Registry, 4 bytes big-endian         | body

The body is the same Avro binary encoding in both; only the way the header names the writer
schema differs. A fingerprint is computed from the schema itself, so any reader holding the
schema can match it; a schema id means something only to the registry that assigned it, so
the ledger has to resolve it there (or in a directory exported from it) and keep the schema it
got (`ledger.store.schemas`). No other first byte is either framing: 0xC3 is never 0x00.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, NamedTuple

from ledger.errors import CodecError

__all__ = [
    "CONFLUENT",
    "CONFLUENT_HEADER_LEN",
    "CONFLUENT_MAGIC",
    "SINGLE_OBJECT",
    "SINGLE_OBJECT_HEADER_LEN",
    "SINGLE_OBJECT_MAGIC",
    "Frame",
    "confluent_header",
    "confluent_id",
    "confluent_ids",
    "frame",
]

SINGLE_OBJECT: Literal["single-object"] = "single-object"
CONFLUENT: Literal["confluent"] = "confluent"
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
SINGLE_OBJECT_HEADER_LEN = 10
CONFLUENT_MAGIC = b"\x00"
CONFLUENT_HEADER_LEN = 5
#: schema ids are 4 bytes on the wire
_MAX_ID = (1 << 32) - 1


class Frame(NamedTuple):
    """Where a value names its writer schema and where its Avro body starts.

    `key` is the 8-byte fingerprint (single-object) or the 4-byte big-endian schema id
    (Confluent); `body` is the offset of the first body byte (10 or 5)."""

    kind: Literal["single-object", "confluent"]
    key: bytes
    body: int

    @property
    def schema_id(self) -> int | None:
        """The Confluent schema id, or None for single-object encoding."""
        return int.from_bytes(self.key, "big") if self.kind == CONFLUENT else None


def frame(payload: bytes) -> Frame:
    """The framing of `payload` (see the module docstring).

    Raises `CodecError` for a value in neither framing, or one shorter than its header; the
    message says which, with the first two bytes in hex."""
    if payload[:1] == CONFLUENT_MAGIC:
        if len(payload) < CONFLUENT_HEADER_LEN:
            raise CodecError(
                f"truncated message: {len(payload)} bytes, shorter than the 5-byte header of "
                "the Confluent wire format"
            )
        return Frame(CONFLUENT, payload[1:CONFLUENT_HEADER_LEN], CONFLUENT_HEADER_LEN)
    if payload[:1] != SINGLE_OBJECT_MAGIC[:1]:
        raise CodecError(
            "not Avro single-object encoding (c301) or the Confluent wire format (00): "
            f"starts with {payload[:2].hex()}"
        )
    if len(payload) < SINGLE_OBJECT_HEADER_LEN:
        raise CodecError(
            f"truncated message: {len(payload)} bytes, shorter than the 10-byte header"
        )
    if payload[:2] != SINGLE_OBJECT_MAGIC:
        raise CodecError(
            f"not Avro single-object encoding: starts with {payload[:2].hex()}, expected c301"
        )
    return Frame(SINGLE_OBJECT, payload[2:SINGLE_OBJECT_HEADER_LEN], SINGLE_OBJECT_HEADER_LEN)


def confluent_header(schema_id: int) -> bytes:
    """The 5 header bytes of a value in the Confluent wire format naming `schema_id`.

    Raises `ValueError` for an id that does not fit the 4 bytes."""
    if not 0 <= schema_id <= _MAX_ID:
        raise ValueError(f"schema id {schema_id} does not fit the 4-byte field")
    return CONFLUENT_MAGIC + schema_id.to_bytes(4, "big")


def confluent_id(payload: bytes | None) -> int | None:
    """The schema id of a value in the Confluent wire format with its whole header, else None."""
    if not payload or payload[0] != 0 or len(payload) < CONFLUENT_HEADER_LEN:
        return None
    return int.from_bytes(payload[1:CONFLUENT_HEADER_LEN], "big")


def confluent_ids(values: Iterable[bytes | None]) -> set[int]:
    """The schema ids named by the values in the Confluent wire format (one pass, ~30 ns a value
    that is not: the consumer runs it over every fetch when it resolves ids)."""
    return {
        int.from_bytes(v[1:CONFLUENT_HEADER_LEN], "big")
        for v in values
        if v and v[0] == 0 and len(v) >= CONFLUENT_HEADER_LEN
    }
