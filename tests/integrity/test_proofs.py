"""Proof bundles built from a Store check out with an independent verifier."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.errors import ConfigError, NotFoundError, VerificationError
from ledger.integrity import checkpoint as ckpt
from ledger.integrity import proofcheck, proofs
from ledger.store import Store, checkpoints
from ledger.tlog import merkle
from ledger.tlog import note as signed_note
from ledger.tlog.note import Signer
from tests.store.test_treestore import incoming, leaves

INCLUSION_KEYS = {"event_id", "seq", "payload_b64", "prev_hash", "leaf_hash", "tree_size",
                  "audit_path", "root_hash", "checkpoint", "public_key"}  # fmt: skip


@pytest.fixture
def signer() -> Signer:
    return Signer.generate("example.org/keys")


@pytest.fixture
def store(db_path: Path, signer: Signer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """40 entries, checkpoints at 25 and 40; the ledger's origin is example.org/ledger."""
    monkeypatch.setenv("LEDGER_ORIGIN", "example.org/ledger")
    events = incoming(45)
    s = Store.open(db_path)
    s.append(events[:25])
    ckpt.create(s, signer, "example.org/ledger")
    s.append(events[25:40])
    ckpt.create(s, signer, "example.org/ledger")
    s.events = events  # type: ignore[attr-defined]
    yield s
    s.close()


def test_inclusion_bundle_against_the_latest_covering_checkpoint(
    store: Store, signer: Signer
) -> None:
    ev = store.events[7]  # type: ignore[attr-defined]
    b = proofs.inclusion_bundle(store, ev.event_id)
    assert set(b) == INCLUSION_KEYS
    assert (b["seq"], b["tree_size"], b["public_key"]) == (7, 40, signer.verifier.text)
    assert base64.b64decode(b["payload_b64"]) == ev.payload
    all_leaves = leaves(store)
    assert b["leaf_hash"] == all_leaves[7].hex()
    assert b["root_hash"] == merkle.root(all_leaves).hex()
    path = [bytes.fromhex(h) for h in b["audit_path"]]
    merkle.verify_inclusion(7, 40, all_leaves[7], path, bytes.fromhex(b["root_hash"]))
    assert signed_note.open_checkpoint(b["checkpoint"], signer.verifier).size == 40
    result = proofcheck.check_bundle(b, signer.verifier.text)
    assert result.kind == "inclusion" and result.pinned


def test_inclusion_bundle_against_a_given_checkpoint(store: Store, signer: Signer) -> None:
    note25 = checkpoints.stored(store.con)[0].note
    b = proofs.inclusion_bundle(store, store.events[3].event_id, checkpoint_note=note25)  # type: ignore[attr-defined]
    assert (b["tree_size"], b["checkpoint"]) == (25, note25)
    proofcheck.check_bundle(b, signer.verifier.text)
    with pytest.raises(NotFoundError, match=r"covers 25 entries; event .* is seq 30"):
        proofs.inclusion_bundle(store, store.events[30].event_id, checkpoint_note=note25)  # type: ignore[attr-defined]
    stranger = Signer.generate()
    with pytest.raises(VerificationError, match="not signed by"):
        proofs.inclusion_bundle(
            store,
            store.events[3].event_id,
            checkpoint_note=note25,
            public_key=stranger.verifier,  # type: ignore[attr-defined]
        )


def test_no_covering_checkpoint_is_required_or_signed(store: Store, signer: Signer) -> None:
    events = store.events  # type: ignore[attr-defined]
    store.append(events[40:45])
    with pytest.raises(NotFoundError, match=r"no checkpoint covers seq 42 \(the latest covers 40"):
        proofs.inclusion_bundle(store, events[42].event_id)
    with pytest.raises(ConfigError, match=r"origin is 'example\.org/ledger'"):
        proofs.inclusion_bundle(store, events[42].event_id, signer=signer, origin="example.org/x")
    b = proofs.inclusion_bundle(store, events[42].event_id, signer=signer)
    assert b["tree_size"] == 45
    assert [r.size for r in checkpoints.stored(store.con)] == [25, 40, 45]
    proofcheck.check_bundle(b, signer.verifier.text)
    with pytest.raises(NotFoundError, match="no event 'nope'"):
        proofs.inclusion_bundle(store, "nope")


def test_consistency_bundle(store: Store, signer: Signer) -> None:
    b = proofs.consistency_bundle(store, 25)
    assert (b["old_size"], b["new_size"]) == (25, 40)
    all_leaves = leaves(store)
    assert b["proof"] == [h.hex() for h in merkle.consistency_proof(all_leaves, 25, 40)]
    assert b["old_root"] == merkle.root(all_leaves[:25]).hex()
    merkle.verify_consistency(
        25,
        40,
        merkle.root(all_leaves[:25]),
        merkle.root(all_leaves),
        [bytes.fromhex(h) for h in b["proof"]],
    )
    assert proofcheck.check_bundle(b, signer.verifier.text).kind == "consistency"
    assert proofs.consistency_bundle(store, 25, 25)["proof"] == []
    with pytest.raises(ConfigError, match="smaller"):
        proofs.consistency_bundle(store, 40, 25)


@pytest.mark.parametrize(
    ("old", "new", "signed"),
    [
        (0, None, {"new"}),  # from the empty tree to the latest checkpoint
        (0, 0, set()),  # nothing signed: refused
        (0, 25, {"new"}),
        (7, None, {"new"}),  # OLD need not be a checkpointed size
        (25, None, {"old", "new"}),
        (25, 25, {"old", "new"}),  # equal sizes: empty proof, same root
        (40, 40, {"old", "new"}),
        (13, 31, set()),  # neither side checkpointed: refused
        (25, 33, {"old"}),  # NEW need not be one either, if OLD is
        (1, 40, {"new"}),
    ],
)
def test_consistency_between_any_sizes(
    store: Store, signer: Signer, old: int, new: int | None, signed: set[str]
) -> None:
    if not signed:
        with pytest.raises(NotFoundError, match="nothing in the proof would be signed"):
            proofs.consistency_bundle(store, old, new)
        return
    b = proofs.consistency_bundle(store, old, new)
    all_leaves = leaves(store)
    size = 40 if new is None else new
    assert (b["old_size"], b["new_size"]) == (old, size)
    assert b["old_root"] == merkle.root(all_leaves[:old]).hex()
    assert b["new_root"] == merkle.root(all_leaves[:size]).hex()
    assert b["proof"] == [h.hex() for h in merkle.consistency_proof(all_leaves, old, size)]
    for side in ("old", "new"):
        assert (b[f"{side}_checkpoint"] is not None) == (side in signed)
    result = proofcheck.check_bundle(b, signer.verifier.text, origin="example.org/ledger")
    assert result.summary.startswith(f"example.org/ledger grew from {old} to {size} entries")
    # an unsigned side is named as such, unless its size is 0 (its root is SHA-256("") anyway)
    remark = any(side not in signed and n for side, n in (("old", old), ("new", size)))
    assert ("is not signed" in result.summary) == remark


def test_consistency_sizes_the_ledger_never_had(store: Store) -> None:
    with pytest.raises(NotFoundError, match="it never had a tree of size 41"):
        proofs.consistency_bundle(store, 25, 41)
    with pytest.raises(ConfigError, match="smaller than the old size 41"):
        proofs.consistency_bundle(store, 41)


def test_consistency_with_trusted_keys_uses_only_their_checkpoints(
    store: Store, signer: Signer
) -> None:
    new = Signer.generate("example.org/keys-2")
    store.append(store.events[40:43])  # type: ignore[attr-defined]
    ckpt.create(store, [signer, new])  # the handover, at 43
    store.append(store.events[43:45])  # type: ignore[attr-defined]
    ckpt.create(store, new)  # 45, new key alone
    b = proofs.consistency_bundle(store, 25, public_keys=[signer.verifier])
    assert b["new_size"] == 43  # the latest the old key signed
    assert b["public_key"] == signer.verifier.text
    b = proofs.consistency_bundle(store, 43)
    assert b["new_size"] == 45
    assert b["public_key"] == [signer.verifier.text, new.verifier.text]  # both sides' keys
    result = proofcheck.check_bundle(b, [new.verifier.text])
    assert result.signers == (new.verifier.id,)
    with pytest.raises(NotFoundError, match="signed by the given key of size 25 or 45"):
        proofs.consistency_bundle(store, 25, 45, public_keys=[Signer.generate().verifier])


def test_inclusion_with_trusted_keys_picks_a_checkpoint_they_signed(
    store: Store, signer: Signer
) -> None:
    new = Signer.generate("example.org/keys-2")
    store.append(store.events[40:45])  # type: ignore[attr-defined]
    ckpt.create(store, [signer, new])
    event_id = store.events[3].event_id  # type: ignore[attr-defined]
    b = proofs.inclusion_bundle(store, event_id, public_keys=[new.verifier])
    assert (b["tree_size"], b["public_key"]) == (45, new.verifier.text)
    assert proofcheck.check_bundle(b, new.verifier.text).signers == (new.verifier.id,)
    b = proofs.inclusion_bundle(store, event_id)
    assert b["public_key"] == [signer.verifier.text, new.verifier.text]
    proofcheck.check_bundle(b, [new.verifier.text])  # either key suffices
    proofcheck.check_bundle(b, [signer.verifier.text])


def test_a_rewritten_ledger_gets_no_proof(store: Store) -> None:
    store.con.execute("UPDATE merkle_head SET root = ?", [bytes(32)])
    store.con.execute(
        "UPDATE merkle_nodes SET hash = ? WHERE node = (SELECT min(node) FROM merkle_nodes)",
        [bytes(32)],
    )
    with pytest.raises(VerificationError, match="root at size 25 differs"):
        proofs.consistency_bundle(store, 25)
