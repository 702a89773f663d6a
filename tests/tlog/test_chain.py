"""The hash chain: fixed vectors an auditor can reproduce, and the formula recomputed here."""

from __future__ import annotations

import hashlib

import pytest

from ledger.tlog import chain

PAYLOADS = [b"alpha", b"beta", b"gamma"]
#: SHA-256(0x00 || u64be(seq) || prev_hash || payload), prev of seq 0 = 32 zero bytes
VECTORS = [
    "c3a25cf6eddd973e5dfa5e19028235f3f93cf7bb3ab11b49fbb2c3729fd3aa48",
    "0b0eaa611af786330988820935c6e743812d2ff52b1b61940d65830cf6b3926a",
    "c0dba7f8c80eeb3081def5fcac4f984039baf09c72f77f1524f1b6c199ba05ac",
]


def independent(seq: int, prev: bytes, payload: bytes) -> bytes:
    """The formula as the README states it, written without the ledger's code."""
    h = hashlib.sha256()
    h.update(bytes([0]))
    h.update(seq.to_bytes(8, byteorder="big", signed=False))
    h.update(prev)
    h.update(payload)
    return h.digest()


def test_vectors_match_hard_coded_and_independent_computation() -> None:
    prev = bytes(32)
    for seq, (payload, expected) in enumerate(zip(PAYLOADS, VECTORS, strict=True)):
        mine = independent(seq, prev, payload)
        assert mine.hex() == expected
        assert chain.entry_hash(seq, prev, payload) == mine
        prev = mine


def test_genesis_is_32_zero_bytes() -> None:
    assert chain.GENESIS == b"\x00" * 32
    assert chain.HASH_LEN == 32


def test_extend_chains_each_hash_to_the_one_before() -> None:
    hashes = list(chain.extend(0, chain.GENESIS, PAYLOADS))
    assert [h.hex() for h in hashes] == VECTORS
    # resuming mid-chain gives the same tail
    assert list(chain.extend(1, hashes[0], PAYLOADS[1:])) == hashes[1:]


def test_entry_hash_is_an_rfc9162_leaf_hash() -> None:
    """MTH of one leaf d is SHA-256(0x00 || d): the entry hashes are the Merkle leaves."""
    leaf_input = (7).to_bytes(8, "big") + bytes(range(32)) + b"payload"
    assert (
        chain.entry_hash(7, bytes(range(32)), b"payload")
        == hashlib.sha256(b"\x00" + leaf_input).digest()
    )


def test_seq_position_and_predecessor_all_change_the_hash() -> None:
    base = chain.entry_hash(5, chain.GENESIS, b"x")
    assert chain.entry_hash(6, chain.GENESIS, b"x") != base
    assert chain.entry_hash(5, b"\x01" * 32, b"x") != base
    assert chain.entry_hash(5, chain.GENESIS, b"y") != base


@pytest.mark.parametrize(
    ("seq", "prev"), [(-1, chain.GENESIS), (0, b"\x00" * 31), (0, b"\x00" * 33)]
)
def test_entry_hash_rejects_bad_arguments(seq: int, prev: bytes) -> None:
    with pytest.raises(ValueError):
        chain.entry_hash(seq, prev, b"x")
