"""Avro single-object encoding of `AuditEvent` (0xC3 0x01, CRC-64-AVRO fingerprint LE, body),
and decoding of the Confluent wire format beside it (0x00, 4-byte schema id, body).

Schemas are parsed once. Writer schemas are looked up by fingerprint, so events written with an
older released schema are resolved to the current reader schema; values in the Confluent wire
format name theirs by a registry's schema id, which decodes once the schema it stands for is
registered here (`register_id`; `ledger.stream.registry` resolves ids, `ledger.store.schemas`
keeps them in the ledger file). See `ledger.contract.framing` for the two headers. Timestamps
stay as integer microseconds on the hot path: fastavro's logical-type conversion halves decode
speed.
"""

from __future__ import annotations

import copy
import io
import json
import struct
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from ledger.contract.events import EVENT_TYPES
from ledger.contract.framing import CONFLUENT, confluent_header, frame
from ledger.contract.resolution import resolution_problem
from ledger.errors import CodecError

__all__ = [
    "ENVELOPE_PREFIX",
    "HEADER_LEN",
    "MAGIC",
    "SCHEMA_FILE",
    "Codec",
    "IdState",
    "current_schema",
    "default_codec",
    "full_name",
    "released_schemas",
    "schema_fingerprint",
    "strip_logical",
]

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
SCHEMA_FILE = "audit_event.avsc"
ENVELOPE_PREFIX = ("event_id", "type", "occurred_at")
#: what a codec knows of Confluent schema ids, to rebuild it in a worker process: the writer
#: schemas registered by id, and the reason each refused id is quarantined with
IdState = tuple[dict[int, dict[str, Any]], dict[int, str]]
_RECORD_NAMES = {etype: spec[2] for etype, spec in EVENT_TYPES.items()}


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


def strip_logical(schema: Any) -> Any:
    """The schema without logicalType annotations: timestamps read as plain int micros."""
    if isinstance(schema, dict):
        return {k: strip_logical(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [strip_logical(s) for s in schema]
    return schema


class _Unsupported(Exception):
    """The fast encoder met a value it does not handle; fastavro decides (bytes or error)."""


_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


_TWO_GROUPS = tuple(bytes(((v & 0x7F) | 0x80, (v >> 7) | 0x80)) for v in range(1 << 14))
_TAILS = tuple(
    bytes(((v & 0x7F) | 0x80, v >> 7)) if v >= 0x80 else bytes([v]) for v in range(1 << 14)
)


def _varint(n: int) -> bytes:
    """Avro's variable-length encoding of an already zig-zagged, non-negative integer.

    Fourteen bits per step from lookup tables: twice as fast as a byte-at-a-time loop, and
    every event carries 8-byte timestamps.
    """
    if n < 0x4000:
        return _TAILS[n]
    out = _TWO_GROUPS[n & 0x3FFF]
    n >>= 14
    while n >= 0x4000:
        out += _TWO_GROUPS[n & 0x3FFF]
        n >>= 14
    return out + _TAILS[n]


class _EncoderSource:
    """Generates one straight-line Python function that writes a record of a fixed schema.

    fastavro's writer costs ~15 µs per event here; the generated code does the same job in a
    fraction of that. It handles the schema subset `AuditEvent` uses (records, enums, arrays,
    nullable unions, a union of records chosen by name) and raises `_Unsupported` on any value
    whose type it does not expect, so fastavro produces the bytes or the error instead.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {
            "T": _TAILS,
            "V": _varint,
            "U": _Unsupported,
            "LMIN": _LONG_MIN,
            "LMAX": _LONG_MAX,
        }
        self._n = 0

    def var(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def const(self, value: Any) -> str:
        name = self.var("K")
        self.consts[name] = value
        return name

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def value(self, schema: Any, x: str, d: int, ns: str) -> None:
        """Code writing the value held in variable `x` at indentation `d`."""
        if isinstance(schema, list):
            self.union(schema, x, d, ns)
            return
        kind = schema if isinstance(schema, str) else schema["type"]
        if kind in ("long", "int"):
            z = self.var("z")
            self.emit(d, f"if type({x}) is not int or not LMIN <= {x} <= LMAX: raise U")
            self.emit(d, f"{z} = ({x} << 1) ^ ({x} >> 63)")
            self.emit(d, f"out += V({z})")
        elif kind == "string":
            b, n = self.var("b"), self.var("n")
            self.emit(d, f"if type({x}) is not str: raise U")
            self.emit(d, f"{b} = {x}.encode()")
            self.emit(d, f"{n} = len({b}) << 1")
            self.emit(d, f"out += T[{n}] if {n} < 16384 else V({n})")
            self.emit(d, f"out += {b}")
        elif kind == "boolean":
            self.emit(d, f"if {x} is True: out += b'\\x01'")
            self.emit(d, f"elif {x} is False: out += b'\\x00'")
            self.emit(d, "else: raise U")
        elif kind == "null":
            self.emit(d, f"if {x} is not None: raise U")
        elif kind == "enum":
            table = self.const({s: _varint(i << 1) for i, s in enumerate(schema["symbols"])})
            t = self.var("t")
            self.emit(d, f"{t} = {table}.get({x}) if type({x}) is str else None")
            self.emit(d, f"if {t} is None: raise U")
            self.emit(d, f"out += {t}")
        elif kind == "array":
            item = self.var("i")
            self.emit(d, f"if type({x}) is not list: raise U")
            self.emit(d, f"if {x}:")
            self.emit(d + 1, f"out += V(len({x}) << 1)")
            self.emit(d + 1, f"for {item} in {x}:")
            self.value(schema["items"], item, d + 2, ns)
            self.emit(d, "out += b'\\x00'")
        elif kind == "record":
            ns = full_name(schema, ns).rpartition(".")[0]
            self.emit(d, f"if type({x}) is not dict: raise U")
            for field in schema["fields"]:
                f = self.var("f")
                self.emit(d, f"{f} = {x}[{field['name']!r}]")
                self.value(field["type"], f, d, ns)
        else:
            raise _Unsupported

    def union(self, branches: list[Any], x: str, d: int, ns: str) -> None:
        if len(branches) == 2 and branches[0] == "null":
            self.emit(d, f"if {x} is None: out += b'\\x00'")
            self.emit(d, "else:")
            self.emit(d + 1, "out += b'\\x02'")
            self.value(branches[1], x, d + 1, ns)
            return
        if not all(isinstance(b, dict) and b.get("type") == "record" for b in branches):
            raise _Unsupported
        name, inner = self.var("r"), self.var("x")
        self.emit(d, f"if type({x}) is not tuple or len({x}) != 2: raise U")
        self.emit(d, f"{name}, {inner} = {x}")
        for i, branch in enumerate(branches):
            self.emit(d, f"{'if' if i == 0 else 'elif'} {name} == {full_name(branch, ns)!r}:")
            self.emit(d + 1, f"out += {_varint(i << 1)!r}")
            self.value(branch, inner, d + 1, ns)
        self.emit(d, "else: raise U")


def _compile_encoder(schema: dict[str, Any]) -> Callable[[bytearray, Any], None]:
    src = _EncoderSource()
    src.emit(0, "def write(out, x0):")
    src.value(schema, "x0", 1, "")
    namespace = dict(src.consts)
    exec(compile("\n".join(src.lines), "<ledger.codec encoder>", "exec"), namespace)  # noqa: S102
    write: Callable[[bytearray, Any], None] = namespace["write"]
    return write


def full_name(schema: dict[str, Any], ns: str) -> str:
    """A named type's full name, resolved against the enclosing namespace."""
    name: str = schema["name"]
    if "." in name:
        return name
    space = schema.get("namespace", ns)
    return f"{space}.{name}" if space else name


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
    """Encodes and decodes `AuditEvent` single-object messages against a registry of schemas;
    decodes the Confluent wire format too, for the schema ids registered (`register_id`)."""

    def __init__(
        self,
        extra_writer_schemas: Iterable[dict[str, Any]] = (),
        schema_ids: Mapping[int, dict[str, Any]] | None = None,
    ) -> None:
        """The shipped schemas, `extra_writer_schemas` by fingerprint and `schema_ids` by
        Confluent schema id (`register_id`; raises its `CodecError`)."""
        schema = current_schema()
        self.schema = schema
        self.fingerprint = schema_fingerprint(schema)
        self.header = MAGIC + self.fingerprint
        self._reader = fastavro.parse_schema(strip_logical(copy.deepcopy(schema)))
        self._fast: Callable[[bytearray, Any], None] | None
        try:
            self._fast = _compile_encoder(strip_logical(schema))
        except (_Unsupported, KeyError, TypeError):
            self._fast = None
        self._writers: dict[bytes, Any] = {self.fingerprint: None}
        self.extra_schemas: list[dict[str, Any]] = []
        for older in released_schemas():
            self.register(older)
        #: writer schemas beyond the shipped ones, so a worker process can rebuild this codec
        self.extra_schemas = []
        for older in extra_writer_schemas:
            self.register(older)
        # Confluent schema ids. Both maps are replaced, never changed in place, so a thread
        # that copies them (the worker feeder) always sees a consistent state.
        self._ids: dict[int, Any] = {}
        self._refused: dict[int, str] = {}
        #: writer schemas registered by id, as given (a worker process rebuilds from these)
        self.schema_ids: dict[int, dict[str, Any]] = {}
        #: the 5-byte headers of ids whose writer schema is the current one: the generated
        #: decoders read them as fast as single-object values (changed in place: they hold it)
        self.current_headers: set[bytes] = set()
        #: bumped on every change of what ids mean, so a worker knows when to resync
        self.ids_version = 0
        for schema_id, writer in (schema_ids or {}).items():
            self.register_id(schema_id, writer)

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
        self._writers[fp] = fastavro.parse_schema(strip_logical(copy.deepcopy(writer_schema)))
        self.extra_schemas.append(writer_schema)
        return fp

    def register_id(self, schema_id: int, writer_schema: Any) -> None:
        """Decode values in the Confluent wire format naming `schema_id` with `writer_schema`.

        The schema must be an `AuditEvent` writer the current reader schema resolves (Avro 1.11
        "Schema Resolution", decided up front by `ledger.contract.resolution`) whose first
        fields are event_id, type, occurred_at (what `verify` peeks at). One whose parsing
        canonical form is the current schema's is read by the generated decoders directly.
        Raises `CodecError` ("schema id N: ...") for anything else, or for an id registered
        with another schema (what an id means never changes), and `ValueError` for an id that
        does not fit 4 bytes; a refused id stays refused until registered."""
        header = confluent_header(schema_id)
        held = self.schema_ids.get(schema_id)
        if held is not None:
            if held == writer_schema:
                return
            raise CodecError(f"schema id {schema_id}: already registered with another schema")
        if not isinstance(writer_schema, dict) or writer_schema.get("type") != "record":
            raise CodecError(f"schema id {schema_id}: not an Avro record schema")
        problem = resolution_problem(writer_schema, self.schema)
        if problem is not None:
            raise CodecError(
                f"schema id {schema_id}: cannot be read as {full_name(self.schema, '')}: {problem}"
            )
        fields = [f.get("name") for f in writer_schema.get("fields", [])]
        if tuple(fields[:3]) != ENVELOPE_PREFIX:
            raise CodecError(
                f"schema id {schema_id}: must start with fields {', '.join(ENVELOPE_PREFIX)}"
            )
        if schema_fingerprint(writer_schema) == self.fingerprint:
            parsed = None
            self.current_headers.add(header)
        else:
            parsed = fastavro.parse_schema(strip_logical(copy.deepcopy(writer_schema)))
            self.current_headers.discard(header)
        self._ids = {**self._ids, schema_id: parsed}
        self._refused = {k: v for k, v in self._refused.items() if k != schema_id}
        self.schema_ids = {**self.schema_ids, schema_id: writer_schema}
        self.ids_version += 1

    def refuse_id(self, schema_id: int, reason: str) -> None:
        """Quarantine values naming `schema_id` with `reason` (which should name the id),
        until it is registered. An id already registered keeps its schema."""
        if schema_id in self._ids:
            return
        self._refused = {**self._refused, schema_id: reason}
        self.ids_version += 1

    def knows_id(self, schema_id: int) -> bool:
        """Whether `schema_id` decodes here (registered, not refused)."""
        return schema_id in self._ids

    def refused_ids(self) -> dict[int, str]:
        """The refused ids and their reasons."""
        return dict(self._refused)

    def id_state(self) -> IdState:
        """What `load_id_state` needs to give another codec the same ids (picklable)."""
        return dict(self.schema_ids), dict(self._refused)

    def load_id_state(self, state: IdState) -> None:
        """Know exactly the ids of `state` (`id_state` of another codec), nothing else."""
        schemas, refused = state
        self._ids, self._refused, self.schema_ids = {}, {}, {}
        self.current_headers.clear()
        for schema_id, writer in schemas.items():
            self.register_id(schema_id, writer)
        for schema_id, reason in refused.items():
            self.refuse_id(schema_id, reason)

    @property
    def known_fingerprints(self) -> list[str]:
        return [fp.hex() for fp in self._writers]

    def encode(self, record: dict[str, Any]) -> bytes:
        """Encode an Avro-shaped record (see `events.to_record`) with the current schema."""
        etype = record.get("type")
        name = _RECORD_NAMES.get(etype) if isinstance(etype, str) else None
        if name is None:
            raise CodecError(f"cannot encode unknown event type {record.get('type')!r}")
        datum = {**record, "data": (name, record.get("data"))}
        if self._fast is not None:
            buf = bytearray(self.header)
            try:
                self._fast(buf, datum)
                return bytes(buf)
            except (_Unsupported, KeyError, ValueError):
                pass
        out = io.BytesIO()
        out.write(self.header)
        try:
            fastavro.schemaless_writer(out, self._reader, datum)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CodecError(f"cannot encode event: {exc}") from exc
        return out.getvalue()

    def _writer_for(self, payload: bytes) -> tuple[Any, int]:
        """(parsed writer schema, None for the current one; offset of the body)."""
        found = frame(payload)
        if found.kind == CONFLUENT:
            schema_id = int.from_bytes(found.key, "big")
            ids = self._ids
            if schema_id in ids:
                return ids[schema_id], found.body
            reason = self._refused.get(schema_id)
            raise CodecError(
                reason
                or f"unknown schema id {schema_id} (Confluent wire format): the ledger holds no "
                "writer schema for it (`ledger consume` resolves ids with --schema-registry or "
                "--schema-dir)"
            )
        if found.key not in self._writers:
            raise CodecError(
                f"unknown schema fingerprint {found.key.hex()}; "
                f"known: {', '.join(self.known_fingerprints)}"
            )
        return self._writers[found.key], found.body

    def decode(self, payload: bytes) -> tuple[dict[str, Any], str]:
        """Decode to (record, data record full name); `record['data']` is a plain dict.

        Either framing (`ledger.contract.framing`); raises `CodecError` with the reason the
        quarantine keeps: a header in neither framing, an unknown fingerprint or schema id
        (or the reason the id was refused), a body that does not decode or has trailing bytes.
        """
        writer, start = self._writer_for(payload)
        buf = io.BytesIO(payload)
        buf.seek(start)
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
            if isinstance(exc, EOFError | StopIteration) or buf.tell() >= len(payload):
                raise CodecError("truncated body: the Avro record ends early") from exc
            raise CodecError(
                f"malformed Avro body before byte {buf.tell()}: a union or enum index out of "
                "range for the writer schema"
            ) from exc
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
        _, start = self._writer_for(payload)
        try:
            n, pos = _read_length(payload, start)
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
