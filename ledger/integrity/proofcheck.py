"""Offline verifier of agent-ledger proof bundles: Python stdlib + `cryptography`, nothing else.

Deliberately self-contained: it imports nothing from the rest of `ledger` and repeats, on
purpose, the few lines of RFC 9162 verification (2.1.3.2 inclusion, 2.1.4.2 consistency) and
of the C2SP signed-note / tlog-checkpoint formats, so an auditor can read all of what is
trusted in one sitting. Any failure raises `ProofCheckError` with what failed and where.

Inclusion bundle: the leaf hash is recomputed as SHA-256(0x00 || u64be(seq) || prev_hash ||
payload); the payload's own event_id (the first string of its Avro body) must be `event_id`;
the audit path must lead from that leaf to `root_hash`; `tree_size` and `root_hash` must be the
checkpoint's; the checkpoint must be signed by a known key. Consistency bundle: the proof shows
the tree of `old_size` (root `old_root`) is a prefix of the tree of `new_size` (`new_root`);
each side that carries a checkpoint (`old_checkpoint`, `new_checkpoint`) must be signed by a
known key and state that size and root, and at least one side must carry one. A side whose
checkpoint is null is a root the ledger computed and nobody signed: the summary says so, and
only a root you hold from elsewhere makes it mean anything.

Known keys: the ones you trust (`pinned`, one or several verifier keys: a log's keys before and
after a rotation), else the bundle's own `public_key` (one key, or a list), which only proves
the bundle agrees with itself. Notes follow C2SP signed-note, "Signatures": signatures by other
keys are ignored, a signature by a known key must verify, and one must. Pin the origin too
(`origin`): a checkpoint of another log signed by a key you trust is then refused. A tree of
size 0 has root SHA-256("") (RFC 6962 section 2.1), whoever signs otherwise.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "CONSISTENCY_KEYS",
    "EMPTY_ROOT",
    "INCLUSION_KEYS",
    "SIG_PREFIX",
    "ProofCheckError",
    "Result",
    "check_bundle",
    "check_consistency",
    "check_consistency_bundle",
    "check_file",
    "check_inclusion",
    "empty_root_error",
    "open_checkpoint",
    "parse_vkey",
    "root_from_inclusion",
]

INCLUSION_KEYS = {"event_id", "seq", "payload_b64", "prev_hash", "leaf_hash", "tree_size",
                  "audit_path", "root_hash", "checkpoint", "public_key"}  # fmt: skip
CONSISTENCY_KEYS = {"old_size", "new_size", "old_root", "new_root", "proof", "old_checkpoint",
                    "new_checkpoint", "public_key"}  # fmt: skip
_HEX32 = re.compile(r"[0-9a-f]{64}")
SIG_PREFIX = "\u2014 "
EMPTY_ROOT = sha256(b"").digest()


class ProofCheckError(Exception):
    """The bundle does not prove what it claims; the message says which check failed."""


@dataclass(frozen=True)
class Result:
    """What a bundle proved: its kind, a one-line summary, whether the keys were pinned, the
    log's origin, and the keys (name+keyhash) whose signatures verified."""

    kind: str
    summary: str
    pinned: bool
    origin: str = ""
    signers: tuple[str, ...] = ()


# -- encodings --------------------------------------------------------------------------------


def _hash(value: Any, field: str) -> bytes:
    if not isinstance(value, str) or not _HEX32.fullmatch(value):
        raise ProofCheckError(f"{field} is not 64 lowercase hex digits")
    return bytes.fromhex(value)


def _b64(text: str, what: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProofCheckError(f"{what} is not valid base64") from exc
    if base64.b64encode(data).decode() != text:
        raise ProofCheckError(f"{what} is not canonical base64")
    return data


def _size(value: Any, field: str) -> int:
    if type(value) is not int or not 0 <= value < 1 << 63:
        raise ProofCheckError(f"{field} is not a non-negative integer")
    return value


# -- C2SP signed note, Ed25519 verifier key, tlog-checkpoint body -------------------------------


def parse_vkey(text: str, field: str = "public_key") -> tuple[str, bytes, bytes]:
    """(name, key hash, public key) of `name+hash8+base64(0x01 || key)`, hash checked."""
    parts = text.split("+", 2)
    if len(parts) != 3 or not parts[0] or any(c.isspace() for c in parts[0]):
        raise ProofCheckError(f"{field} is not a verifier key name+hash+key")
    name, hex_hash, b64 = parts
    raw = _b64(b64, field)
    if len(raw) != 33 or raw[0] != 1:
        raise ProofCheckError(f"{field} is not an Ed25519 key")
    want = sha256(name.encode() + b"\n" + raw[:1] + raw[1:]).digest()[:4]
    if hex_hash != want.hex():
        raise ProofCheckError(f"{field} hash does not match its name and key")
    return name, want, raw[1:]


def empty_root_error(size: int, root: bytes) -> str | None:
    """A tree of size 0 has the root SHA-256("") (RFC 6962 section 2.1: MTH({}) = SHA-256());
    the same rule as `ledger.tlog.merkle.empty_root_error`, repeated here on purpose."""
    if size == 0 and root != EMPTY_ROOT:
        return f'a tree of size 0 has the root SHA-256("") = {EMPTY_ROOT.hex()}, not {root.hex()}'
    return None


def open_checkpoint(
    note: str, vkeys: str | Sequence[str], field: str
) -> tuple[str, int, bytes, list[str]]:
    """(origin, size, root, signers) of a checkpoint note signed by a known key of `vkeys`.

    C2SP signed-note: a signature line whose name and key ID do not both match a known key is
    ignored; one that does must verify; at least one must. C2SP tlog-checkpoint: origin, size
    (decimal, no leading zeros), base64 32-byte root; a size-0 tree has the empty root."""
    known = [parse_vkey(v) for v in ([vkeys] if isinstance(vkeys, str) else vkeys)]
    if not isinstance(note, str) or not note.endswith("\n"):
        raise ProofCheckError(f"{field} is not a signed note ending in a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise ProofCheckError(f"{field} holds control characters")
    split = note.rfind("\n\n")
    if split < 0:
        raise ProofCheckError(f"{field} has no signature block")
    body, sigs = note[: split + 1], note[split + 2 :]
    good: list[str] = []
    for line in sigs.splitlines():
        if not line.startswith(SIG_PREFIX):
            raise ProofCheckError(f"{field} has a malformed signature line")
        signer, _, b64 = line[len(SIG_PREFIX) :].partition(" ")
        raw = _b64(b64, f"{field} signature")
        for name, khash, public in known:
            if (signer, raw[:4]) != (name, khash):
                continue
            try:
                Ed25519PublicKey.from_public_bytes(public).verify(raw[4:], body.encode())
            except InvalidSignature:
                raise ProofCheckError(f"{field} signature by {name} is invalid") from None
            if f"{name}+{khash.hex()}" not in good:
                good.append(f"{name}+{khash.hex()}")
    if not good:
        wanted = ", ".join(f"{name}+{khash.hex()}" for name, khash, _ in known)
        raise ProofCheckError(f"{field} is not signed by {wanted}")
    lines = body.split("\n")
    if len(lines) < 4 or not lines[0] or not lines[1].isdigit() or not lines[1].isascii():
        raise ProofCheckError(f"{field} body is not origin / size / root lines")
    if lines[1] != str(int(lines[1])):
        raise ProofCheckError(f"{field} size has leading zeros")
    root = _b64(lines[2], f"{field} root hash")
    if len(root) != 32:
        raise ProofCheckError(f"{field} root hash is not 32 bytes")
    size = int(lines[1])
    if problem := empty_root_error(size, root):
        raise ProofCheckError(f"{field}: {problem}")
    return lines[0], size, root, good


# -- RFC 9162 2.1.3.2 and 2.1.4.2 ---------------------------------------------------------------


def _node(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right).digest()


def root_from_inclusion(index: int, size: int, leaf: bytes, path: list[bytes]) -> bytes:
    if index >= size:
        raise ProofCheckError(f"seq {index} is not inside a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise ProofCheckError("audit_path is too long")
        if fn & 1 or fn == sn:
            r = _node(p, r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _node(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofCheckError("audit_path is too short")
    return r


def check_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes]
) -> None:
    """RFC 9162 2.1.4.2; a size-0 side must carry the empty-tree root (the proof from the
    empty tree is empty, so nothing else would check it)."""
    if size2 < size1:
        raise ProofCheckError(f"new_size {size2} is smaller than old_size {size1}: a rollback")
    for side, size, root in (("old_root", size1, root1), ("new_root", size2, root2)):
        if problem := empty_root_error(size, root):
            raise ProofCheckError(f"{side}: {problem}")
    if size1 in (size2, 0):
        if proof:
            raise ProofCheckError("proof must be empty for these sizes")
        if size1 == size2 and root1 != root2:
            raise ProofCheckError(f"two different roots for the same size {size1}: a fork")
        return
    if not proof:
        raise ProofCheckError("proof is empty")
    path = [root1, *proof] if size1 & (size1 - 1) == 0 else list(proof)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofCheckError("proof is too long")
        if fn & 1 or fn == sn:
            fr, sr = _node(c, fr), _node(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = _node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofCheckError("proof is too short")
    if fr != root1:
        raise ProofCheckError("proof does not lead to old_root")
    if sr != root2:
        raise ProofCheckError("proof does not lead to new_root")


# -- bundles ------------------------------------------------------------------------------------


def _avro_first_string(payload: bytes) -> str:
    """The first field of the single-object Avro body (0xC3 0x01, 8-byte fingerprint, body)."""
    if payload[:2] != b"\xc3\x01" or len(payload) < 11:
        raise ProofCheckError("payload is not Avro single-object encoded")
    acc, shift, pos = 0, 0, 10
    while pos < len(payload) and shift < 64:
        b = payload[pos]
        acc |= (b & 0x7F) << shift
        pos += 1
        shift += 7
        if not b & 0x80:
            n = (acc >> 1) ^ -(acc & 1)
            if n < 0 or pos + n > len(payload):
                break
            try:
                return payload[pos : pos + n].decode("utf-8")
            except UnicodeDecodeError:
                break
    raise ProofCheckError("payload's event_id field is malformed")


def _origin(got: str, want: str | None, field: str) -> None:
    if want is not None and got != want:
        raise ProofCheckError(f"{field} is for the log {got!r}, not the pinned origin {want!r}")


def check_inclusion(
    b: dict[str, Any], vkeys: str | Sequence[str], origin: str | None = None
) -> tuple[str, str, list[str]]:
    """(summary, origin, signers) of a valid inclusion bundle; else raise."""
    seq = _size(b["seq"], "seq")
    size = _size(b["tree_size"], "tree_size")
    if not isinstance(b["event_id"], str) or not isinstance(b["payload_b64"], str):
        raise ProofCheckError("event_id and payload_b64 must be strings")
    payload = _b64(b["payload_b64"], "payload_b64")
    prev = _hash(b["prev_hash"], "prev_hash")
    leaf = sha256(b"\x00" + seq.to_bytes(8, "big") + prev + payload).digest()
    if leaf != _hash(b["leaf_hash"], "leaf_hash"):
        raise ProofCheckError("leaf_hash is not SHA-256(0x00 || seq || prev_hash || payload)")
    if _avro_first_string(payload) != b["event_id"]:
        raise ProofCheckError("event_id is not the event id inside the payload")
    if not isinstance(b["audit_path"], list):
        raise ProofCheckError("audit_path is not a list")
    path = [_hash(h, f"audit_path[{i}]") for i, h in enumerate(b["audit_path"])]
    root = _hash(b["root_hash"], "root_hash")
    if root_from_inclusion(seq, size, leaf, path) != root:
        raise ProofCheckError(f"audit_path from seq {seq} does not lead to root_hash")
    log, cp_size, cp_root, signers = open_checkpoint(b["checkpoint"], vkeys, "checkpoint")
    _origin(log, origin, "checkpoint")
    if cp_size != size:
        raise ProofCheckError(f"tree_size {size} is not the checkpoint's size {cp_size}")
    if cp_root != root:
        raise ProofCheckError("root_hash is not the checkpoint's root hash")
    return f"event {b['event_id']} (seq {seq}) is in {log} at size {size}", log, signers


def check_consistency_bundle(
    b: dict[str, Any], vkeys: str | Sequence[str], origin: str | None = None
) -> tuple[str, str, list[str]]:
    """(summary, origin, signers) of a valid consistency bundle; else raise. A null
    checkpoint leaves that side's root unsigned (said in the summary); one side must be
    signed."""
    size1, size2 = _size(b["old_size"], "old_size"), _size(b["new_size"], "new_size")
    root1, root2 = _hash(b["old_root"], "old_root"), _hash(b["new_root"], "new_root")
    if not isinstance(b["proof"], list):
        raise ProofCheckError("proof is not a list")
    proof = [_hash(h, f"proof[{i}]") for i, h in enumerate(b["proof"])]
    if b["old_checkpoint"] is None and b["new_checkpoint"] is None:
        raise ProofCheckError(
            "neither old_checkpoint nor new_checkpoint is present: nothing in the bundle is signed"
        )
    logs: list[str] = []
    signers: list[str] = []
    for side, size, root in (("old", size1, root1), ("new", size2, root2)):
        note = b[f"{side}_checkpoint"]
        if note is None:
            continue
        log, s, r, who = open_checkpoint(note, vkeys, f"{side}_checkpoint")
        _origin(log, origin, f"{side}_checkpoint")
        if (s, r) != (size, root):
            raise ProofCheckError(f"{side}_size/{side}_root are not those of {side}_checkpoint")
        logs.append(log)
        signers += [k for k in who if k not in signers]
    if len(set(logs)) > 1:
        raise ProofCheckError(f"checkpoints are from different logs ({logs[0]!r}, {logs[1]!r})")
    check_consistency(size1, size2, root1, root2, proof)
    summary = f"{logs[0]} grew from {size1} to {size2} entries without rewriting any"
    for side, size, root in (("old", size1, root1), ("new", size2, root2)):
        if b[f"{side}_checkpoint"] is None and size:  # size 0: the root is SHA-256("") anyway
            summary += (
                f" (the {side} root {root.hex()} at size {size} is not signed: "
                "compare it with one you hold)"
            )
    return summary, logs[0], signers


def _keys(value: Any, field: str) -> list[str]:
    """One verifier key, or a non-empty list of them, each checked."""
    keys = [value] if isinstance(value, str) else value
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise ProofCheckError(f"{field} is not a verifier key or a list of them")
    keys = [k.strip() for k in keys]
    for k in keys:
        parse_vkey(k, field)
    return keys


def check_bundle(
    bundle: Any, pinned: str | Sequence[str] | None = None, origin: str | None = None
) -> Result:
    """Verify a parsed bundle; `pinned` is the verifier key (or keys) the auditor trusts,
    `origin` the log they expect it to be from."""
    if not isinstance(bundle, dict):
        raise ProofCheckError("bundle is not a JSON object")
    keys = set(bundle)
    kind = "inclusion" if "audit_path" in keys else "consistency"
    want = INCLUSION_KEYS if kind == "inclusion" else CONSISTENCY_KEYS
    if keys != want:
        missing, extra = sorted(want - keys), sorted(keys - want)
        raise ProofCheckError(f"{kind} bundle fields wrong: missing {missing}, unexpected {extra}")
    own = _keys(bundle["public_key"], "public_key")
    known = own
    if pinned is not None:
        known = _keys(pinned if isinstance(pinned, str) else list(pinned), "the pinned key")
        if not set(own) & set(known):
            raise ProofCheckError(
                "the bundle's public_key is not the pinned key"
                if len(known) == 1
                else "none of the bundle's public keys is among the pinned keys"
            )
    check = check_inclusion if kind == "inclusion" else check_consistency_bundle
    summary, log, signers = check(bundle, known, origin)
    return Result(kind, summary, pinned is not None, log, tuple(signers))


def check_file(
    path: str, pinned: str | Sequence[str] | None = None, origin: str | None = None
) -> Result:
    try:
        with open(path, encoding="utf-8") as fh:
            bundle = json.load(fh)
    except OSError as exc:
        raise ProofCheckError(f"cannot read {path}: {exc.strerror}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProofCheckError(f"{path} is not JSON: {exc}") from exc
    return check_bundle(bundle, pinned, origin)
