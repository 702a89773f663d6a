"""Offline verifier of agent-ledger proof bundles: Python stdlib + `cryptography`, nothing else.

Deliberately self-contained: it imports nothing from the rest of `ledger` and repeats, on
purpose, the few lines of RFC 9162 verification (2.1.3.2 inclusion, 2.1.4.2 consistency) and
of the C2SP signed-note / tlog-checkpoint formats, so an auditor can read all of what is
trusted in one sitting. Any failure raises `ProofCheckError` with what failed and where.

Inclusion bundle: the leaf hash is recomputed as SHA-256(0x00 || u64be(seq) || prev_hash ||
payload); the payload's own event_id (the first string of its Avro body) must be `event_id`;
the audit path must lead from that leaf to `root_hash`; `tree_size` and `root_hash` must be the
checkpoint's; the checkpoint must carry a valid Ed25519 signature by the key. Consistency
bundle: both checkpoints valid, same origin, sizes and roots as stated, and the proof shows the
old tree is a prefix of the new one. Pass the key you trust (`pinned`): the key in a bundle only
proves the bundle agrees with itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "CONSISTENCY_KEYS",
    "INCLUSION_KEYS",
    "SIG_PREFIX",
    "ProofCheckError",
    "Result",
    "check_bundle",
    "check_consistency",
    "check_consistency_bundle",
    "check_file",
    "check_inclusion",
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


class ProofCheckError(Exception):
    """The bundle does not prove what it claims; the message says which check failed."""


@dataclass(frozen=True)
class Result:
    kind: str
    summary: str
    pinned: bool


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


def parse_vkey(text: str) -> tuple[str, bytes, bytes]:
    """(name, key hash, public key) of `name+hash8+base64(0x01 || key)`, hash checked."""
    parts = text.split("+", 2)
    if len(parts) != 3 or not parts[0] or any(c.isspace() for c in parts[0]):
        raise ProofCheckError("public_key is not a verifier key name+hash+key")
    name, hex_hash, b64 = parts
    raw = _b64(b64, "public_key")
    if len(raw) != 33 or raw[0] != 1:
        raise ProofCheckError("public_key is not an Ed25519 key")
    want = sha256(name.encode() + b"\n" + raw[:1] + raw[1:]).digest()[:4]
    if hex_hash != want.hex():
        raise ProofCheckError("public_key hash does not match its name and key")
    return name, want, raw[1:]


def open_checkpoint(note: str, vkey: str, field: str) -> tuple[str, int, bytes]:
    """(origin, size, root) of a checkpoint note whose signature by `vkey` is valid."""
    name, khash, public = parse_vkey(vkey)
    if not isinstance(note, str) or not note.endswith("\n"):
        raise ProofCheckError(f"{field} is not a signed note ending in a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise ProofCheckError(f"{field} holds control characters")
    split = note.rfind("\n\n")
    if split < 0:
        raise ProofCheckError(f"{field} has no signature block")
    body, sigs = note[: split + 1], note[split + 2 :]
    good = False
    for line in sigs.splitlines():
        if not line.startswith(SIG_PREFIX):
            raise ProofCheckError(f"{field} has a malformed signature line")
        signer, _, b64 = line[len(SIG_PREFIX) :].partition(" ")
        raw = _b64(b64, f"{field} signature")
        if signer == name and raw[:4] == khash:
            try:
                Ed25519PublicKey.from_public_bytes(public).verify(raw[4:], body.encode())
            except InvalidSignature:
                raise ProofCheckError(f"{field} signature by {name} is invalid") from None
            good = True
    if not good:
        raise ProofCheckError(f"{field} is not signed by {name}+{khash.hex()}")
    lines = body.split("\n")
    if len(lines) < 4 or not lines[0] or not lines[1].isdigit() or not lines[1].isascii():
        raise ProofCheckError(f"{field} body is not origin / size / root lines")
    if lines[1] != str(int(lines[1])):
        raise ProofCheckError(f"{field} size has leading zeros")
    root = _b64(lines[2], f"{field} root hash")
    if len(root) != 32:
        raise ProofCheckError(f"{field} root hash is not 32 bytes")
    return lines[0], int(lines[1]), root


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
    if size2 < size1:
        raise ProofCheckError(f"new_size {size2} is smaller than old_size {size1}: a rollback")
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


def check_inclusion(b: dict[str, Any], vkey: str) -> str:
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
    origin, cp_size, cp_root = open_checkpoint(b["checkpoint"], vkey, "checkpoint")
    if cp_size != size:
        raise ProofCheckError(f"tree_size {size} is not the checkpoint's size {cp_size}")
    if cp_root != root:
        raise ProofCheckError("root_hash is not the checkpoint's root hash")
    return f"event {b['event_id']} (seq {seq}) is in {origin} at size {size}"


def check_consistency_bundle(b: dict[str, Any], vkey: str) -> str:
    size1, size2 = _size(b["old_size"], "old_size"), _size(b["new_size"], "new_size")
    root1, root2 = _hash(b["old_root"], "old_root"), _hash(b["new_root"], "new_root")
    if not isinstance(b["proof"], list):
        raise ProofCheckError("proof is not a list")
    proof = [_hash(h, f"proof[{i}]") for i, h in enumerate(b["proof"])]
    o1, s1, r1 = open_checkpoint(b["old_checkpoint"], vkey, "old_checkpoint")
    o2, s2, r2 = open_checkpoint(b["new_checkpoint"], vkey, "new_checkpoint")
    if (s1, r1) != (size1, root1):
        raise ProofCheckError("old_size/old_root are not those of old_checkpoint")
    if (s2, r2) != (size2, root2):
        raise ProofCheckError("new_size/new_root are not those of new_checkpoint")
    if o1 != o2:
        raise ProofCheckError(f"checkpoints are from different logs ({o1!r}, {o2!r})")
    check_consistency(size1, size2, root1, root2, proof)
    return f"{o2} grew from {size1} to {size2} entries without rewriting any"


def check_bundle(bundle: Any, pinned: str | None = None) -> Result:
    """Verify a parsed bundle; `pinned` is the verifier key the auditor trusts."""
    if not isinstance(bundle, dict):
        raise ProofCheckError("bundle is not a JSON object")
    keys = set(bundle)
    kind = "inclusion" if "audit_path" in keys else "consistency"
    want = INCLUSION_KEYS if kind == "inclusion" else CONSISTENCY_KEYS
    if keys != want:
        missing, extra = sorted(want - keys), sorted(keys - want)
        raise ProofCheckError(f"{kind} bundle fields wrong: missing {missing}, unexpected {extra}")
    if not isinstance(bundle["public_key"], str):
        raise ProofCheckError("public_key is not a string")
    vkey = bundle["public_key"]
    if pinned is not None:
        pinned = pinned.strip()
        parse_vkey(pinned)
        if pinned != vkey:
            raise ProofCheckError("the bundle's public_key is not the pinned key")
    check = check_inclusion if kind == "inclusion" else check_consistency_bundle
    return Result(kind, check(bundle, vkey), pinned is not None)


def check_file(path: str, pinned: str | None = None) -> Result:
    try:
        with open(path, encoding="utf-8") as fh:
            bundle = json.load(fh)
    except OSError as exc:
        raise ProofCheckError(f"cannot read {path}: {exc.strerror}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProofCheckError(f"{path} is not JSON: {exc}") from exc
    return check_bundle(bundle, pinned)
