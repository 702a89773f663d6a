"""RFC 9162 section 2.1 Merkle tree over the ledger's entry hashes, pure (no I/O).

The entry hashes already are leaf hashes, SHA-256(0x00 || leaf input), so this module only
hashes interior nodes: SHA-256(0x01 || left || right). The root of the empty tree is SHA-256("").

Nodes are named (level, index): the complete subtree of 2**level leaves starting at leaf
index * 2**level. Every subtree the RFC's MTH/PATH/PROOF recursions ask for is either such a
complete node or the "right edge" of a tree, whose hash is the right fold of the complete
nodes that decompose it. Proof builders here therefore return *plans* (for each proof element,
the complete nodes to fold), so a store can fetch only O(log n) stored nodes and never rehash
the log; `inclusion_proof` / `consistency_proof` apply the same plans to an in-memory leaf list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from hashlib import sha256

__all__ = [
    "EMPTY_ROOT",
    "HASH_LEN",
    "NodeId",
    "Plan",
    "ProofError",
    "append_leaves",
    "consistency_plan",
    "consistency_proof",
    "decompose",
    "empty_root_error",
    "fold",
    "inclusion_plan",
    "inclusion_proof",
    "leaf_hash",
    "levels",
    "node_getter",
    "node_hash",
    "plan_nodes",
    "resolve",
    "root",
    "root_from_inclusion",
    "root_plan",
    "verify_consistency",
    "verify_inclusion",
]

HASH_LEN = 32
EMPTY_ROOT = sha256(b"").digest()

NodeId = tuple[int, int]
Plan = list[list[NodeId]]


class ProofError(ValueError):
    """A proof that does not verify; the message says which check failed."""


def empty_root_error(size: int, root: bytes) -> str | None:
    """What is wrong with a tree head (`size`, `root`) that no tree can have, else None.

    The one rule every reader of a tree head applies (checkpoint bodies in `ledger.tlog.note`,
    so the stored checkpoints, `verify --checkpoint` and proof bundles; both sides of a
    consistency proof here): RFC 6962 section 2.1 (RFC 9162 section 2.1.1) defines the hash of
    the empty list as MTH({}) = SHA-256(""), so a tree of size 0 has exactly that root, and
    C2SP tlog-checkpoint's root hash line is "the root of the RFC 6962 Merkle hash tree at the
    specified tree size". (The offline verifier `ledger.integrity.proofcheck` repeats this rule
    on purpose, as it repeats the proof checks; a test holds the two to the same answers.)
    """
    if size == 0 and root != EMPTY_ROOT:
        return (
            f'a tree of size 0 has the root SHA-256("") = {EMPTY_ROOT.hex()} '
            f"(RFC 6962 section 2.1), not {root.hex()}"
        )
    return None


def leaf_hash(leaf_input: bytes) -> bytes:
    return sha256(b"\x00" + leaf_input).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right).digest()


def fold(hashes: Sequence[bytes]) -> bytes:
    """Right fold of consecutive complete subtrees, largest first: the hash of their union."""
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = sha256(b"\x01" + h + acc).digest()
    return acc


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def decompose(lo: int, hi: int) -> list[NodeId]:
    """Complete nodes covering leaves [lo, hi), largest first; `lo` must be a tree node start."""
    out: list[NodeId] = []
    pos = lo
    width = hi - lo
    for level in range(width.bit_length() - 1, -1, -1):
        if width >> level & 1:
            if pos & ((1 << level) - 1):
                raise ValueError(f"[{lo}, {hi}) is not a subtree of an RFC 9162 tree")
            out.append((level, pos >> level))
            pos += 1 << level
    return out


def root_plan(size: int) -> list[NodeId]:
    """Nodes whose fold is the root of the tree of `size` leaves (its compact range)."""
    return decompose(0, size)


def _path_ranges(m: int, lo: int, hi: int, out: list[tuple[int, int]]) -> None:
    if hi - lo <= 1:
        return
    k = _split(hi - lo)
    if m < k:
        _path_ranges(m, lo, lo + k, out)
        out.append((lo + k, hi))
    else:
        _path_ranges(m - k, lo + k, hi, out)
        out.append((lo, lo + k))


def _subproof_ranges(m: int, lo: int, hi: int, whole: bool, out: list[tuple[int, int]]) -> None:
    n = hi - lo
    if m == n:
        if not whole:
            out.append((lo, hi))
        return
    k = _split(n)
    if m <= k:
        _subproof_ranges(m, lo, lo + k, whole, out)
        out.append((lo + k, hi))
    else:
        _subproof_ranges(m - k, lo + k, hi, False, out)
        out.append((lo, lo + k))


def inclusion_plan(index: int, size: int) -> Plan:
    """RFC 9162 2.1.3.1 PATH(index, D[size]) as node plans, leaf-side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    ranges: list[tuple[int, int]] = []
    _path_ranges(index, 0, size, ranges)
    return [decompose(lo, hi) for lo, hi in ranges]


def consistency_plan(old_size: int, new_size: int) -> Plan:
    """RFC 9162 2.1.4.1 PROOF(old_size, D[new_size]) as node plans (empty when trivial)."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size in (0, new_size):
        return []
    ranges: list[tuple[int, int]] = []
    _subproof_ranges(old_size, 0, new_size, True, ranges)
    return [decompose(lo, hi) for lo, hi in ranges]


def plan_nodes(plan: Iterable[Iterable[NodeId]]) -> set[NodeId]:
    return {node for element in plan for node in element}


def resolve(plan: Iterable[Sequence[NodeId]], nodes: Mapping[NodeId, bytes]) -> list[bytes]:
    """The proof hashes of a plan, given the hashes of the nodes it names."""
    return [fold([nodes[n] for n in element]) for element in plan]


# -- in-memory trees -----------------------------------------------------------------------------


def levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Every complete node, level by level (level 0 = the leaves themselves)."""
    out = [list(leaves)]
    cur = out[0]
    while len(cur) > 1:
        cur = [sha256(b"\x01" + a + b).digest() for a, b in zip(cur[0::2], cur[1::2], strict=False)]
        out.append(cur)
    return out


def node_getter(leaves: Sequence[bytes]) -> Callable[[NodeId], bytes]:
    tree = levels(leaves)
    return lambda node: tree[node[0]][node[1]]


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of a list of leaf hashes."""
    get = node_getter(leaves)
    return fold([get(n) for n in root_plan(len(leaves))])


def inclusion_proof(leaves: Sequence[bytes], index: int, size: int | None = None) -> list[bytes]:
    size = len(leaves) if size is None else size
    get = node_getter(leaves[:size])
    return [fold([get(n) for n in el]) for el in inclusion_plan(index, size)]


def consistency_proof(
    leaves: Sequence[bytes], old_size: int, new_size: int | None = None
) -> list[bytes]:
    new_size = len(leaves) if new_size is None else new_size
    get = node_getter(leaves[:new_size])
    return [fold([get(n) for n in el]) for el in consistency_plan(old_size, new_size)]


# -- incremental appends -------------------------------------------------------------------------


def append_leaves(
    size: int, frontier: Sequence[bytes], leaves: Iterable[bytes], min_level: int = 0
) -> tuple[int, list[bytes], list[tuple[int, int, bytes]]]:
    """Extend the compact range [0, size) by `leaves`.

    `frontier` holds the hashes of `root_plan(size)` (largest first). Returns the new size, the
    new frontier, and every complete node at level >= `min_level` that the appends completed,
    as (level, index, hash), in completion order.
    """
    stack = list(frontier)
    if len(stack) != size.bit_count():
        raise ValueError(
            f"a frontier of size {size} has {size.bit_count()} hashes, not {len(stack)}"
        )
    done: list[tuple[int, int, bytes]] = []
    for leaf in leaves:
        h = leaf
        n = size
        level = 0
        if min_level == 0:
            done.append((0, size, h))
        while n & 1:
            h = sha256(b"\x01" + stack.pop() + h).digest()
            level += 1
            n >>= 1
            if level >= min_level:
                done.append((level, size >> level, h))
        stack.append(h)
        size += 1
    return size, stack, done


# -- verification (RFC 9162 2.1.3.2 and 2.1.4.2) ---------------------------------------------


def _check_hash(name: str, value: bytes) -> None:
    if len(value) != HASH_LEN:
        raise ProofError(f"{name} is {len(value)} bytes, not {HASH_LEN}")


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """The root an audit path leads to (RFC 9162 2.1.3.2 steps 1-4)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not inside a tree of size {size}")
    _check_hash("leaf hash", leaf)
    fn, sn, r = index, size - 1, leaf
    for i, p in enumerate(path):
        _check_hash(f"audit path element {i}", p)
        if sn == 0:
            raise ProofError(
                f"audit path is too long: {len(path)} elements for leaf {index} of {size}"
            )
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(
            f"audit path is too short: {len(path)} elements for leaf {index} of {size}"
        )
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, path: Sequence[bytes], root_hash: bytes
) -> None:
    """Raise ProofError unless `path` proves leaf `index` is in the tree `size`, `root_hash`."""
    if root_from_inclusion(index, size, leaf, path) != root_hash:
        raise ProofError("audit path does not lead to the root hash")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ProofError unless `proof` shows the tree of `old_size` is a prefix of `new_size`.

    RFC 9162 section 2.1.4.2; a size-0 side must carry the empty-tree root (see
    `empty_root_error`), since the RFC's proof from the empty tree is empty and so checks
    nothing of the old root by itself.
    """
    if not 0 <= old_size <= new_size:
        raise ProofError(f"tree size went down from {old_size} to {new_size}")
    _check_hash("old root", old_root)
    _check_hash("new root", new_root)
    for side, size, root in (("old", old_size, old_root), ("new", new_size, new_root)):
        if problem := empty_root_error(size, root):
            raise ProofError(f"{side} root: {problem}")
    if old_size == new_size:
        if proof:
            raise ProofError("consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError(f"two different roots for the same tree size {old_size}")
        return
    if old_size == 0:
        if proof:
            raise ProofError("consistency proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    for i, p in enumerate(proof):
        _check_hash(f"consistency proof element {i}", p)
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != old_root:
        raise ProofError(f"consistency proof does not lead to the old root (size {old_size})")
    if sr != new_root:
        raise ProofError(f"consistency proof does not lead to the new root (size {new_size})")
