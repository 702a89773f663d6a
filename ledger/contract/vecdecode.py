"""The payloads of a whole Arrow batch decoded at once: numpy steps over every row, per field.

`verify` recomputes every projection row from the payloads the chain protects. The per-event
readers (`fastdecode`, generated Python) cost ~5-8 µs per entry, most of a verify. This reader
walks every payload of a batch in lock-step instead: each field of the schema is one vectorized
step over all rows at once (gather the byte at each row's position; a varint's continuation
bytes in at most eight more rounds; a string is only its position and length), and strings come
out as Arrow string views onto the batch's own buffer, validated as UTF-8 by Arrow. Its cost is
a few numpy calls per field per batch, not per entry (bench/RESULTS.md, verify section).

It takes only what it can read exactly as the lean per-event reader
(`BatchDecoder(checked=False)`) does: the current schema's header (single-object, or the
Confluent wire format naming an id registered with the current schema), every byte consumed, the
data branch matching the envelope's `type`. Every other row (a null payload, an older schema, a
varint of ten bytes, a byte out of place) is handed back for the per-event readers, which give
the verdict. A differential test holds that every row it takes is the lean reader's row
(`tests/contract/test_vecdecode.py`, generated and mutated payloads). Avro binary encoding:
Apache Avro 1.11 specification, "Binary Encoding"; single-object encoding, same document.

Pure: numpy and pyarrow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from ledger.contract import events
from ledger.contract.codec import HEADER_LEN, Codec, full_name, strip_logical
from ledger.contract.columns import SCHEMAS, TABLES
from ledger.contract.framing import CONFLUENT_HEADER_LEN

__all__ = ["ColumnarReader", "view_schema"]

Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Bytes = npt.NDArray[np.uint8]

_INLINE = 12  # an Arrow string view holds strings of up to 12 bytes inline
_LANES = np.arange(_INLINE)
#: zero bytes after a batch's buffer: every read starts at or before a row's end (positions
#: are clamped there) and takes at most 21 bytes (the longest event type name), so none
#: indexes past the padding
_PAD = 32


def view_schema(etype: str, first: str = "pos") -> pa.Schema:
    """`columns.SCHEMAS[etype]`'s Arrow schema with strings as string views (what this reader
    gives; the same values as the plain string columns), its first column named `first`."""
    schema = SCHEMAS[etype][2]
    fields = [pa.field(first, schema.field(0).type)]
    for field in list(schema)[1:]:
        kind = field.type
        if kind == pa.string():
            kind = pa.string_view()
        elif kind == pa.list_(pa.string()):
            kind = pa.list_(pa.string_view())
        fields.append(pa.field(field.name, kind))
    return pa.schema(fields)


class _Rows:
    """The rows being read: each one's position and end in `buf` (the batch's bytes followed
    by `_PAD` zeros), and whether it went wrong.

    Positions never pass a row's end: a read that would is marked bad and stopped at the end,
    so no gather leaves the padded buffer whatever the bytes say."""

    __slots__ = ("bad", "buf", "end", "pos")

    def __init__(self, buf: Bytes, pos: Ints, end: Ints) -> None:
        self.buf, self.pos, self.end = buf, pos, end
        self.bad = np.zeros(len(pos), np.bool_)

    def sub(self, where: Ints) -> _Rows:
        return _Rows(self.buf, self.pos[where], self.end[where])

    def put(self, where: Ints, rows: _Rows) -> None:
        self.pos[where] = rows.pos
        self.bad[where] |= rows.bad

    def byte(self, pos: Ints) -> Bytes:
        return self.buf[pos]

    def advance(self, by: Ints | int) -> None:
        self.pos = self.pos + by
        over = self.pos > self.end
        if over.any():
            self.bad |= over
            self.pos = np.minimum(self.pos, self.end)

    def varint(self) -> Ints:
        """A zig-zag varint (Avro int and long) at every row. Ten-byte varints (beyond 63
        bits of zig-zag value) are left to the per-event readers."""
        first = self.byte(self.pos)
        acc = (first & 0x7F).astype(np.uint64)
        size = np.ones(len(first), np.int64)
        more = np.flatnonzero(first & 0x80)
        shift = 7
        while more.size:
            if shift > 56:
                self.bad[more] = True
                break
            nxt = self.byte(self.pos[more] + size[more])
            acc[more] |= (nxt & 0x7F).astype(np.uint64) << np.uint64(shift)
            size[more] += 1
            more = more[(nxt & 0x80) != 0]
            shift += 7
        self.advance(size)
        return (acc >> np.uint64(1)).astype(np.int64) ^ -(acc & np.uint64(1)).astype(np.int64)

    def string(self) -> tuple[Ints, Ints]:
        """(start in `buf`, length) of a string (or bytes) at every row."""
        length = self.varint()
        negative = length < 0
        if negative.any():
            self.bad |= negative
            length = np.maximum(length, 0)
        start = self.pos
        self.advance(length)
        return start, self.pos - start

    def flag(self) -> Bytes:
        """One byte at every row (a boolean, or a null-union branch as the lean reader reads
        it: 0 = null, 2 = the value)."""
        value = self.byte(self.pos)
        self.advance(1)
        return value


@dataclass(slots=True)
class _Column:
    """One field's values at every row: strings as (start, length), others as `values`;
    lists as items (row, start, length) in order; `valid` None = no nulls."""

    kind: str
    values: Any = None
    start: Any = None
    length: Any = None
    valid: Bools | None = None
    rows: Any = None  # list items: the row of each item


_Step = Callable[[_Rows], _Column]


def _compile(node: Any, ns: str) -> tuple[_Step, pa.DataType]:
    """The step reading one Avro type, and the Arrow type of its column."""
    if isinstance(node, list):
        if len(node) == 2 and node[0] == "null":
            inner, kind = _compile(node[1], ns)
            return _optional(inner), kind
        raise NotImplementedError("unions other than [null, T] inside a record")
    kind = node if isinstance(node, str) else node["type"]
    if kind in ("long", "int"):
        return (lambda rows: _Column("long", values=rows.varint())), pa.int64()
    if kind == "string":
        return _string_step, pa.string_view()
    if kind == "boolean":
        return _bool_step, pa.bool_()
    if kind == "enum":
        return _enum_step(tuple(node["symbols"])), pa.string_view()
    if kind == "array" and node["items"] == "string":
        return _string_list_step, pa.list_(pa.string_view())
    raise NotImplementedError(kind)


def _string_step(rows: _Rows) -> _Column:
    start, length = rows.string()
    return _Column("str", start=start, length=length)


def _bool_step(rows: _Rows) -> _Column:
    value = rows.flag()
    rows.bad |= value > 1
    return _Column("bool", values=value == 1)


def _enum_step(symbols: tuple[str, ...]) -> _Step:
    table = pa.array(symbols, pa.string())

    def step(rows: _Rows) -> _Column:
        index = rows.varint()
        out = (index < 0) | (index >= len(symbols))
        rows.bad |= out
        return _Column("enum", values=np.where(out, 0, index), start=table)

    return step


def _optional(inner: _Step) -> _Step:
    def step(rows: _Rows) -> _Column:
        branch = rows.flag()
        rows.bad |= (branch != 0) & (branch != 2)
        present = branch == 2
        where = np.flatnonzero(present)
        sub = rows.sub(where)
        got = inner(sub)
        rows.put(where, sub)
        n = len(branch)
        if got.kind == "str":
            start, length = np.zeros(n, np.int64), np.zeros(n, np.int64)
            start[where], length[where] = got.start, got.length
            return _Column("str", start=start, length=length, valid=present)
        if got.kind == "long":
            values = np.zeros(n, np.int64)
            values[where] = got.values
            return _Column("long", values=values, valid=present)
        raise NotImplementedError(f"[null, {got.kind}]")

    return step


def _string_list_step(rows: _Rows) -> _Column:
    """Avro arrays are blocks (count, items) ending with a count of 0; a negative count is
    followed by the block's size in bytes. Items are kept per row in order."""
    n = len(rows.pos)
    item_rows: list[Ints] = []
    item_order: list[Ints] = []
    starts: list[Ints] = []
    lengths: list[Ints] = []
    seen = np.zeros(n, np.int64)
    active = np.arange(n)
    while active.size:
        sub = rows.sub(active)
        count = sub.varint()
        negative = np.flatnonzero(count < 0)
        if negative.size:
            count[negative] = -count[negative]
            sized = sub.sub(negative)
            sized.varint()
            sub.put(negative, sized)
        # each item takes a byte at least: a count beyond what is left is a bad row, and
        # keeps the loop below bounded by the bytes there are
        sub.bad |= count > sub.end - sub.pos
        count[sub.bad] = 0
        for j in range(int(count.max(initial=0))):
            take = np.flatnonzero(count > j)
            items = sub.sub(take)
            start, length = items.string()
            sub.put(take, items)
            owner = active[take]
            item_rows.append(owner)
            item_order.append(seen[owner])
            seen[owner] += 1
            starts.append(start)
            lengths.append(length)
        rows.put(active, sub)
        active = active[(count > 0) & ~sub.bad]
    if not item_rows:
        empty = np.zeros(0, np.int64)
        return _Column("list", rows=empty, start=empty, length=empty, values=empty)
    owners = np.concatenate(item_rows)
    order = np.lexsort((np.concatenate(item_order), owners))
    return _Column(
        "list",
        rows=owners[order],
        start=np.concatenate(starts)[order],
        length=np.concatenate(lengths)[order],
    )


def _validity(valid: Bools | None) -> pa.Buffer | None:
    if valid is None or valid.all():
        return None
    return pa.py_buffer(np.packbits(valid, bitorder="little"))


def _views(
    padded: Bytes, data: pa.Buffer, start: Ints, length: Ints, valid: Bools | None
) -> pa.Array:
    """Arrow string views of the bytes at [start, start + length) of `data` (`padded` is
    its copy with `_PAD` zeros after), UTF-8 checked (raises `pyarrow.ArrowInvalid` on bytes
    that are not). Layout: Arrow columnar format, "Variable-size Binary View Layout"."""
    n = len(start)
    if valid is not None:
        length = np.where(valid, length, 0)
    views = np.empty((n, 4), np.int32)
    views[:, 0] = length
    views[:, 1] = np.lib.stride_tricks.sliding_window_view(padded, 4)[start].view(np.int32)[:, 0]
    views[:, 2] = 0  # buffer index (of a string longer than 12 bytes)
    views[:, 3] = start
    short = np.flatnonzero(length <= _INLINE)
    if short.size:  # held inline, zero-padded
        inline = np.lib.stride_tricks.sliding_window_view(padded, _INLINE)[start[short]]
        np.multiply(inline, length[short, None] > _LANES, out=inline)
        views[short, 1:] = inline.view(np.int32)
    array = pa.Array.from_buffers(
        pa.binary_view(), n, [_validity(valid), pa.py_buffer(views), data]
    )
    return array.cast(pa.string_view())


class ColumnarReader:
    """`read(payloads)` decodes a batch of single-object payloads of the codec's current
    schema into projection tables (`view_schema` of each event type, `pos` = the payload's
    index in the batch) and the indices of the payloads it did not take.

    Raises NotImplementedError at construction for a schema outside what it reads (it then
    cannot be used; the per-event readers can)."""

    def __init__(self, codec: Codec) -> None:
        schema = strip_logical(codec.schema)
        self.codec = codec
        self.header = np.frombuffer(codec.header, np.uint8)
        if len(self.header) != HEADER_LEN:
            raise NotImplementedError("header")
        ns = full_name(schema, "").rpartition(".")[0]
        self._envelope: list[tuple[str, _Step]] = []
        branches: list[Any] | None = None
        for field in schema["fields"]:
            if field["name"] == "data":
                branches = field["type"]
            elif branches is not None:
                raise NotImplementedError("fields after data")
            else:
                self._envelope.append((field["name"], _compile(field["type"], ns)[0]))
        names = {name for name, _ in self._envelope}
        if not isinstance(branches, list) or not {"event_id", "type", "occurred_at"} <= names:
            raise NotImplementedError("not an AuditEvent envelope")
        self._branches: list[tuple[str, bytes, list[tuple[str, _Step]]]] = []
        for branch in branches:
            etype = events.RECORD_TO_TYPE[full_name(branch, ns)]
            steps = [(f["name"], _compile(f["type"], ns)[0]) for f in branch["fields"]]
            if [name for name, _ in steps] != [name for name, _ in TABLES[etype][1]]:
                raise NotImplementedError(f"{etype}: fields and columns differ")
            self._branches.append((etype, etype.encode(), steps))
        if max(len(spelled) for _, spelled, _ in self._branches) > _PAD:
            raise NotImplementedError("an event type name longer than the padding")
        self._schemas = {etype: view_schema(etype) for etype, _, _ in self._branches}

    def read(self, payloads: pa.Array) -> tuple[dict[str, pa.Table], Ints]:
        """(tables per event type, indices of payloads not taken). `payloads` is a binary or
        large_binary Arrow array (nulls allowed: they are not taken)."""
        n = len(payloads)
        everything = np.arange(n, dtype=np.int64)
        if n == 0:
            return {}, everything
        if pa.types.is_large_binary(payloads.type):
            width: Any = np.int64
        elif pa.types.is_binary(payloads.type):
            width = np.int32
        else:
            return {}, everything
        _, offsets_buf, data = payloads.buffers()
        if data is None or data.size == 0 or data.size >= 1 << 31:
            return {}, everything
        offsets = np.frombuffer(offsets_buf, width)[payloads.offset : payloads.offset + n + 1]
        offsets = offsets.astype(np.int64)
        buf = np.zeros(data.size + _PAD, np.uint8)
        buf[: data.size] = np.frombuffer(data, np.uint8)
        starts = offsets[:-1]
        head = np.lib.stride_tricks.sliding_window_view(buf, HEADER_LEN)[starts]
        single = (head == self.header).all(axis=1)
        rows = _Rows(buf, starts + np.where(single, HEADER_LEN, CONFLUENT_HEADER_LEN), offsets[1:])
        rows.bad |= ~(single | self._confluent(head))
        rows.bad |= rows.pos > rows.end
        if payloads.null_count:
            rows.bad |= np.asarray(payloads.is_null())
        env = {name: step(rows) for name, step in self._envelope}
        branch = rows.varint()
        rows.bad |= (branch < 0) | (branch >= len(self._branches))
        tables: dict[str, pa.Table] = {}
        taken = np.zeros(n, np.bool_)
        for k, (etype, spelled, steps) in enumerate(self._branches):
            where = np.flatnonzero((branch == k) & ~rows.bad)
            if not where.size:
                continue
            sub = rows.sub(where)
            cols = [step(sub) for _, step in steps]
            kind = env["type"]
            same = kind.length[where] == len(spelled)
            lanes = np.arange(len(spelled))
            spelled_at = buf[kind.start[where, None] + lanes]
            same &= (spelled_at == np.frombuffer(spelled, np.uint8)).all(axis=1)
            keep = ~sub.bad & (sub.pos == sub.end) & same
            if not keep.any():
                continue
            try:
                table = self._table(etype, buf, data, where, keep, env, cols)
            except pa.ArrowInvalid:  # a string that is not UTF-8: leave its rows, take the rest
                keep &= _utf8(buf, where, [env["event_id"], *cols])
                if not keep.any():
                    continue
                table = self._table(etype, buf, data, where, keep, env, cols)
            tables[etype] = table
            taken[where[keep]] = True
        return tables, np.flatnonzero(~taken)

    def _confluent(self, head: Bytes) -> Bools:
        """Per row: the Confluent wire format naming a schema id registered with the current
        schema (`Codec.current_headers`, read at each call: ids are registered later), as
        the per-event readers take it."""
        ids = [int.from_bytes(h[1:], "big") for h in self.codec.current_headers]
        if not ids:
            return np.zeros(len(head), np.bool_)
        framed = head[:, :CONFLUENT_HEADER_LEN].astype(np.int64)
        number = framed[:, 1] << 24 | framed[:, 2] << 16 | framed[:, 3] << 8 | framed[:, 4]
        found: Bools = (framed[:, 0] == 0) & np.isin(number, ids)
        return found

    def _table(
        self,
        etype: str,
        buf: Bytes,
        data: pa.Buffer,
        where: Ints,
        keep: Bools,
        env: dict[str, _Column],
        cols: Sequence[_Column],
    ) -> pa.Table:
        rows = where[keep]
        event_id, occurred = env["event_id"], env["occurred_at"]
        arrays = [
            pa.array(rows, pa.int64()),
            _views(buf, data, event_id.start[rows], event_id.length[rows], None),
            pa.array(occurred.values[rows], pa.int64()).cast(SCHEMAS[etype][2].field(2).type),
        ]
        schema = self._schemas[etype]
        for col, field in zip(cols, list(schema)[3:], strict=True):
            arrays.append(_arrow(col, keep, buf, data, field.type))
        return pa.Table.from_arrays(arrays, schema=schema)


def _utf8(buf: Bytes, where: Ints, cols: Sequence[_Column]) -> Bools:
    """Per row of the branch: every string in `cols` is UTF-8 (`where` maps branch rows to
    batch rows, which the envelope's columns are indexed by). One Python decode per string:
    only for a batch where Arrow found a string that is not."""
    ok = np.ones(len(where), np.bool_)
    raw = buf.tobytes()

    def check(start: Ints, length: Ints, owner: Ints) -> None:
        for a, n, i in zip(start.tolist(), length.tolist(), owner.tolist(), strict=True):
            try:
                raw[a : a + n].decode()
            except UnicodeDecodeError:
                ok[i] = False

    event_id, *data = cols
    check(event_id.start[where], event_id.length[where], np.arange(len(where)))
    for col in data:
        if col.kind == "str":
            check(col.start, col.length, np.arange(len(where)))
        elif col.kind == "list":
            check(col.start, col.length, col.rows)
    return ok


def _arrow(col: _Column, keep: Bools, buf: Bytes, data: pa.Buffer, kind: pa.DataType) -> pa.Array:
    """One column's kept rows as Arrow."""
    valid = None if col.valid is None else col.valid[keep]
    if col.kind == "str":
        return _views(buf, data, col.start[keep], col.length[keep], valid)
    if col.kind == "long":
        values = col.values[keep]
        array = pa.Array.from_buffers(
            pa.int64(), len(values), [_validity(valid), pa.py_buffer(values)]
        )
        return array.cast(kind)
    if col.kind == "bool":
        return pa.array(col.values[keep], pa.bool_())
    if col.kind == "enum":
        return col.start.take(pa.array(col.values[keep])).cast(kind)
    if col.kind == "list":
        renumber = np.cumsum(keep) - 1
        mine = keep[col.rows]
        owners = renumber[col.rows[mine]]
        counts = np.bincount(owners, minlength=int(keep.sum()))
        offsets = np.zeros(len(counts) + 1, np.int32)
        np.cumsum(counts, out=offsets[1:])
        items = _views(buf, data, col.start[mine], col.length[mine], None)
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), items, type=kind)
    raise NotImplementedError(col.kind)
