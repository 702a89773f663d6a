"""The hash chain, pure: each entry commits to its position, its predecessor and the exact bytes.

    entry_hash = SHA-256(0x00 || u64_big_endian(seq) || prev_hash || payload)

`prev_hash` of seq 0 is 32 zero bytes. The 0x00 prefix makes every entry hash an RFC 9162 leaf
hash (of leaf input `seq || prev_hash || payload`), so the same values are the Merkle leaves.

What the ledger adds to each entry when it writes it (`recorded_at`, `source`) is not in the
entry hash; it is committed per append by a second chain (`meta_extend`), recorded with the
head, so an edit of either column is found by `verify` like an edit of the head.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from hashlib import sha256

__all__ = [
    "GENESIS",
    "HASH_LEN",
    "META_TAG",
    "entry_hash",
    "extend",
    "meta_extend",
    "meta_extend_encoded",
]

GENESIS = bytes(32)
HASH_LEN = 32
META_TAG = b"agent-ledger/entry-meta/v1\x00"


def entry_hash(seq: int, prev_hash: bytes, payload: bytes) -> bytes:
    """The hash of entry `seq`, given the previous entry's hash and the received bytes."""
    if seq < 0:
        raise ValueError("seq must be >= 0")
    if len(prev_hash) != HASH_LEN:
        raise ValueError("prev_hash must be 32 bytes")
    return sha256(b"\x00" + seq.to_bytes(8, "big") + prev_hash + payload).digest()


def extend(start_seq: int, prev_hash: bytes, payloads: Iterable[bytes]) -> Iterator[bytes]:
    """Hashes of consecutive entries from `start_seq` on, each chained to the one before."""
    seq = start_seq
    for payload in payloads:
        prev_hash = sha256(b"\x00" + seq.to_bytes(8, "big") + prev_hash + payload).digest()
        yield prev_hash
        seq += 1


def meta_extend(
    prev: bytes, first_seq: int, recorded_us: int, sources: Sequence[str] | Sequence[bytes]
) -> bytes:
    """The meta chain after one append of `len(sources)` entries from `first_seq` on, all
    recorded at `recorded_us` (microseconds since the epoch; strictly later than the append
    before, so `verify` finds the appends again as runs of equal `recorded_at`):

        SHA-256(META_TAG || prev || u64(first_seq) || u64(n) || i64(recorded_us)
                || u32(len(source_0)) ... u32(len(source_n-1)) || source_0 ... source_n-1)

    big-endian, sources as UTF-8; fixed-width lengths first make the input unambiguous. The
    chain starts at `GENESIS`.
    """
    raw = [s.encode() if isinstance(s, str) else s for s in sources]
    lengths = b"".join(len(r).to_bytes(4, "big") for r in raw)
    return meta_extend_encoded(prev, first_seq, len(raw), recorded_us, lengths, b"".join(raw))


def meta_extend_encoded(
    prev: bytes, first_seq: int, n: int, recorded_us: int, lengths: bytes, sources: bytes
) -> bytes:
    """`meta_extend` with the sources already encoded: `lengths` the n big-endian u32 byte
    lengths, `sources` the n UTF-8 strings joined (how `verify` has them, from Arrow)."""
    h = sha256(META_TAG + prev)
    h.update(first_seq.to_bytes(8, "big") + n.to_bytes(8, "big"))
    h.update(recorded_us.to_bytes(8, "big", signed=True))
    h.update(lengths)
    h.update(sources)
    return h.digest()
