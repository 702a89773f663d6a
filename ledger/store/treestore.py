"""The Merkle tree kept in the ledger file, so roots and proofs at any size cost O(log n) reads.

Stored, inside each append's transaction:
- `merkle_nodes(node, hash)`: every complete subtree of 2**level leaves with level >= `min_level`
  (default 4), keyed `node = level << 56 | index` (PRIMARY KEY: point lookups in ~1 ms at 10M
  entries). Nodes below `min_level` are recomputed from at most 2**min_level entry hashes,
  which keeps this table at n/8 rows instead of 2n.
- `merkle_head(size, min_level, frontier, root)`: one row; `frontier` is the concatenated
  hashes of `merkle.root_plan(size)`, all an append needs to extend the tree.
- `checkpoints` (`ledger.store.checkpoints`): signed tree heads, created here so every
  ledger file has the table.

`audit` recomputes the whole tree from the entry hashes and compares it with what is stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from ledger.errors import StoreError
from ledger.store import checkpoints
from ledger.store._store import Appended
from ledger.tlog import merkle
from ledger.tlog.merkle import HASH_LEN, NodeId

__all__ = [
    "CHUNK_LEVEL",
    "MIN_LEVEL",
    "NODE_SCHEMA",
    "SCHEMA_SQL",
    "Audit",
    "Head",
    "MerkleExtension",
    "audit",
    "catch_up",
    "consistency_proof",
    "inclusion_proof",
    "node_key",
    "read_head",
    "root_at",
    "root_of_entries",
]

MIN_LEVEL = 4
CHUNK_LEVEL = 16
_KEY_SHIFT = 56

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS merkle_nodes (
    node BIGINT PRIMARY KEY,
    hash BLOB NOT NULL USING COMPRESSION uncompressed
);
CREATE TABLE IF NOT EXISTS merkle_head (
    size      BIGINT NOT NULL,
    min_level UTINYINT NOT NULL,
    frontier  BLOB NOT NULL,
    root      BLOB NOT NULL
);
"""

NODE_SCHEMA = pa.schema([("node", pa.int64()), ("hash", pa.binary())])


def node_key(level: int, index: int) -> int:
    return level << _KEY_SHIFT | index


@dataclass(frozen=True, slots=True)
class Head:
    """The stored tree: its size, root, and the frontier that extends it."""

    size: int
    min_level: int
    frontier: list[bytes]
    root: bytes


class MerkleExtension:
    """`StoreExtension` keeping the Merkle tree in step with `entries`, append by append."""

    name = "merkle"

    def create_schema(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute(SCHEMA_SQL)
        con.execute(checkpoints.SCHEMA_SQL)
        checkpoints.record_first_origin(con)
        catch_up(con)

    def on_append(self, con: duckdb.DuckDBPyConnection, appended: Appended) -> None:
        if not appended.hashes:
            return
        head = read_head(con)
        first = appended.first_seq
        if head.size > first:
            raise StoreError(
                f"Merkle state covers {head.size} entries but the append starts at seq {first}"
            )
        leaves = _entry_hashes(con, head.size, first) + appended.hashes
        _extend(con, head, leaves)


def read_head(con: duckdb.DuckDBPyConnection) -> Head:
    """The stored tree head; an empty tree if nothing was ever appended (or no table yet)."""
    try:
        rows = con.execute("SELECT size, min_level, frontier, root FROM merkle_head").fetchall()
    except duckdb.CatalogException:
        rows = []
    if not rows:
        return Head(0, MIN_LEVEL, [], merkle.EMPTY_ROOT)
    if len(rows) > 1:
        raise StoreError(f"merkle_head holds {len(rows)} rows, expected one")
    size, min_level, blob, root = rows[0]
    blob = bytes(blob)
    frontier = [blob[i : i + HASH_LEN] for i in range(0, len(blob), HASH_LEN)]
    return Head(int(size), int(min_level), frontier, bytes(root))


def catch_up(con: duckdb.DuckDBPyConnection, batch: int = 1 << 18) -> int:
    """Build the tree for entries appended before the Merkle state existed; returns the size."""
    head = read_head(con)
    rows = con.execute("SELECT count(*) FROM entries").fetchall()
    total = int(rows[0][0])
    while head.size < total:
        head = _extend(con, head, _entry_hashes(con, head.size, min(total, head.size + batch)))
    return head.size


def _extend(con: duckdb.DuckDBPyConnection, head: Head, leaves: list[bytes]) -> Head:
    size, frontier, done = merkle.append_leaves(head.size, head.frontier, leaves, head.min_level)
    if done:
        table = pa.Table.from_arrays(
            [
                pa.array([lvl << _KEY_SHIFT | idx for lvl, idx, _ in done], pa.int64()),
                pa.array([h for _, _, h in done], pa.binary()),
            ],
            schema=NODE_SCHEMA,
        )
        con.register("_new_merkle_nodes", table)
        try:
            con.execute("INSERT INTO merkle_nodes SELECT * FROM _new_merkle_nodes")
        finally:
            con.unregister("_new_merkle_nodes")
    root = merkle.fold(frontier)
    con.execute("DELETE FROM merkle_head")
    con.execute(
        "INSERT INTO merkle_head VALUES (?, ?, ?, ?)",
        [size, head.min_level, b"".join(frontier), root],
    )
    return Head(size, head.min_level, frontier, root)


def _entry_hashes(con: duckdb.DuckDBPyConnection, lo: int, hi: int) -> list[bytes]:
    """Entry hashes of seq lo..hi-1, checked to be all there."""
    if hi <= lo:
        return []
    rows = sorted(
        con.execute(
            "SELECT seq, entry_hash FROM entries WHERE seq >= ? AND seq < ?", [lo, hi]
        ).fetchall()
    )
    seqs = [int(r[0]) for r in rows]
    if seqs != list(range(lo, hi)):
        missing = next((s for s, want in zip(seqs, range(lo, hi), strict=False) if s != want), None)
        where = missing if missing is not None else lo + len(seqs)
        raise StoreError(f"entries seq {lo}..{hi - 1} are not all present (first gap near {where})")
    return [bytes(r[1]) for r in rows]


# -- reading the stored tree ---------------------------------------------------------------------


def _nodes(
    con: duckdb.DuckDBPyConnection, head: Head, ids: Iterable[NodeId]
) -> dict[NodeId, bytes]:
    """Hashes of complete nodes inside [0, head.size): stored ones looked up, low ones rebuilt."""
    ids = set(ids)
    out: dict[NodeId, bytes] = {}
    stored = sorted(n for n in ids if n[0] >= head.min_level)
    if stored:
        keys = [node_key(level, index) for level, index in stored]
        rows = con.execute(
            "SELECT node, hash FROM merkle_nodes WHERE node IN (SELECT unnest(?))", [keys]
        ).fetchall()
        found = {int(k): bytes(h) for k, h in rows}
        for node, key in zip(stored, keys, strict=True):
            if key not in found:
                raise StoreError(
                    f"stored Merkle node (level {node[0]}, index {node[1]}) is missing"
                )
            out[node] = found[key]
    block = 1 << head.min_level
    blocks = sorted({(index << level) // block for level, index in ids if level < head.min_level})
    for b in blocks:
        lo = b * block
        levels = merkle.levels(_entry_hashes(con, lo, min(lo + block, head.size)))
        for level, index in ids:
            if level < head.min_level and (index << level) // block == b:
                out[(level, index)] = levels[level][index - (lo >> level)]
    return out


def _check_size(head: Head, size: int) -> None:
    if not 0 <= size <= head.size:
        raise StoreError(
            f"the ledger's Merkle tree has {head.size} entries; no tree of size {size}"
        )


def root_at(con: duckdb.DuckDBPyConnection, size: int, head: Head | None = None) -> bytes:
    """MTH of the first `size` entries, from O(log n) stored nodes."""
    head = head or read_head(con)
    _check_size(head, size)
    if size == head.size:
        return head.root
    plan = merkle.root_plan(size)
    nodes = _nodes(con, head, plan)
    return merkle.fold([nodes[n] for n in plan])


def root_of_entries(con: duckdb.DuckDBPyConnection, size: int) -> bytes:
    """MTH of the first `size` entries recomputed from their entry hashes (RFC 9162 section
    2.1.1), streamed; the stored nodes are not used. For reports on entries already verified
    (seq 0..size-1 present once each); raises `StoreError` if they are not all there."""
    count = 0
    frontier: list[bytes] = []
    reader = con.sql(
        "SELECT entry_hash FROM entries WHERE seq >= 0 AND seq < ? ORDER BY seq", params=[size]
    ).to_arrow_reader(1 << CHUNK_LEVEL)
    for batch in reader:
        count, frontier, _ = merkle.append_leaves(
            count, frontier, batch.column(0).to_pylist(), min_level=64
        )
    if count != size:
        raise StoreError(f"entries seq 0..{size - 1} are not all present (found {count})")
    return merkle.fold(frontier)


def inclusion_proof(
    con: duckdb.DuckDBPyConnection, index: int, size: int, head: Head | None = None
) -> list[bytes]:
    """Audit path of entry `index` in the tree of `size` entries (RFC 9162 2.1.3.1)."""
    head = head or read_head(con)
    _check_size(head, size)
    plan = merkle.inclusion_plan(index, size)
    return merkle.resolve(plan, _nodes(con, head, merkle.plan_nodes(plan)))


def consistency_proof(
    con: duckdb.DuckDBPyConnection, old_size: int, new_size: int, head: Head | None = None
) -> list[bytes]:
    """Proof that the tree of `old_size` is a prefix of the tree of `new_size` (2.1.4.1)."""
    head = head or read_head(con)
    _check_size(head, new_size)
    plan = merkle.consistency_plan(old_size, new_size)
    return merkle.resolve(plan, _nodes(con, head, merkle.plan_nodes(plan)))


# -- auditing the stored tree --------------------------------------------------------------------


@dataclass(slots=True)
class Audit:
    """Recomputed roots at the requested sizes, and the first disagreement with stored state."""

    roots: dict[int, bytes]
    problem: str | None = None
    bad_seq: int | None = None


def _pairs(level: list[bytes]) -> list[bytes]:
    return [merkle.node_hash(a, b) for a, b in zip(level[0::2], level[1::2], strict=False)]


def audit(con: duckdb.DuckDBPyConnection, size: int, sizes: Iterable[int] = ()) -> Audit:
    """Rebuild the tree over the first `size` entry hashes (streamed in 2**16 chunks) and
    compare every stored node, the frontier and the head; return roots at `sizes` (<= size)."""
    want = sorted({s for s in sizes if 0 < s <= size} | ({size} if size else set()))
    head = read_head(con)
    keep = head.min_level
    upper: list[list[bytes]] = [[] for _ in range(64)]
    low: dict[int, dict[NodeId, bytes]] = {s: {} for s in want}
    chunk = 1 << CHUNK_LEVEL
    reader = con.sql(
        "SELECT entry_hash FROM entries WHERE seq < ? ORDER BY seq", params=[size]
    ).to_arrow_reader(chunk)
    buf: list[bytes] = []
    offset = 0

    def process(leaves: list[bytes]) -> None:
        lv = merkle.levels(leaves)
        for k in range(keep, min(len(lv), CHUNK_LEVEL + 1)):
            upper[k].extend(lv[k])
        for s in want:
            if offset < s <= offset + len(leaves):
                for k, i in merkle.root_plan(s):
                    if k < CHUNK_LEVEL:
                        low[s][(k, i)] = lv[k][i - (offset >> k)]

    for batch in reader:
        buf.extend(batch.column(0).to_pylist())
        while len(buf) >= chunk:
            process(buf[:chunk])
            del buf[:chunk]
            offset += chunk
    if buf:
        process(buf)
    for k in range(CHUNK_LEVEL, 63):
        if len(upper[k]) < 2:
            break
        upper[k + 1] = _pairs(upper[k])
    roots: dict[int, bytes] = {}
    for s in want:
        roots[s] = merkle.fold(
            [low[s][(k, i)] if k < CHUNK_LEVEL else upper[k][i] for k, i in merkle.root_plan(s)]
        )
    roots[0] = merkle.EMPTY_ROOT
    result = Audit(roots)
    if head.size != size:
        result.problem = (
            f"the stored Merkle tree covers {head.size} entries but the ledger holds {size}"
        )
        result.bad_seq = min(head.size, size)
        return result
    _compare_nodes(con, upper, keep, size, result)  # first: it names the earliest bad range
    if result.problem:
        return result
    if size and head.frontier != [
        low[size][n] if n[0] < CHUNK_LEVEL else upper[n[0]][n[1]] for n in merkle.root_plan(size)
    ]:
        result.problem = "the stored Merkle frontier does not match the entries"
        result.bad_seq = size - 1
        return result
    if head.root != roots.get(size, merkle.EMPTY_ROOT):
        result.problem = "the stored Merkle root does not match the entries"
        result.bad_seq = max(size - 1, 0)
    return result


def _compare_nodes(
    con: duckdb.DuckDBPyConnection, upper: list[list[bytes]], keep: int, size: int, result: Audit
) -> None:
    table = con.sql("SELECT node, hash FROM merkle_nodes ORDER BY node").to_arrow_table()
    keys = table.column(0).to_pylist()
    hashes = table.column(1).to_pylist()
    expected = [(k, i) for k in range(keep, 64) for i in range(size >> k)]
    if len(keys) != len(expected):
        got = {(key >> _KEY_SHIFT, key & ((1 << _KEY_SHIFT) - 1)) for key in keys}
        extra = sorted(got - set(expected))
        missing = sorted(set(expected) - got)
        if missing:
            k, i = missing[0]
            result.problem = f"stored Merkle node (level {k}, index {i}) is missing"
            result.bad_seq = i << k
        else:
            k, i = extra[0]
            result.problem = (
                f"stored Merkle node (level {k}, index {i}) lies beyond the ledger's {size} entries"
            )
            result.bad_seq = min(i << k, size)
        return
    for key, h, (k, i) in zip(keys, hashes, expected, strict=True):
        if key != node_key(k, i) or h != upper[k][i]:
            result.problem = (
                f"stored Merkle node (level {k}, index {i}) covering seq "
                f"{i << k}..{((i + 1) << k) - 1} does not match the entries"
            )
            result.bad_seq = i << k
            return
