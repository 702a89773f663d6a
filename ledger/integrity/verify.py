"""Recompute the ledger from its bytes; say where, if anywhere, it stops being what was recorded."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from hashlib import sha256
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ledger.contract.codec import Codec
from ledger.contract.framing import CONFLUENT_HEADER_LEN
from ledger.errors import CodecError, StoreError
from ledger.integrity.audit import Integrity, audit_ledger
from ledger.integrity.derived import DerivedCheck
from ledger.store import Store
from ledger.store.catalog import catalog_problems
from ledger.store.checkpoints import ledger_origin
from ledger.store.meta import meta_chain_of
from ledger.store.schemas import ledger_codec, schema_problems
from ledger.store.treestore import audit, root_of_entries
from ledger.tlog import chain
from ledger.tlog.chain import HASH_LEN

__all__ = ["BATCH_ROWS", "UNVOUCHED", "VerifyReport", "verify_store"]

BATCH_ROWS = 32_768

#: tables in the file that nothing recomputes: reported with every verify, never silently
UNVOUCHED = (
    "consumer_offsets: where consumers resume; an edit makes a consumer skip or re-read "
    "input (a re-read is deduplicated), it changes no entry",
    "quarantine: rejected input kept for inspection; rows can be removed or altered unseen",
    "checkpoints.created_at and ledger_meta created_at: when things were stored, as the "
    "file says; nothing signs them",
)


@dataclass(slots=True)
class VerifyReport:
    """Outcome of `verify`: ok, or the first bad seq and why."""

    ok: bool
    size: int
    head_hash: str
    bad_seq: int | None = None
    reason: str | None = None
    checks: list[str] = field(default_factory=list)
    merkle_root: str = ""
    checkpoints: int = 0
    #: the log's origin (fixed when the ledger was created)
    origin: str = ""
    #: `merkle_root` is the root of the tree of the first `merkle_root_size` entries, computed
    #: as `merkle_root_basis` says (also when the check failed: then over what verified)
    merkle_root_size: int = 0
    merkle_root_basis: str = ""
    #: the trusted keys given (name+keyhash) and, per stored checkpoint, who signed it and why
    #: it is accepted (`ledger.integrity.audit.CheckpointReport`)
    trusted_keys: list[str] = field(default_factory=list)
    checkpoint_details: list[dict[str, Any]] = field(default_factory=list)
    #: projection rows that differ from their entries (first few; see `derived_total`)
    derived: list[dict[str, Any]] = field(default_factory=list)
    derived_total: int = 0
    #: how the file's catalog differs from a ledger's (macros, views, altered tables)
    catalog: list[str] = field(default_factory=list)
    #: what the file holds that no check here can vouch for
    unvouched: list[str] = field(default_factory=lambda: list(UNVOUCHED))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def empty(self) -> bool:
        return self.ok and self.size == 0


class _Failure(Exception):
    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(reason)
        self.seq = seq
        self.reason = reason


_COLUMNS = ("seq", "event_id", "type", "occurred_at", "payload", "prev_hash", "entry_hash")


def _check_rows(
    store: Store, codec: Codec, progress: Callable[[int, int], None] | None
) -> tuple[int, bytes]:
    """Walk entries in seq order: continuity, links, hashes, envelope agreement, unique ids.

    Each batch is screened in bulk (list and numpy comparisons, one hashlib call per row);
    only rows the screen flags go through `_check_row`, the exact check that names the
    failure. The screen may flag an intact row (the exact check then passes it) but never
    lets a bad one through, so the outcome is that of checking every row exactly.
    """
    repeated = _first_repeated_id(store)
    total = store.size() if progress else 0
    try:
        # Rows come back in the order they were appended, which is seq order unless the table
        # was edited; sorting 100k rows costs a sixth of the whole verify. Any failure is
        # judged again on the sorted walk, so the verdict is always the sorted walk's.
        return _walk_query(store, "", total, codec, progress, repeated)
    except _Failure:
        return _walk_query(store, " ORDER BY seq", total, codec, progress, repeated)


def _walk_query(
    store: Store,
    order: str,
    total: int,
    codec: Codec,
    progress: Callable[[int, int], None] | None,
    repeated: int | None,
) -> tuple[int, bytes]:
    reader = store.con.sql(
        "SELECT seq, event_id, type, epoch_us(occurred_at), payload, prev_hash, entry_hash "
        f"FROM entries{order}"
    ).to_arrow_reader(BATCH_ROWS)
    try:
        return _walk(reader, total, codec, progress, repeated)
    finally:
        reader.close()


def _walk(
    reader: pa.RecordBatchReader,
    total: int,
    codec: Codec,
    progress: Callable[[int, int], None] | None,
    repeated: int | None,
) -> tuple[int, bytes]:
    """The batches in seq order: bulk screen, then the exact check of each flagged row."""
    expected = 0
    prev = chain.GENESIS
    with _ReadAhead(reader, codec.header, frozenset(codec.current_headers)) as batches:
        for batch, joined, envelope_ok in batches:
            n = batch.num_rows
            if joined is None or envelope_ok is None:
                suspects = list(range(n))
            else:
                suspects = _screen(batch, expected, prev, joined, envelope_ok)
            if repeated is not None and expected <= repeated < expected + n:
                suspects.append(repeated - expected)
            for i in sorted(set(suspects)):
                row_prev = batch.column(6)[i - 1].as_py() if i else prev
                row = [batch.column(c)[i].as_py() for c in range(7)]
                _check_row(row, expected + i, row_prev, codec, repeated)
            expected += n
            prev = batch.column(6)[n - 1].as_py()
            if progress:
                progress(expected, total)
    return expected, prev


_Prepared = tuple[pa.RecordBatch, pa.Array | None, npt.NDArray[np.bool_] | None]
_END = object()


class _ReadAhead:
    """Batches read from DuckDB, with their hash inputs joined and envelopes compared, one step
    ahead on a thread. DuckDB, Arrow and numpy release the GIL, so this overlaps the per-row
    hashing (which cannot) and verify uses both cores. A batch with NULLs comes with None."""

    def __init__(
        self,
        reader: pa.RecordBatchReader,
        header: bytes,
        confluent: frozenset[bytes] = frozenset(),
    ) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=2)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(reader, header, confluent), daemon=True
        )

    def __enter__(self) -> Iterator[_Prepared]:
        self._thread.start()
        return self._items()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            with contextlib.suppress(queue.Full):
                self._queue.put(item, timeout=0.05)
                return True
        return False

    def _run(
        self, reader: pa.RecordBatchReader, header: bytes, confluent: frozenset[bytes]
    ) -> None:
        expected = 0
        try:
            for batch in reader:
                if not batch.num_rows:
                    continue
                if any(batch.column(i).null_count for i in range(7)):
                    item: _Prepared = (batch, None, None)
                else:
                    envelope = _envelope_matches(batch, header, confluent)
                    item = (batch, _hash_inputs(batch, expected), envelope)
                expected += batch.num_rows
                if not self._put(item):
                    return
        except BaseException as exc:  # handed over to the consuming thread
            self._put(exc)
            return
        self._put(_END)

    def _items(self) -> Iterator[_Prepared]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def _first_repeated_id(store: Store) -> int | None:
    """The smallest seq whose event_id already appears at a smaller seq (one bulk query)."""
    rows = store.con.execute("SELECT count(*) - count(DISTINCT event_id) FROM entries").fetchall()
    if not rows or not rows[0][0]:
        return None
    rows = store.con.execute(
        "SELECT min(seq) FROM (SELECT seq, min(seq) OVER (PARTITION BY event_id) AS first "
        "FROM entries) WHERE seq > first"
    ).fetchall()
    return None if rows[0][0] is None else int(rows[0][0])


def _check_row(
    row: list[Any], expected: int, prev: bytes, codec: Codec, repeated: int | None
) -> None:
    """The exact checks of one row, in order; raises `_Failure` naming the first that fails."""
    for name, value in zip(_COLUMNS, row, strict=True):
        if value is None:
            raise _Failure(expected, f"{name} is NULL")
    seq, event_id, etype, occurred, payload, prev_hash, ehash = row
    if seq != expected:
        if seq > expected:
            raise _Failure(expected, f"entry seq {expected} is missing (next is {seq})")
        raise _Failure(seq, f"seq {seq} appears more than once")
    if prev_hash != prev:
        what = "32 zero bytes" if seq == 0 else f"the entry_hash of seq {seq - 1}"
        raise _Failure(seq, f"prev_hash does not equal {what}")
    if sha256(b"\x00" + seq.to_bytes(8, "big") + prev_hash + payload).digest() != ehash:
        raise _Failure(
            seq, "entry_hash does not equal SHA-256(0x00 || seq || prev_hash || payload)"
        )
    try:
        p_id, p_type, p_occurred = codec.peek_envelope(payload)
    except CodecError as exc:
        raise _Failure(seq, f"payload does not decode: {exc}") from exc
    if p_id != event_id:
        raise _Failure(seq, f"event_id {event_id!r} disagrees with payload ({p_id!r})")
    if p_type != etype:
        raise _Failure(seq, f"type {etype!r} disagrees with payload ({p_type!r})")
    if p_occurred != occurred:
        raise _Failure(seq, "occurred_at disagrees with payload")
    if seq == repeated:
        raise _Failure(seq, f"event_id {event_id!r} is recorded twice")


def _screen(
    batch: pa.RecordBatch,
    expected: int,
    prev: bytes,
    joined: pa.Array,
    envelope_ok: npt.NDArray[np.bool_],
) -> list[int]:
    """Indices of rows that may fail a check: a superset of those that do.

    Continuity, links and hash comparisons run over whole Arrow buffers; hashing is one
    hashlib call per row over `joined` (see `_hash_inputs`; seq taken as `expected + i`: a
    row whose seq differs is flagged anyway); `envelope_ok` comes from `_envelope_matches`.
    """
    n = batch.num_rows
    seqs = batch.column(0).to_numpy()
    suspects = np.flatnonzero(seqs != np.arange(expected, expected + n)).tolist()
    p_off, p_data = _binary_parts(batch.column(5))
    e_off, e_data = _binary_parts(batch.column(6))
    if not ((np.diff(p_off) == HASH_LEN).all() and (np.diff(e_off) == HASH_LEN).all()):
        return list(range(n))
    prevs = p_data[p_off[0] : p_off[-1]].reshape(n, HASH_LEN)
    stored = e_data[e_off[0] : e_off[-1]].reshape(n, HASH_LEN)
    linked = np.concatenate([np.frombuffer(prev, np.uint8).reshape(1, HASH_LEN), stored[:-1]])
    suspects += np.flatnonzero((prevs != linked).any(axis=1)).tolist()
    digests = np.frombuffer(b"".join(_digests(joined)), np.uint8).reshape(n, HASH_LEN)
    suspects += np.flatnonzero((digests != stored).any(axis=1)).tolist()
    suspects += np.flatnonzero(~envelope_ok).tolist()
    return suspects


def _hash_inputs(batch: pa.RecordBatch, expected: int) -> pa.Array:
    """0x00 || u64be(expected + i) || prev_hash || payload of every row, joined by Arrow."""
    n = batch.num_rows
    prefix = np.zeros((n, 9), np.uint8)
    prefix[:, 1:] = np.arange(expected, expected + n, dtype=">u8").view(np.uint8).reshape(n, 8)
    prefixes = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(9), n, [None, pa.py_buffer(prefix.tobytes())]
    ).cast(pa.large_binary())
    return pc.binary_join_element_wise(
        prefixes,
        batch.column(5).cast(pa.large_binary()),
        batch.column(4).cast(pa.large_binary()),
        pa.scalar(b"", pa.large_binary()),
    )


def _digests(joined: pa.Array) -> list[bytes]:
    """SHA-256 of each value of a large_binary array."""
    n = len(joined)
    offsets = np.frombuffer(joined.buffers()[1], np.int64)[joined.offset : joined.offset + n + 1]
    bounds = offsets.tolist()
    data = memoryview(joined.buffers()[2])
    return [sha256(data[a:b]).digest() for a, b in pairwise(bounds)]


def _binary_parts(column: pa.Array) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    """(offsets of each value, bytes) of a binary or string Arrow array, without copying."""
    if pa.types.is_large_binary(column.type) or pa.types.is_large_string(column.type):
        width: type[np.integer[Any]] = np.int64
    else:
        width = np.int32
    _, offsets_buf, data_buf = column.buffers()
    first = column.offset
    offsets = np.frombuffer(offsets_buf, dtype=width)[first : first + len(column) + 1]
    if data_buf is None or data_buf.size == 0:
        return offsets.astype(np.int64), np.zeros(1, np.uint8)
    return offsets.astype(np.int64), np.frombuffer(data_buf, dtype=np.uint8)


def _envelope_matches(
    batch: pa.RecordBatch, header: bytes, confluent: frozenset[bytes] = frozenset()
) -> npt.NDArray[np.bool_]:
    """Per row: the payload starts with `header` (or, in the Confluent wire format, with one of
    the 5-byte headers in `confluent`), then event_id, type and occurred_at exactly as the
    row's columns hold them (Avro: zig-zag varint lengths, UTF-8 bytes, zig-zag varint).

    True only when certain; anything unusual (another schema, strings of 64 bytes or more, a
    10-byte varint) is False and left to the exact check.
    """
    n = batch.num_rows
    p_off, data = _binary_parts(batch.column(4))
    last = data.size - 1
    start, end = p_off[:-1], p_off[1:]
    ok = end - start >= len(header) + 3
    for k, byte in enumerate(header):
        ok &= data[np.minimum(start + k, last)] == byte
    pos = start + len(header)
    if confluent:  # or the Confluent wire format, naming an id of the current schema
        ids = np.zeros(n, np.uint32)
        for k in range(1, CONFLUENT_HEADER_LEN):
            ids = (ids << np.uint32(8)) | data[np.minimum(start + k, last)]
        known = np.array(sorted(int.from_bytes(h[1:], "big") for h in confluent), np.uint32)
        framed = (end - start >= CONFLUENT_HEADER_LEN + 3) & np.isin(ids, known)
        framed &= data[np.minimum(start, last)] == 0
        ok |= framed
        pos = np.where(framed, start + CONFLUENT_HEADER_LEN, pos)
    for column in (batch.column(1), batch.column(2)):
        s_off, s_data = _binary_parts(column)
        lengths = s_off[1:] - s_off[:-1]
        ok &= (lengths < 64) & (data[np.minimum(pos, last)] == lengths * 2)
        ok &= pos + 1 + lengths <= end
        first = int(s_off[0])
        total = int(s_off[-1]) - first
        if total:
            # index in `data` of every byte of every string: its row's start plus its rank
            where = np.repeat(pos + 1 - (s_off[:-1] - first), lengths)
            where += np.arange(total)
            np.minimum(where, last, out=where)
            differ = np.flatnonzero(data[where] != s_data[first : first + total])
            if differ.size:
                ok[np.searchsorted(s_off[1:] - first, differ, side="right")] = False
        pos = pos + 1 + lengths
    raw = np.stack([data[np.minimum(pos + k, last)] for k in range(9)]).astype(np.uint64)
    stops = raw < 0x80
    size = np.argmax(stops, axis=0)
    ok &= stops.any(axis=0) & (pos + size + 1 <= end)
    value = np.zeros(n, dtype=np.uint64)
    for k in range(9):
        value |= np.where(k <= size, (raw[k] & np.uint64(0x7F)) << np.uint64(7 * k), 0).astype(
            np.uint64
        )
    signed = (value >> np.uint64(1)).astype(np.int64) ^ -(value & np.uint64(1)).astype(np.int64)
    ok &= signed == batch.column(3).to_numpy(zero_copy_only=False)
    return ok


def verify_store(
    store: Store,
    codec: Codec | None = None,
    progress: Callable[[int, int], None] | None = None,
    checkpoint: str | None = None,
    public_key: str | None = None,
    *,
    public_keys: Sequence[str] = (),
    origin: str | None = None,
) -> VerifyReport:
    """Recompute every entry hash and link from seq 0 and check the recorded head; then the
    Merkle tree and every stored checkpoint, and `checkpoint` (a signed note the auditor kept).

    `public_keys` (files or key texts; `public_key` is one more) are the keys the auditor
    trusts, and `origin` the origin they expect: see `ledger.integrity.audit` for what is
    checked and proven with them. A failed report still carries a Merkle root: that of the
    entries verified before the failure, `merkle_root_size` of them.

    First of all, the file's catalog must be a ledger's (`store.catalog`): a macro, view or
    altered column changes what every query reads, so nothing else is checked on such a file."""
    problems = catalog_problems(store.con)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return VerifyReport(
            False,
            0,
            "",
            None,
            f"the file is not laid out as a ledger: {problems[0]}{more}. Keep a copy as "
            "evidence; `ledger rebuild` recreates the projection tables, anything else must "
            "be removed by hand",
            ["catalog"],
            catalog=problems,
        )
    derived = DerivedCheck.start(store, codec)
    keys = (*public_keys, *([public_key] if public_key else []))
    try:
        # the entries in the Confluent wire format read with the writer schemas the file keeps
        report = _verify(
            store, ledger_codec(store.con, codec), progress, checkpoint, keys, origin, derived
        )
    finally:
        derived.cancel()
    if not report.merkle_root:
        _root_of_verified(store, report)
    return report


def _take_integrity(report: VerifyReport, integrity: Integrity) -> None:
    """Copy what the checkpoint audit found that the report shows (origin, keys, root)."""
    report.origin = integrity.origin
    report.merkle_root_size = integrity.root_size
    report.merkle_root_basis = f"recomputed from the entry hashes of all {integrity.root_size:,}"
    report.trusted_keys = integrity.trusted
    report.checkpoint_details = [d.to_dict() for d in integrity.details]


def _root_of_verified(store: Store, report: VerifyReport) -> None:
    """For a report that failed before the Merkle audit: the root over the entries that did
    verify (seq 0..bad_seq-1), and the ledger's origin."""
    verified = report.size if report.bad_seq is None else min(report.bad_seq, report.size)
    verified = max(verified, 0)
    try:
        report.merkle_root = root_of_entries(store.con, verified).hex()
    except StoreError:  # the rows before the failure are not all readable after all
        verified, report.merkle_root = 0, root_of_entries(store.con, 0).hex()
    report.merkle_root_size = verified
    report.merkle_root_basis = (
        f"recomputed from the entry hashes of seq 0..{verified - 1}, verified before the failure"
        if verified
        else "the empty tree: no entry verified before the failure"
    )
    report.origin = report.origin or ledger_origin(store)


def _verify(
    store: Store,
    codec: Codec,
    progress: Callable[[int, int], None] | None,
    checkpoint: str | None,
    public_keys: Sequence[str],
    origin: str | None,
    derived: DerivedCheck,
) -> VerifyReport:
    checks = ["seq continuity", "prev_hash links", "entry hashes", "payload envelope", "unique ids"]
    failure: tuple[int, str] | None = None
    try:
        size, head = _check_rows(store, codec, progress)
    except _Failure as fail:
        failure = (fail.seq, fail.reason)
    if failure is not None:  # outside `except`: the traceback no longer pins the open reader
        return VerifyReport(False, store.size(), "", failure[0], failure[1], checks)
    recorded = store.recorded_head()
    checks.append("recorded head")
    if recorded is not None:
        rec_size, rec_hash = recorded
        if rec_size > size:
            return VerifyReport(
                False,
                size,
                head.hex(),
                size,
                f"ledger was recorded with {rec_size} entries but holds {size}: "
                f"entries from seq {size} on are missing",
                checks,
            )
        if rec_size < size:
            return VerifyReport(
                False,
                size,
                head.hex(),
                rec_size,
                f"entries from seq {rec_size} on were not written by the ledger "
                f"(its recorded head is {rec_size} entries)",
                checks,
            )
        if rec_hash != head:
            reason = "head hash differs from the one recorded with the last append"
            return _localized(store, size, head, checks, reason)
    elif size:
        return VerifyReport(
            False, size, head.hex(), 0, "entries exist but no head was ever recorded", checks
        )

    integrity = audit_ledger(
        store, size, checks, checkpoint, public_keys=public_keys, origin=origin
    )
    report = VerifyReport(True, size, head.hex(), checks=checks)
    report.merkle_root = integrity.root.hex()
    report.checkpoints = integrity.checkpoints
    _take_integrity(report, integrity)
    if integrity.problem:
        report.ok, report.bad_seq, report.reason = False, integrity.bad_seq, integrity.problem
    meta_problem = _check_meta(store, size, checks)
    if meta_problem is not None and report.ok:
        report.ok, (report.bad_seq, report.reason) = False, meta_problem
    schema_problem = _check_schemas(store, checks)
    if schema_problem is not None and report.ok:
        report.ok, report.bad_seq, report.reason = False, None, schema_problem
    checks.append("projections recomputed from the payloads")
    differences, total = derived.result()
    report.derived = [d.to_dict() for d in differences]
    report.derived_total = total
    if differences and report.ok:
        first = differences[0]
        more = f" (and {total - 1:,} more)" if total > 1 else ""
        report.ok, report.bad_seq = False, first.seq
        report.reason = (
            f"{first.describe()}{more}; answers read these tables: keep a copy of the file as "
            "evidence, then `ledger rebuild` recomputes them from the entries"
        )
    return report


def _localized(
    store: Store, size: int, head: bytes, checks: list[str], reason: str
) -> VerifyReport:
    """A consistent chain with the wrong head was rewritten from some entry on: the stored
    Merkle nodes (complete subtrees of 16+ entries) say from which range, if it is earlier."""
    found = audit(store.con, size)
    bad_seq = max(size - 1, 0)
    if found.problem and found.bad_seq is not None and found.bad_seq < bad_seq:
        bad_seq, reason = found.bad_seq, f"{reason}; {found.problem}"
    return VerifyReport(False, size, head.hex(), bad_seq, reason, checks)


def _check_schemas(store: Store, checks: list[str]) -> str | None:
    """The writer schemas kept by Confluent schema id against the digests recorded with them
    (`ledger.store.schemas`): the first problem (and how many more), or None. An edited row
    changes what the entries that name its id say, with their bytes, hashes and checkpoints
    intact."""
    checks.append("writer schemas kept by schema id")
    problems = schema_problems(store.con)
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return (
        f"{problems[0]}{more}: the entries that name this schema id may read otherwise than "
        "when they were appended"
    )


def _check_meta(store: Store, size: int, checks: list[str]) -> tuple[int | None, str] | None:
    """`recorded_at` and `source` against the meta chain recorded with the last append
    (`store.meta`): (bad seq or None, reason), or None when they agree. Every ledger this
    version has opened writable has one, so a missing chain beside entries fails too."""
    checks.append("recorded_at and source (meta chain)")
    recorded = store.recorded_meta()
    if recorded is None:
        if not size:
            return None
        return None, (
            "no meta chain is recorded with the head, so recorded_at and source cannot be "
            "checked: it was deleted, or this ledger predates it and was not opened writable "
            "since (`ledger rebuild` records it from the entries as they are now)"
        )
    found = meta_chain_of(store.con)
    if found.meta is None:
        return found.bad_seq, str(found.problem)
    if found.meta != recorded:
        return None, (
            "recorded_at or source of some entry differs from what the ledger recorded when it "
            "wrote it (the meta chain of the last append does not match)"
        )
    return None
