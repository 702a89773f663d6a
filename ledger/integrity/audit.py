"""The ledger against its checkpoints: numbering, signatures, keys, origins, sizes, roots, and
the stored Merkle state.

Called by `verify` once the entries themselves are verified. The rules, in the order checked:

- numbering: the `checkpoints` rows are #1, #2, … #k with no gap and no repeat; a gap is a
  signed checkpoint deleted (deleting one and renumbering the rest leaves no gap: only a
  checkpoint kept elsewhere, given with `--checkpoint`, shows that one is missing);
- a checkpoint given by the auditor (`--checkpoint`) verifies with the trusted keys (else the
  keys stored in the ledger), is for this ledger's origin, no larger than the ledger
  (truncation), has the recomputed root at its size (fork), and is among the stored ones;
- every stored checkpoint: no larger than the ledger (truncation); its note carries a valid
  signature by every key stored beside it and by any trusted key it names (C2SP signed-note,
  "Signatures"); its body is well formed, a size-0 one with the empty-tree root
  (`merkle.empty_root_error`); its columns agree with its note; its origin is the ledger's
  (C2SP tlog-checkpoint: one log, one origin); sizes never go down in signing order (replay);
  its root equals the root recomputed from the entry hashes at its size (fork);
- with trusted keys (`--public-key`, repeatable): something is signed (a stored or given
  checkpoint), and every stored checkpoint is accepted by this walk from the latest back to
  the first: one signed by a trusted key is accepted, and its co-signers become accepted
  for the checkpoints before it; one signed only by accepted keys is accepted likewise; any
  other fails, naming its keys by name and key hash.

What the trust walk proves, for a verifier holding only a new key after a handover (the
checkpoint signed by the old and the new key together): every checkpoint up to the latest one
a trusted key signed has the root recomputed from the entries, so its (size, root) is a prefix
of the tree the trusted key signed (RFC 9162 section 2.1.4: the same leaves give the same
subtree roots); the history is therefore vouched for by the trusted key's signature. The old
key's own signatures are checked only against the verifier keys the ledger file holds, and the
link through the handover only shows that the file's record of who signed is coherent: they
add no assurance of their own (signatures on one note do not sign each other). Nothing after
the latest checkpoint a trusted key signed is vouched for by it: those entries are verified as
a chain, and checkpoints signed only by keys not linked to a trusted key fail.

`treestore.audit` recomputes the whole tree once, whatever the number of checkpoints (~0.7 s
per million entries).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger.errors import ConfigError, VerificationError
from ledger.integrity.checkpoint import load_verifiers
from ledger.store import Store, treestore
from ledger.store.checkpoints import Stored, ledger_origin, stored
from ledger.tlog import merkle
from ledger.tlog.note import Checkpoint, Verifier, note_signers, open_checkpoint

__all__ = ["CheckpointReport", "Integrity", "KeyReport", "audit_ledger"]


@dataclass(frozen=True, slots=True)
class KeyReport:
    """A key whose signature on a checkpoint verified: its name, C2SP key ID (hex) and whether
    it is one of the trusted keys (None when none were given)."""

    name: str
    key_hash: str
    trusted: bool | None

    @property
    def id(self) -> str:
        return f"{self.name}+{self.key_hash}"


@dataclass(slots=True)
class CheckpointReport:
    """One stored checkpoint as `verify` saw it: who signed it, and why it is accepted."""

    n: int
    size: int
    root: str
    origin: str
    signed_by: list[KeyReport]
    accepted: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "size": self.size,
            "root": self.root,
            "origin": self.origin,
            "signed_by": [
                {"name": k.name, "key_hash": k.key_hash, "key_id": k.id, "trusted": k.trusted}
                for k in self.signed_by
            ],
            "accepted": self.accepted,
        }


@dataclass(slots=True)
class Integrity:
    """What `verify` learns from the Merkle tree and the checkpoints.

    `root` is always the root recomputed from the (verified) entry hashes of seq
    0..`root_size`-1, also when a check fails; `origin` is the ledger's; `trusted` names the
    trusted keys given; `details` has one report per stored checkpoint checked."""

    root: bytes
    checkpoints: int
    problem: str | None = None
    bad_seq: int | None = None
    origin: str = ""
    root_size: int = 0
    trusted: list[str] = field(default_factory=list)
    details: list[CheckpointReport] = field(default_factory=list)


def _numbering(history: list[Stored]) -> str | None:
    """Checkpoints must be numbered #1..#k in signing order: a gap is a deleted checkpoint."""
    for expected, row in enumerate(history, 1):
        if row.n == expected:
            continue
        if expected > 1 and row.n == history[expected - 2].n:
            return f"checkpoint #{row.n} appears more than once in the checkpoints table"
        if row.n > expected:
            after = f" (the numbering jumps from #{expected - 1} to #{row.n})"
            if expected == 1:
                after = f" (the first is #{row.n})"
            return (
                f"checkpoint #{expected} is missing from the checkpoints table{after}: "
                "a signed checkpoint was deleted"
            )
        return f"checkpoint numbers must count #1, #2, … in signing order; found #{row.n}"
    return None


def _stored_keys(row: Stored) -> list[Verifier]:
    keys = [Verifier.parse(text) for text in row.vkeys]
    if not keys:
        raise VerificationError("no verifier key is stored beside it")
    return keys


def _open_stored(row: Stored, trusted: Sequence[Verifier]) -> Checkpoint:
    """The stored note opened with its stored keys, every one of which must have signed it;
    and, when it names a trusted key, with that key too (C2SP: a known key must verify)."""
    keys = _stored_keys(row)
    cp = open_checkpoint(row.note, keys)
    missing = {k.id for k in keys} - {v.id for v in cp.signers}
    if missing:
        raise VerificationError(
            f"its note has no signature by {', '.join(sorted(missing))}, stored as its signer"
        )
    named = set(note_signers(row.note))
    extra = [v for v in trusted if (v.name, v.hash) in named and v.id not in {k.id for k in keys}]
    if extra:
        more = open_checkpoint(row.note, extra)
        cp = Checkpoint(cp.origin, cp.size, cp.root, cp.note, cp.signers + more.signers)
    return cp


def _external(
    history: list[Stored], note: str, trusted: Sequence[Verifier]
) -> tuple[Checkpoint | None, str | None]:
    """The auditor's checkpoint opened with the trusted keys, else with every stored key."""
    known: list[Verifier] = list(trusted)
    if not known:
        seen: dict[str, Verifier] = {}
        for row in history:
            for text in row.vkeys:
                try:
                    v = Verifier.parse(text)
                except VerificationError:
                    continue
                seen.setdefault(v.text, v)
        known = list(seen.values())
    if not known:
        return None, "no key to check the given checkpoint with: pass --public-key"
    try:
        return open_checkpoint(note, known), None
    except (VerificationError, ConfigError) as exc:
        return None, f"the given checkpoint does not verify: {exc}"


def _trust_walk(
    history: list[Stored], signed: list[Checkpoint], trusted: Sequence[Verifier]
) -> tuple[list[str], str | None]:
    """How each stored checkpoint is accepted by the trusted keys (see the module docstring),
    or the first one (in signing order) that is not, and why."""
    trusted_ids = {v.id for v in trusted}
    accepted: dict[str, int | None] = dict.fromkeys(trusted_ids)  # key id -> linked at #n
    how: list[str] = [""] * len(history)
    for i in reversed(range(len(history))):
        ids = [v.id for v in signed[i].signers]
        if any(k in trusted_ids for k in ids):
            how[i] = "signed by a trusted key"
        else:
            links = sorted(n for k in ids if (n := accepted.get(k)) is not None)
            if not links:
                continue
            how[i] = f"signed by a key that co-signed checkpoint #{links[0]} with a trusted key"
        for k in ids:
            accepted.setdefault(k, history[i].n)
    for i, row in enumerate(history):
        if not how[i]:
            keys = ", ".join(v.id for v in signed[i].signers)
            return how, (
                f"checkpoint #{row.n} (size {row.size}) is signed only by {keys}: not a trusted "
                "key, nor one that co-signed a later checkpoint with a trusted key (if it is "
                "the log's key, add its verifier key with --public-key)"
            )
    return how, None


def audit_ledger(
    store: Store,
    size: int,
    checks: list[str],
    external_note: str | None = None,
    public_key: str | None = None,
    *,
    public_keys: Sequence[str] = (),
    origin: str | None = None,
) -> Integrity:
    """Check the stored Merkle tree and every checkpoint against the (already verified) entries
    (see the module docstring for the rules), and an `external_note` kept by the auditor.

    `public_keys` (and `public_key`, one more) are the trusted keys, as files or key texts;
    `origin`, if given, is the origin the auditor expects this ledger to have."""
    con = store.con
    history = stored(con)
    mine = ledger_origin(store)
    result = Integrity(merkle.EMPTY_ROOT, len(history), origin=mine, root_size=size)
    recomputed: treestore.Audit | None = None
    external: Checkpoint | None = None

    def recompute() -> treestore.Audit:
        nonlocal recomputed
        if recomputed is None:
            sizes = {row.size for row in history} | ({external.size} if external else set())
            recomputed = treestore.audit(con, size, sizes)
            result.root = recomputed.roots.get(size, merkle.EMPTY_ROOT)
        return recomputed

    def fail(reason: str, bad_seq: int | None) -> Integrity:
        result.problem, result.bad_seq = reason, bad_seq
        recompute()  # a failed verify still reports the root of what it verified
        return result

    trusted = load_verifiers([*public_keys, *([public_key] if public_key else [])])
    result.trusted = [v.id for v in trusted]
    checks.append("checkpoint numbering")
    if origin is not None and origin != mine:
        return fail(f"this ledger's origin is {mine!r}, not the expected {origin!r}", None)
    if problem := _numbering(history):
        return fail(problem, None)
    if external_note is not None:
        checks.append("given checkpoint")
        external, why = _external(history, external_note, trusted)
        if why:
            return fail(why, None)
        assert external is not None
        if external.origin != mine:
            return fail(
                f"the given checkpoint is for the log {external.origin!r}; "
                f"this ledger's origin is {mine!r}",
                None,
            )
        if external.size > size:
            return fail(
                f"the given checkpoint covers {external.size} entries but the ledger holds "
                f"{size}: entries from seq {size} on were removed (truncated or rolled back)",
                size,
            )
    if trusted:
        checks.append("trusted keys")
        if not history and external is None:
            return fail(
                "no checkpoint is stored (and none was given): nothing is signed, so the "
                "trusted key vouches for nothing (sign one with `ledger checkpoint`)",
                None,
            )
    checks += ["checkpoint signatures", "checkpoint sizes", "checkpoint origins"]
    checks += ["Merkle roots", "Merkle state"]
    previous: Stored | None = None
    signed: list[Checkpoint] = []
    for row in history:
        where = f"checkpoint #{row.n} (size {row.size})"
        if row.size > size:
            return fail(
                f"{where} covers more than the ledger's {size} entries: entries from seq "
                f"{size} on were removed (truncation)",
                size,
            )
        try:
            cp = _open_stored(row, trusted)
        except (VerificationError, ConfigError) as exc:
            return fail(f"{where}: {exc}", None)
        if (cp.origin, cp.size, cp.root) != (row.origin, row.size, row.root):
            return fail(f"{where}: the table's columns disagree with its signed note", None)
        if cp.origin != mine:
            return fail(f"{where} is for the log {cp.origin!r}; this ledger's is {mine!r}", None)
        if previous is not None and row.size < previous.size:
            return fail(
                f"{where} is smaller than the earlier checkpoint #{previous.n} "
                f"(size {previous.size}): an old checkpoint was replayed as new",
                row.size,
            )
        previous = row
        signed.append(cp)
    trusted_ids = {v.id for v in trusted}
    how = ["signed by the key(s) stored beside it (no trusted key given)"] * len(history)
    if trusted:
        how, problem = _trust_walk(history, signed, trusted)
        if problem:
            result.details = _details(history, signed, how, trusted_ids, bool(trusted))
            return fail(problem, None)
    result.details = _details(history, signed, how, trusted_ids, bool(trusted))
    audit = recompute()
    if external is not None:
        if audit.roots[external.size] != external.root:
            return fail(
                f"the ledger forked from the given checkpoint: its Merkle root at size "
                f"{external.size} differs, so entries before seq {external.size} were rewritten",
                None,
            )
        if not any((r.size, r.root) == (external.size, external.root) for r in history):
            return fail(
                f"the given checkpoint (size {external.size}) is not among the ledger's stored "
                "checkpoints: a signed checkpoint was deleted from the checkpoints table",
                None,
            )
    good = 0
    for row in sorted(history, key=lambda r: r.size):
        if audit.roots[row.size] != row.root:
            return fail(
                f"checkpoint #{row.n} (size {row.size}) does not match the ledger: its Merkle "
                f"root differs, so entries in seq {good}..{row.size - 1} were rewritten (fork)",
                good,
            )
        good = row.size
    if audit.problem:
        return fail(audit.problem, audit.bad_seq)
    return result


def _details(
    history: list[Stored],
    signed: list[Checkpoint],
    how: list[str],
    trusted_ids: set[str],
    pinned: bool,
) -> list[CheckpointReport]:
    out = []
    for row, cp, accepted in zip(history, signed, how, strict=False):
        keys = [
            KeyReport(v.name, v.hash.hex(), (v.id in trusted_ids) if pinned else None)
            for v in cp.signers
        ]
        verdict = accepted or "not accepted by the trusted keys"
        out.append(CheckpointReport(row.n, row.size, row.root.hex(), row.origin, keys, verdict))
    return out
