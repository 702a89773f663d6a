"""Avro single-object encoding of `AuditEvent` (0xC3 0x01, CRC-64-AVRO fingerprint LE, body).

Schemas are parsed once. Writer schemas are looked up by fingerprint, so events written with an
older released schema are resolved to the current reader schema. Timestamps stay as integer
microseconds on the hot path: fastavro's logical-type conversion halves decode speed.
"""

from __future__ import annotations

import copy
import io
import json
import struct
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from ledger.errors import CodecError

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
SCHEMA_FILE = "audit_event.avsc"
ENVELOPE_PREFIX = ("event_id", "type", "occurred_at")


def schema_fingerprint(schema: dict[str, Any]) -> bytes:
    """CRC-64-AVRO of the schema's parsing canonical form, as the 8 little-endian wire bytes."""
    canonical = to_parsing_canonical_form(fastavro.parse_schema(copy.deepcopy(schema)))
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


def current_schema() -> dict[str, Any]:
    """The current `AuditEvent` schema, as shipped inside the package."""
    text = resources.files("ledger").joinpath("schemas", SCHEMA_FILE).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def released_schemas() -> list[dict[str, Any]]:
    """Every older released writer schema kept under `schemas/released/`."""
    folder = resources.files("ledger").joinpath("schemas", "released")
    if not folder.is_dir():
        return []
    return [
        json.loads(p.read_text("utf-8"))
        for p in sorted(folder.iterdir(), key=lambda p: p.name)
        if p.name.endswith(".avsc")
    ]


def _strip_logical(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_logical(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_strip_logical(s) for s in schema]
    return schema


def _read_long(buf: bytes, pos: int) -> tuple[int, int]:
    shift = 0
    acc = 0
    while True:
        b = buf[pos]
        pos += 1
        acc |= (b & 0x7F) << shift
        if not b & 0x80:
            return (acc >> 1) ^ -(acc & 1), pos
        shift += 7
        if shift > 63:
            raise CodecError("malformed varint in envelope")


def _read_length(buf: bytes, pos: int) -> tuple[int, int]:
    n, pos = _read_long(buf, pos)
    if n < 0 or pos + n > len(buf):
        raise CodecError("truncated or malformed envelope string")
    return n, pos


class Codec:
    """Encodes and decodes `AuditEvent` single-object messages against a registry of schemas."""

    def __init__(self, extra_writer_schemas: Iterable[dict[str, Any]] = ()) -> None:
        schema = current_schema()
        self.schema = schema
        self.fingerprint = schema_fingerprint(schema)
        self.header = MAGIC + self.fingerprint
        self._reader = fastavro.parse_schema(_strip_logical(copy.deepcopy(schema)))
        self._writers: dict[bytes, Any] = {self.fingerprint: None}
        for older in [*released_schemas(), *extra_writer_schemas]:
            self.register(older)

    def register(self, writer_schema: dict[str, Any]) -> bytes:
        """Accept events written with `writer_schema` (an older or compatible producer)."""
        fp = schema_fingerprint(writer_schema)
        if fp == self.fingerprint:
            return fp
        fields = [f["name"] for f in writer_schema.get("fields", [])]
        if tuple(fields[:3]) != ENVELOPE_PREFIX:
            raise CodecError(
                f"writer schema {fp.hex()} must start with fields {', '.join(ENVELOPE_PREFIX)}"
            )
        self._writers[fp] = fastavro.parse_schema(_strip_logical(copy.deepcopy(writer_schema)))
        return fp

    @property
    def known_fingerprints(self) -> list[str]:
        return [fp.hex() for fp in self._writers]

    def encode(self, record: dict[str, Any]) -> bytes:
        """Encode an Avro-shaped record (see `events.to_record`) with the current schema."""
        from ledger.events import EVENT_TYPES

        spec = EVENT_TYPES.get(record.get("type", ""))
        if spec is None:
            raise CodecError(f"cannot encode unknown event type {record.get('type')!r}")
        datum = dict(record)
        datum["data"] = (spec[2], record["data"])
        out = io.BytesIO()
        out.write(self.header)
        try:
            fastavro.schemaless_writer(out, self._reader, datum)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CodecError(f"cannot encode event: {exc}") from exc
        return out.getvalue()

    def _writer_for(self, payload: bytes) -> Any:
        if len(payload) < HEADER_LEN:
            raise CodecError(
                f"truncated message: {len(payload)} bytes, shorter than the 10-byte header"
            )
        if payload[:2] != MAGIC:
            raise CodecError(
                f"not Avro single-object encoding: starts with {payload[:2].hex()}, expected c301"
            )
        fp = payload[2:HEADER_LEN]
        if fp not in self._writers:
            raise CodecError(
                f"unknown schema fingerprint {fp.hex()}; "
                f"known: {', '.join(self.known_fingerprints)}"
            )
        return self._writers[fp]

    def decode(self, payload: bytes) -> tuple[dict[str, Any], str]:
        """Decode to (record, data record full name); `record['data']` is a plain dict."""
        writer = self._writer_for(payload)
        buf = io.BytesIO(payload)
        buf.seek(HEADER_LEN)
        try:
            if writer is None:
                record = fastavro.schemaless_reader(
                    buf, self._reader, None, return_record_name=True
                )
            else:
                record = fastavro.schemaless_reader(
                    buf, writer, self._reader, return_record_name=True
                )
        except (EOFError, StopIteration, IndexError, struct.error) as exc:
            raise CodecError("truncated body: the Avro record ends early") from exc
        except UnicodeDecodeError as exc:
            raise CodecError(f"invalid UTF-8 in a string field at byte {exc.start}") from exc
        except Exception as exc:
            raise CodecError(f"undecodable Avro body: {type(exc).__name__}: {exc}") from exc
        trailing = len(payload) - buf.tell()
        if trailing:
            raise CodecError(f"{trailing} trailing bytes after the Avro record")
        if not isinstance(record, dict) or not isinstance(record.get("data"), tuple):
            raise CodecError("decoded body is not an AuditEvent record")
        name, data = record["data"]
        record["data"] = data
        return record, name

    def peek_envelope(self, payload: bytes) -> tuple[str, str, int]:
        """Read (event_id, type, occurred_at micros) without decoding `data`: cheap, for verify."""
        self._writer_for(payload)
        try:
            n, pos = _read_length(payload, HEADER_LEN)
            event_id = payload[pos : pos + n].decode("utf-8")
            pos += n
            n, pos = _read_length(payload, pos)
            etype = payload[pos : pos + n].decode("utf-8")
            pos += n
            occurred_at, pos = _read_long(payload, pos)
        except (IndexError, UnicodeDecodeError) as exc:
            raise CodecError("truncated or malformed envelope") from exc
        if pos > len(payload):
            raise CodecError("truncated envelope")
        return event_id, etype, occurred_at


@cache
def default_codec() -> Codec:
    """The process-wide codec over the shipped schemas (parsing schemas once)."""
    return Codec()
