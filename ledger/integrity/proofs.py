"""Self-contained proof bundles for auditors: an event's inclusion, or the log's consistency.

Bundles are plain JSON (hashes in lowercase hex, bytes in standard base64) that
`ledger.proofcheck` verifies with no database and no network; see that module for the checks.

Inclusion: `event_id, seq, payload_b64, prev_hash, leaf_hash, tree_size, audit_path, root_hash,
checkpoint, public_key`. Consistency: `old_size, new_size, old_root, new_root, proof,
old_checkpoint, new_checkpoint, public_key`.

An inclusion proof is made against a checkpoint that covers the entry: the one given, else the
latest stored one covering it, else (when a signing key is available) a fresh one.
"""

from __future__ import annotations

import base64
from typing import Any

from ledger.errors import ConfigError, NotFoundError, VerificationError
from ledger.integrity.checkpoint import create, default_origin
from ledger.store import Store, treestore
from ledger.store.checkpoints import stored
from ledger.tlog.note import Checkpoint, Signer, Verifier, note_signers, open_checkpoint

__all__ = ["consistency_bundle", "inclusion_bundle"]


def _verifier_for(store: Store, note: str, pinned: Verifier | None) -> Verifier:
    """The key to check `note` with: the pinned one, else a key the ledger recorded for it."""
    if pinned is not None:
        return pinned
    signers = note_signers(note)
    for row in reversed(stored(store.con)):
        v = Verifier.parse(row.vkey)
        if (v.name, v.hash) in signers:
            return v
    raise ConfigError("the checkpoint's signing key is unknown to this ledger: pass --public-key")


def _covering(
    store: Store, seq: int, pinned: Verifier | None
) -> tuple[Checkpoint, Verifier] | None:
    for row in reversed(stored(store.con)):
        if row.size > seq and (pinned is None or row.vkey == pinned.text):
            v = Verifier.parse(row.vkey)
            return open_checkpoint(row.note, v), v
    return None


def _check_root(store: Store, cp: Checkpoint, head: treestore.Head) -> None:
    if cp.size > head.size:
        raise VerificationError(
            f"the checkpoint covers {cp.size} entries but the ledger holds {head.size} "
            f"(entries from seq {head.size} on are missing)"
        )
    if treestore.root_at(store.con, cp.size, head) != cp.root:
        raise VerificationError(
            f"the ledger's Merkle root at size {cp.size} differs from the checkpoint's: "
            f"the ledger was rewritten before seq {cp.size}"
        )


def inclusion_bundle(
    store: Store,
    event_id: str,
    *,
    checkpoint_note: str | None = None,
    public_key: Verifier | None = None,
    signer: Signer | None = None,
    origin: str | None = None,
) -> dict[str, Any]:
    """The inclusion bundle of `event_id`, against a checkpoint that covers it."""
    rows = store.con.execute(
        "SELECT seq, payload, prev_hash, entry_hash FROM entries WHERE event_id = ?", [event_id]
    ).fetchall()
    if not rows:
        raise NotFoundError(f"no event {event_id!r} in the ledger")
    seq, payload, prev_hash, leaf = (
        int(rows[0][0]),
        bytes(rows[0][1]),
        bytes(rows[0][2]),
        bytes(rows[0][3]),
    )
    if checkpoint_note is not None:
        verifier = _verifier_for(store, checkpoint_note, public_key)
        cp = open_checkpoint(checkpoint_note, verifier)
        if cp.size <= seq:
            raise NotFoundError(
                f"the checkpoint covers {cp.size} entries; event {event_id} is seq {seq}"
            )
    else:
        found = _covering(store, seq, public_key)
        if found is None:
            latest = stored(store.con)
            have = f"the latest covers {latest[-1].size} entries" if latest else "there are none"
            if signer is None or store.read_only:
                raise NotFoundError(
                    f"no checkpoint covers seq {seq} ({have}): run `ledger checkpoint` first, "
                    "or pass --key to sign one"
                )
            cp = create(store, signer, origin or default_origin(store.path))
            verifier = signer.verifier
        else:
            cp, verifier = found
    head = treestore.read_head(store.con)
    _check_root(store, cp, head)
    return {
        "event_id": event_id,
        "seq": seq,
        "payload_b64": base64.b64encode(payload).decode("ascii"),
        "prev_hash": prev_hash.hex(),
        "leaf_hash": leaf.hex(),
        "tree_size": cp.size,
        "audit_path": [h.hex() for h in treestore.inclusion_proof(store.con, seq, cp.size, head)],
        "root_hash": cp.root.hex(),
        "checkpoint": cp.note,
        "public_key": verifier.text,
    }


def consistency_bundle(
    store: Store, old_size: int, new_size: int | None = None, public_key: Verifier | None = None
) -> dict[str, Any]:
    """Proof that the stored checkpoint of `old_size` is a prefix of the one of `new_size`
    (default: the latest checkpoint), both signed by the same key."""
    history = [r for r in stored(store.con) if public_key is None or r.vkey == public_key.text]
    if not history:
        raise NotFoundError("no stored checkpoints (run `ledger checkpoint`)")
    new_rows = [r for r in history if new_size is None or r.size == new_size]
    if not new_rows:
        sizes = ", ".join(str(s) for s in sorted({r.size for r in history}))
        raise NotFoundError(f"no stored checkpoint of size {new_size} (sizes: {sizes})")
    new = new_rows[-1]
    old_rows = [r for r in history if r.size == old_size and r.vkey == new.vkey]
    if not old_rows:
        sizes = ", ".join(str(s) for s in sorted({r.size for r in history}))
        raise NotFoundError(f"no stored checkpoint of size {old_size} (sizes: {sizes})")
    old = old_rows[-1]
    if old.size > new.size:
        raise ConfigError(f"--to {new.size} is smaller than the old size {old.size}")
    verifier = Verifier.parse(new.vkey)
    old_cp = open_checkpoint(old.note, verifier)
    new_cp = open_checkpoint(new.note, verifier)
    head = treestore.read_head(store.con)
    _check_root(store, old_cp, head)
    _check_root(store, new_cp, head)
    proof = treestore.consistency_proof(store.con, old_cp.size, new_cp.size, head)
    return {
        "old_size": old_cp.size,
        "new_size": new_cp.size,
        "old_root": old_cp.root.hex(),
        "new_root": new_cp.root.hex(),
        "proof": [h.hex() for h in proof],
        "old_checkpoint": old_cp.note,
        "new_checkpoint": new_cp.note,
        "public_key": verifier.text,
    }
