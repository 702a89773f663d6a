"""RFC 9162 Merkle tree: published vectors, a literal brute-force reference, verification."""

from __future__ import annotations

import random
from functools import cache
from hashlib import sha256

import pytest

from ledger.tlog import merkle
from ledger.tlog.merkle import ProofError

# RFC 6962 test data as published by transparency-dev/merkle (testonly/constants.go,
# proof/verify_test.go), also used by certificate-transparency-go.
LEAF_INPUTS = [
    bytes.fromhex(h)
    for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
              "606162636465666768696a6b6c6d6e6f"]
]  # fmt: skip
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
# (leaf index, tree size, audit path)
INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (0, 1, []),
]  # fmt: skip
# (old size, new size, proof)
CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]  # fmt: skip

LEAVES = [merkle.leaf_hash(x) for x in LEAF_INPUTS]


def hexes(hs: list[bytes]) -> list[str]:
    return [h.hex() for h in hs]


# -- a literal transcription of RFC 9162 2.1.1, 2.1.3.1, 2.1.4.1 ---------------------------------


def reference(leaves: list[bytes]):  # type: ignore[no-untyped-def]
    @cache
    def mth(lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 0:
            return sha256(b"").digest()
        if n == 1:
            return leaves[lo]
        k = 1
        while k * 2 < n:
            k *= 2
        return sha256(b"\x01" + mth(lo, lo + k) + mth(lo + k, hi)).digest()

    def path(m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = 1
        while k * 2 < n:
            k *= 2
        if m < k:
            return [*path(m, lo, lo + k), mth(lo + k, hi)]
        return [*path(m - k, lo + k, hi), mth(lo, lo + k)]

    def subproof(m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if b else [mth(lo, hi)]
        k = 1
        while k * 2 < n:
            k *= 2
        if m <= k:
            return [*subproof(m, lo, lo + k, b), mth(lo + k, hi)]
        return [*subproof(m - k, lo + k, hi, False), mth(lo, lo + k)]

    return mth, path, subproof


# -- published vectors ----------------------------------------------------------------------------


def test_roots_of_the_published_vectors() -> None:
    assert merkle.root([]).hex() == EMPTY == merkle.EMPTY_ROOT.hex()
    for n in range(1, 9):
        assert merkle.root(LEAVES[:n]).hex() == ROOTS[n - 1]


@pytest.mark.parametrize(("index", "size", "want"), INCLUSION)
def test_inclusion_vectors(index: int, size: int, want: list[str]) -> None:
    got = merkle.inclusion_proof(LEAVES, index, size)
    assert hexes(got) == want
    root = bytes.fromhex(ROOTS[size - 1])
    merkle.verify_inclusion(index, size, LEAVES[index], got, root)


@pytest.mark.parametrize(("old", "new", "want"), CONSISTENCY)
def test_consistency_vectors(old: int, new: int, want: list[str]) -> None:
    got = merkle.consistency_proof(LEAVES, old, new)
    assert hexes(got) == want
    r1, r2 = bytes.fromhex(ROOTS[old - 1]), bytes.fromhex(ROOTS[new - 1])
    merkle.verify_consistency(old, new, r1, r2, got)


# -- brute force ----------------------------------------------------------------------------------


def random_leaves(n: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    return [merkle.leaf_hash(rnd.randbytes(rnd.randrange(0, 40))) for _ in range(n)]


SIZES = sorted({1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 255, 256, 257, 300}
               | set(random.Random(7).sample(range(1, 301), 30)))  # fmt: skip


def test_every_inclusion_and_sampled_consistency_match_the_reference() -> None:
    leaves = random_leaves(300, 1)
    rnd = random.Random(2)
    for n in SIZES:
        mth, path, subproof = reference(leaves[:n])
        root = mth(0, n)
        assert merkle.root(leaves[:n]) == root
        for m in range(n):
            proof = merkle.inclusion_proof(leaves, m, n)
            assert proof == path(m, 0, n), (m, n)
            merkle.verify_inclusion(m, n, leaves[m], proof, root)
        for m in {1, n, *rnd.sample(range(1, n + 1), min(n, 12))}:
            proof = merkle.consistency_proof(leaves, m, n)
            assert proof == (subproof(m, 0, n, True) if m < n else []), (m, n)
            merkle.verify_consistency(m, n, mth(0, m), root, proof)


def test_corrupted_inclusion_proofs_fail() -> None:
    leaves = random_leaves(77, 3)
    root = merkle.root(leaves)
    for m in (0, 5, 40, 64, 76):
        proof = merkle.inclusion_proof(leaves, m, 77)
        bad_cases = [
            (m + 1, 77, leaves[m], proof, root),
            (m, 154, leaves[m], proof, root),
            (m, 38, leaves[m], proof, root),
            (m, 77, leaves[(m + 1) % 77], proof, root),
            (m, 77, leaves[m], proof, merkle.EMPTY_ROOT),
            (m, 77, leaves[m], [*proof, root], root),
            (m, 77, leaves[m], [root, *proof], root),
            (m, 77, leaves[m], proof[:-1], root),
        ]
        for i in range(len(proof)):
            flipped = list(proof)
            flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
            bad_cases.append((m, 77, leaves[m], flipped, root))
        for case in bad_cases:
            with pytest.raises(ProofError):
                merkle.verify_inclusion(*case)


def test_corrupted_consistency_proofs_fail() -> None:
    leaves = random_leaves(50, 4)
    for old, new in ((3, 50), (16, 50), (31, 32), (7, 8)):
        r1, r2 = merkle.root(leaves[:old]), merkle.root(leaves[:new])
        proof = merkle.consistency_proof(leaves, old, new)
        merkle.verify_consistency(old, new, r1, r2, proof)
        bad_cases = [
            (old - 1, new, r1, r2, proof),
            (old + 1, new, r1, r2, proof),
            (old, new * 2, r1, r2, proof),
            (old, new, r2, r1, proof),
            (old, new, r1, r2, []),
            (old, new, r1, r2, [*proof, r1]),
            (old, new, r1, r2, [r2, *proof]),
            (old, new, r1, r2, proof[:-1]),
            (new, old, r2, r1, proof),
        ]
        for i in range(len(proof)):
            flipped = list(proof)
            flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
            bad_cases.append((old, new, r1, r2, flipped))
        for case in bad_cases:
            with pytest.raises(ProofError):
                merkle.verify_consistency(*case)


def test_trivial_consistency_cases() -> None:
    r = merkle.root(LEAVES[:3])
    merkle.verify_consistency(0, 3, merkle.EMPTY_ROOT, r, [])
    merkle.verify_consistency(3, 3, r, r, [])
    with pytest.raises(ProofError, match="different roots"):
        merkle.verify_consistency(3, 3, r, merkle.EMPTY_ROOT, [])
    with pytest.raises(ProofError, match="went down"):
        merkle.verify_consistency(4, 3, r, r, [])
    with pytest.raises(ProofError, match=r"outside|not inside"):
        merkle.verify_inclusion(3, 3, LEAVES[0], [], r)


def test_incremental_appends_match_the_whole_tree() -> None:
    leaves = random_leaves(300, 5)
    rnd = random.Random(6)
    size, frontier, nodes = 0, [], []
    while size < len(leaves):
        step = rnd.randint(1, 37)
        size, frontier, done = merkle.append_leaves(size, frontier, leaves[size : size + step], 2)
        nodes += done
        assert merkle.fold(frontier) == merkle.root(leaves[:size])
    tree = merkle.levels(leaves)
    want = {(k, i): tree[k][i] for k in range(2, len(tree)) for i in range(len(tree[k]))}
    assert {(k, i): h for k, i, h in nodes} == want
    with pytest.raises(ValueError, match="frontier"):
        merkle.append_leaves(5, frontier, [])


def test_decompose_and_plans() -> None:
    assert merkle.decompose(0, 13) == [(3, 0), (2, 2), (0, 12)]
    assert merkle.root_plan(0) == []
    with pytest.raises(ValueError, match="not a subtree"):
        merkle.decompose(1, 5)
    with pytest.raises(ValueError):
        merkle.inclusion_plan(5, 5)
    with pytest.raises(ValueError):
        merkle.consistency_plan(6, 5)
