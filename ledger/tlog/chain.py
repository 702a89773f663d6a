"""The hash chain, pure: each entry commits to its position, its predecessor and the exact bytes.

    entry_hash = SHA-256(0x00 || u64_big_endian(seq) || prev_hash || payload)

`prev_hash` of seq 0 is 32 zero bytes. The 0x00 prefix makes every entry hash an RFC 9162 leaf
hash (of leaf input `seq || prev_hash || payload`), so the same values are the Merkle leaves.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from hashlib import sha256

__all__ = ["GENESIS", "HASH_LEN", "entry_hash", "extend"]

GENESIS = bytes(32)
HASH_LEN = 32


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
