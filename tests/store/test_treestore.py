"""The Merkle tree persisted in DuckDB agrees with the pure one, append after append."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from ledger.contract.codec import default_codec
from ledger.errors import StoreError
from ledger.store import Incoming, Store, treestore
from ledger.stream.ingest import prepare
from ledger.tlog import merkle
from tests import factories as f


def incoming(n: int, tag: str = "a") -> list[Incoming]:
    codec = default_codec()
    out = []
    for i in range(n):
        item = prepare(json.dumps(f.principal(f"agent:{tag}{i}")).encode(), f"t:{i}", codec)
        assert isinstance(item, Incoming)
        out.append(item)
    return out


def leaves(store: Store) -> list[bytes]:
    rows = store.con.execute("SELECT entry_hash FROM entries ORDER BY seq").fetchall()
    return [bytes(r[0]) for r in rows]


def test_stored_proofs_equal_pure_ones_across_random_batches(db_path: Path) -> None:
    events = incoming(300)
    rnd = random.Random(11)
    with Store.open(db_path) as store:
        i = 0
        while i < len(events):
            step = rnd.choice([1, 1, 2, 3, 7, 16, 17, 40])
            store.append(events[i : i + step])
            i += step
            head = treestore.read_head(store.con)
            assert head.size == store.size()
            assert head.root == merkle.root(leaves(store))
        all_leaves = leaves(store)
        con = store.con
        for size in range(0, 301):
            assert treestore.root_at(con, size) == merkle.root(all_leaves[:size])
        for size in (1, 2, 16, 17, 100, 255, 256, 300):
            indexes = range(size) if size in (17, 300) else rnd.sample(range(size), min(size, 9))
            for index in indexes:
                assert treestore.inclusion_proof(con, index, size) == merkle.inclusion_proof(
                    all_leaves, index, size
                )
        for _ in range(60):
            new = rnd.randint(0, 300)
            old = rnd.randint(0, new)
            assert treestore.consistency_proof(con, old, new) == merkle.consistency_proof(
                all_leaves, old, new
            )
        audit = treestore.audit(con, 300, [17, 200])
        assert audit.problem is None
        assert audit.roots[17] == merkle.root(all_leaves[:17])
        assert audit.roots[300] == merkle.root(all_leaves)
        stored = con.execute("SELECT count(*) FROM merkle_nodes").fetchall()[0][0]
        assert stored == sum(300 >> k for k in range(treestore.MIN_LEVEL, 9))


def test_state_survives_reopen_and_catches_up_on_old_ledgers(db_path: Path) -> None:
    with Store.open(db_path) as store:
        store.append(incoming(50))
        root = treestore.read_head(store.con).root
        # a ledger written before the Merkle extension existed: no tree state at all
        store.con.execute("DELETE FROM merkle_nodes")
        store.con.execute("DELETE FROM merkle_head")
    with Store.open(db_path, read_only=True) as store:
        assert treestore.read_head(store.con).size == 0
    with Store.open(db_path) as store:
        head = treestore.read_head(store.con)
        assert (head.size, head.root) == (50, root)
        store.append(incoming(5, "b"))
        assert treestore.read_head(store.con).root == merkle.root(leaves(store))
        assert treestore.audit(store.con, 55).problem is None


def test_bad_requests_and_missing_state_are_named(db_path: Path) -> None:
    with Store.open(db_path) as store:
        store.append(incoming(40))
        with pytest.raises(StoreError, match="no tree of size 41"):
            treestore.root_at(store.con, 41)
        store.con.execute("DELETE FROM merkle_nodes WHERE node = ?", [treestore.node_key(4, 1)])
        with pytest.raises(StoreError, match=r"level 4, index 1\) is missing"):
            treestore.inclusion_proof(store.con, 3, 40)
        audit = treestore.audit(store.con, 40)
        assert audit.problem == "stored Merkle node (level 4, index 1) is missing"
        assert audit.bad_seq == 16


def test_audit_names_a_tampered_node(db_path: Path) -> None:
    with Store.open(db_path) as store:
        store.append(incoming(70))
        store.con.execute(
            "UPDATE merkle_nodes SET hash = ? WHERE node = ?",
            [bytes(32), treestore.node_key(5, 1)],
        )
        audit = treestore.audit(store.con, 70)
        assert audit.problem is not None
        assert "(level 5, index 1) covering seq 32..63" in audit.problem
        assert audit.bad_seq == 32
        store.con.execute("UPDATE merkle_head SET size = 69")
        assert "covers 69 entries but the ledger holds 70" in str(
            treestore.audit(store.con, 70).problem
        )


def test_append_refuses_a_tree_ahead_of_the_entries(db_path: Path) -> None:
    with Store.open(db_path) as store:
        store.append(incoming(3))
        store.con.execute("UPDATE merkle_head SET size = 9")
        with pytest.raises(StoreError, match="Merkle state covers 9 entries"):
            store.append(incoming(2, "z"))
        assert store.size() == 3
