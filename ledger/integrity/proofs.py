"""Self-contained proof bundles for auditors: an event's inclusion, or the log's consistency.

Bundles are plain JSON (hashes in lowercase hex, bytes in standard base64) that
`ledger.integrity.proofcheck` verifies with no database and no network; see that module for the
checks.

Inclusion: `event_id, seq, payload_b64, prev_hash, leaf_hash, tree_size, audit_path, root_hash,
checkpoint, public_key`. Consistency: `old_size, new_size, old_root, new_root, proof,
old_checkpoint, new_checkpoint, public_key`. `public_key` is the verifier key that signed the
checkpoint(s), or a list of them when several did (a key handover, C2SP signed-note).

An inclusion proof is made against a checkpoint that covers the entry: the one given, else the
latest stored one covering it (signed by a trusted key, if keys are given), else (when a
signing key is available) a fresh one.

A consistency proof (RFC 9162 section 2.1.4) goes from any OLD to any NEW size with
0 <= OLD <= NEW <= the ledger's size: the roots at both sizes come from the stored Merkle
nodes. Nothing unsigned is presented as signed: each side carries the latest stored checkpoint
of exactly its size (signed by a trusted key, if keys are given) or, if there is none, `null`
and the root the ledger computed; NEW defaults to the latest stored checkpoint, and at least
one side must be signed. The verifier checks the proof against the signed side(s) and names
an unsigned root as such.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from ledger.errors import ConfigError, NotFoundError, VerificationError
from ledger.integrity.checkpoint import create
from ledger.store import Store, treestore
from ledger.store.checkpoints import Stored, ledger_origin, stored
from ledger.tlog.note import Checkpoint, Signer, Verifier, note_signers, open_checkpoint

__all__ = ["consistency_bundle", "inclusion_bundle"]


def _trusted(public_key: Verifier | None, public_keys: Sequence[Verifier]) -> list[Verifier]:
    keys = [*([public_key] if public_key else []), *public_keys]
    return list({v.text: v for v in keys}.values())


def _row_keys(row: Stored) -> list[Verifier]:
    return [Verifier.parse(text) for text in row.vkeys]


def _signed_by(row: Stored, trusted: Sequence[Verifier]) -> bool:
    """Whether the stored checkpoint names one of the trusted keys as a signer."""
    named = set(note_signers(row.note))
    return any((v.name, v.hash) in named for v in trusted)


def _open_row(row: Stored, trusted: Sequence[Verifier]) -> Checkpoint:
    """A stored checkpoint opened with the trusted keys, else with the keys stored beside it."""
    return open_checkpoint(row.note, list(trusted) or _row_keys(row))


def _verifier_for(store: Store, note: str, trusted: Sequence[Verifier]) -> list[Verifier]:
    """The keys to check `note` with: the trusted ones, else keys the ledger recorded for it."""
    if trusted:
        return list(trusted)
    signers = set(note_signers(note))
    for row in reversed(stored(store.con)):
        keys = [v for v in _row_keys(row) if (v.name, v.hash) in signers]
        if keys:
            return keys
    raise ConfigError("the checkpoint's signing key is unknown to this ledger: pass --public-key")


def _covering(store: Store, seq: int, trusted: Sequence[Verifier]) -> Checkpoint | None:
    for row in reversed(stored(store.con)):
        if row.size > seq and (not trusted or _signed_by(row, trusted)):
            return _open_row(row, trusted)
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


def _check_origin(store: Store, cp: Checkpoint) -> None:
    mine = ledger_origin(store)
    if cp.origin != mine:
        raise VerificationError(
            f"the checkpoint is for the log {cp.origin!r}; this ledger's origin is {mine!r}"
        )


def _key_field(keys: Sequence[Verifier]) -> str | list[str]:
    """The bundle's `public_key`: one verifier key, or the list of them."""
    texts = list(dict.fromkeys(v.text for v in keys))
    return texts[0] if len(texts) == 1 else texts


def inclusion_bundle(
    store: Store,
    event_id: str,
    *,
    checkpoint_note: str | None = None,
    public_key: Verifier | None = None,
    public_keys: Sequence[Verifier] = (),
    signer: Signer | Sequence[Signer] | None = None,
    origin: str | None = None,
) -> dict[str, Any]:
    """The inclusion bundle of `event_id`, against a checkpoint that covers it.

    `public_key`/`public_keys` are the trusted keys (the checkpoint must be signed by one);
    `signer` (one key or several) signs a fresh checkpoint when none covers the event,
    with `origin` (which must be the ledger's, if given)."""
    trusted = _trusted(public_key, public_keys)
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
        cp = open_checkpoint(checkpoint_note, _verifier_for(store, checkpoint_note, trusted))
        if cp.size <= seq:
            raise NotFoundError(
                f"the checkpoint covers {cp.size} entries; event {event_id} is seq {seq}"
            )
    else:
        found = _covering(store, seq, trusted)
        if found is None:
            latest = stored(store.con)
            have = f"the latest covers {latest[-1].size} entries" if latest else "there are none"
            if signer is None or store.read_only:
                raise NotFoundError(
                    f"no checkpoint covers seq {seq} ({have}): run `ledger checkpoint` first, "
                    "or pass --key to sign one"
                )
            cp = create(store, signer, origin)
        else:
            cp = found
    _check_origin(store, cp)
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
        "public_key": _key_field(cp.signers),
    }


def consistency_bundle(
    store: Store,
    old_size: int,
    new_size: int | None = None,
    public_key: Verifier | None = None,
    *,
    public_keys: Sequence[Verifier] = (),
) -> dict[str, Any]:
    """Proof (RFC 9162 section 2.1.4) that the ledger's tree of `old_size` entries is a prefix
    of its tree of `new_size` (default: the size of the latest stored checkpoint).

    Each side carries the latest stored checkpoint of its size (signed by one of the trusted
    keys `public_key`/`public_keys`, if given), else `null` and the computed root; at least one
    side must be signed (`NotFoundError` otherwise)."""
    trusted = _trusted(public_key, public_keys)
    head = treestore.read_head(store.con)
    history = [r for r in stored(store.con) if not trusted or _signed_by(r, trusted)]
    whose = " signed by the given key" if trusted else ""
    if new_size is None:
        if not history:
            raise NotFoundError(
                f"no stored checkpoint{whose} to prove consistency with: run `ledger "
                "checkpoint`, or give the new size"
            )
        new_size = history[-1].size
    if old_size < 0 or new_size < old_size:
        raise ConfigError(f"the new size {new_size} is smaller than the old size {old_size}")
    if new_size > head.size:
        raise NotFoundError(
            f"the ledger holds {head.size} entries: it never had a tree of size {new_size}"
        )

    def signed_at(size: int) -> Checkpoint | None:
        rows = [r for r in history if r.size == size]
        return _open_row(rows[-1], trusted) if rows else None

    old_cp, new_cp = signed_at(old_size), signed_at(new_size)
    if old_cp is None and new_cp is None:
        sizes = ", ".join(str(s) for s in sorted({r.size for r in history})) or "none"
        raise NotFoundError(
            f"no stored checkpoint{whose} of size {old_size} or {new_size}, so nothing in the "
            f"proof would be signed (checkpointed sizes: {sizes}): leave out the new size, or "
            "sign one with `ledger checkpoint`"
        )
    roots: list[bytes] = []
    keys: list[Verifier] = []
    for size, cp in ((old_size, old_cp), (new_size, new_cp)):
        if cp is None:
            roots.append(treestore.root_at(store.con, size, head))
            continue
        _check_origin(store, cp)
        _check_root(store, cp, head)
        roots.append(cp.root)
        keys += cp.signers
    proof = treestore.consistency_proof(store.con, old_size, new_size, head)
    return {
        "old_size": old_size,
        "new_size": new_size,
        "old_root": roots[0].hex(),
        "new_root": roots[1].hex(),
        "proof": [h.hex() for h in proof],
        "old_checkpoint": old_cp.note if old_cp else None,
        "new_checkpoint": new_cp.note if new_cp else None,
        "public_key": _key_field(keys),
    }
