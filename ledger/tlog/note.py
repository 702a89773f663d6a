"""C2SP signed notes and tlog-checkpoints with Ed25519: keys, signing, opening, the body.

Formats (all text, interoperable with golang.org/x/mod/sumdb/note and C2SP tools; specs:
C2SP `signed-note` and `tlog-checkpoint`):
- verifier key: `<name>+<keyhash hex8>+<base64(0x01 || public key)>`
- private key: `PRIVATE+KEY+<name>+<keyhash hex8>+<base64(0x01 || seed)>`
  where keyhash = SHA-256(name || 0x0A || 0x01 || public key)[:4] and seed is the 32-byte
  Ed25519 private key.
- checkpoint body: `<origin>\\n<size>\\n<base64(root)>\\n`; the signed note is the body, a
  blank line, then `— <name> <base64(keyhash || signature over the body)>\\n` per signature.

A note may carry several signatures (C2SP signed-note, "Format": one or more signature lines),
which is how a log hands over from one key to the next: the checkpoint signed at the handover
carries both the retiring and the new key's signature. Opening a note takes a *set* of known
keys, as the spec's "Signatures" section has it: signatures by other keys are ignored, every
signature by a known key (name and key ID both matching) must verify, and at least one must.

Pure: the standard library and `cryptography`; no file, no database. One signature or one
verification is one Ed25519 operation (tens of microseconds).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from hashlib import sha256

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger.errors import ConfigError, VerificationError
from ledger.tlog.merkle import empty_root_error

__all__ = [
    "ALG_ED25519",
    "DEFAULT_KEY_NAME",
    "MAX_SIGNATURES",
    "SIG_PREFIX",
    "Checkpoint",
    "Signer",
    "Verifier",
    "check_name",
    "check_origin",
    "checkpoint_body",
    "key_hash",
    "key_id",
    "note_signers",
    "open_checkpoint",
    "open_note",
    "parse_body",
    "sign_note",
    "verify_note",
]

ALG_ED25519 = 0x01
SIG_PREFIX = "\u2014 "
DEFAULT_KEY_NAME = "agent-ledger"
#: C2SP signed-note: verifiers SHOULD bound the number of signatures and MUST accept 16.
MAX_SIGNATURES = 64


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    """Strict standard base64: canonical encodings only, so no two texts mean the same bytes."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise VerificationError(f"{what} is not valid base64") from exc
    if _b64(data) != text:
        raise VerificationError(f"{what} is not canonical base64")
    return data


def check_name(name: str) -> str:
    if not name or "+" in name or any(c.isspace() for c in name):
        raise ConfigError(f"key name {name!r} must be non-empty, without spaces or '+'")
    return name


def key_hash(name: str, public: bytes) -> bytes:
    """C2SP signed-note key ID of an Ed25519 key: SHA-256(name || 0x0A || 0x01 || key)[:4]."""
    return sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public).digest()[:4]


def key_id(name: str, khash: bytes) -> str:
    """How a key is named to people: `name+keyhash` (hex), the (name, key ID) pair that C2SP
    signed-note says identifies a key; also the first two fields of its verifier key."""
    return f"{name}+{khash.hex()}"


@dataclass(frozen=True, slots=True)
class Verifier:
    """A C2SP Ed25519 verifier key."""

    name: str
    hash: bytes
    public: bytes

    @property
    def text(self) -> str:
        return f"{self.name}+{self.hash.hex()}+{_b64(bytes([ALG_ED25519]) + self.public)}"

    @property
    def id(self) -> str:
        """`name+keyhash`: the key as messages and reports name it (see `key_id`)."""
        return key_id(self.name, self.hash)

    @classmethod
    def parse(cls, text: str) -> Verifier:
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise VerificationError("verifier key is not of the form name+hash+key")
        name, hex_hash, b64 = parts
        check_name(name)
        raw = _unb64(b64, "verifier key")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise VerificationError("verifier key is not an Ed25519 key (0x01 || 32 bytes)")
        if hex_hash != key_hash(name, raw[1:]).hex():
            raise VerificationError(f"verifier key hash {hex_hash} does not match its name and key")
        return cls(name, bytes.fromhex(hex_hash), raw[1:])

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, slots=True)
class Signer:
    """An Ed25519 signing key with its C2SP name."""

    name: str
    seed: bytes

    @property
    def verifier(self) -> Verifier:
        pub = (
            Ed25519PrivateKey.from_private_bytes(self.seed)
            .public_key()
            .public_bytes(Encoding.Raw, PublicFormat.Raw)
        )
        return Verifier(self.name, key_hash(self.name, pub), pub)

    @property
    def text(self) -> str:
        v = self.verifier
        return f"PRIVATE+KEY+{self.name}+{v.hash.hex()}+{_b64(bytes([ALG_ED25519]) + self.seed)}"

    @classmethod
    def generate(cls, name: str = DEFAULT_KEY_NAME) -> Signer:
        seed = Ed25519PrivateKey.generate().private_bytes_raw()
        return cls(check_name(name), seed)

    @classmethod
    def parse(cls, text: str) -> Signer:
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise ConfigError("private key is not of the form PRIVATE+KEY+name+hash+key")
        name, hex_hash, b64 = parts[2:]
        try:
            raw = _unb64(b64, "private key")
        except VerificationError as exc:
            raise ConfigError(str(exc)) from exc
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise ConfigError("private key is not an Ed25519 key (0x01 || 32-byte seed)")
        signer = cls(check_name(name), raw[1:])
        if signer.verifier.hash.hex() != hex_hash:
            raise ConfigError(f"private key hash {hex_hash} does not match its name and key")
        return signer

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)


# -- signed notes --------------------------------------------------------------------------------


def sign_note(body: str, signers: Signer | Sequence[Signer]) -> str:
    """The C2SP signed note of `body` (which must end in a newline) with one signature line per
    signer, in the order given (C2SP signed-note, "Format" and "Signatures")."""
    if not body.endswith("\n") or "\n\n" in body:
        raise ValueError("note body must end in a newline and hold no blank line")
    keys = [signers] if isinstance(signers, Signer) else list(signers)
    if not keys:
        raise ConfigError("a signed note needs at least one signing key")
    ids = [k.verifier.id for k in keys]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"the same signing key was given twice ({', '.join(ids)})")
    lines = []
    for key in keys:
        sig = key.sign(body.encode())
        lines.append(f"{SIG_PREFIX}{key.name} {_b64(key.verifier.hash + sig)}\n")
    return f"{body}\n{''.join(lines)}"


def _split_note(text: str) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    """(body, [(name, key ID, signature)]) of a signed note; raise if it is malformed."""
    if not text.endswith("\n"):
        raise VerificationError("signed note does not end in a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise VerificationError("signed note holds control characters")
    split = text.rfind("\n\n")
    if split < 0:
        raise VerificationError("signed note has no blank line before its signatures")
    body, sig_block = text[: split + 1], text[split + 2 :]
    if not body.strip():
        raise VerificationError("signed note has an empty body")
    sigs = []
    for line in sig_block.splitlines():
        if not line.startswith(SIG_PREFIX):
            raise VerificationError(f"malformed signature line {line[:40]!r}")
        name, _, b64 = line[len(SIG_PREFIX) :].partition(" ")
        raw = _unb64(b64, f"signature of {name!r}")
        if not name or len(raw) < 5:
            raise VerificationError(f"malformed signature line {line[:40]!r}")
        sigs.append((name, raw[:4], raw[4:]))
    if not sigs:
        raise VerificationError("signed note has no signature lines")
    if len(sigs) > MAX_SIGNATURES:
        raise VerificationError(
            f"signed note has {len(sigs)} signatures (at most {MAX_SIGNATURES})"
        )
    return body, sigs


def verify_note(
    text: str, verifiers: Verifier | Iterable[Verifier]
) -> tuple[str, tuple[Verifier, ...]]:
    """(body, the known keys whose signatures verified) of a signed note; else raise.

    C2SP signed-note, "Signatures": a signature whose key name and key ID do not both match a
    known key is ignored; one that does must verify (else the whole note is rejected); and the
    note is rejected unless at least one known key's signature verifies.
    """
    known = [verifiers] if isinstance(verifiers, Verifier) else list(verifiers)
    if not known:
        raise ConfigError("no key to check the signed note with")
    body, sigs = _split_note(text)
    good: dict[str, Verifier] = {}
    for name, khash, sig in sigs:
        for v in known:
            if (v.name, v.hash) != (name, khash):
                continue
            if not v.verify(body.encode(), sig):
                raise VerificationError(
                    f"signature by {v.id} is invalid (forged, or the note was altered)"
                )
            good[v.id] = v
    if not good:
        wanted = ", ".join(v.id for v in known)
        signed = ", ".join(key_id(name, khash) for name, khash, _ in sigs)
        raise VerificationError(f"note is not signed by {wanted} (signed by {signed})")
    return body, tuple(good.values())


def open_note(text: str, verifiers: Verifier | Iterable[Verifier]) -> str:
    """The body of a signed note, if it verifies with the known keys `verifiers` (see
    `verify_note`); else raise."""
    return verify_note(text, verifiers)[0]


# -- checkpoints ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A verified (or freshly signed) checkpoint and its note text; `signers` are the keys
    whose signatures on it were verified (or made), not part of its identity."""

    origin: str
    size: int
    root: bytes
    note: str
    signers: tuple[Verifier, ...] = field(default=(), compare=False)


def check_origin(origin: str) -> str:
    """C2SP tlog-checkpoint, "Note text": the origin is the first line, non-empty."""
    if not origin or "\n" in origin or any(ord(c) < 0x20 for c in origin):
        raise ConfigError(f"origin {origin!r} must be one non-empty line")
    return origin


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    """The tlog-checkpoint note text: origin, tree size, base64 root hash, one per line."""
    check_origin(origin)
    if problem := empty_root_error(size, root):
        raise VerificationError(f"refusing to sign a checkpoint: {problem}")
    return f"{origin}\n{size}\n{_b64(root)}\n"


def parse_body(body: str) -> tuple[str, int, bytes]:
    """(origin, size, root) of a tlog-checkpoint body; extension lines are allowed and ignored.

    C2SP tlog-checkpoint, "Note text": decimal size without leading zeros, base64 32-byte root;
    a size-0 checkpoint must carry the empty-tree root (`merkle.empty_root_error`).
    """
    lines = body.split("\n")
    if len(lines) < 4 or not lines[0]:
        raise VerificationError("checkpoint body is not origin / size / root hash lines")
    origin, size_text, root_text = lines[:3]
    if (
        not size_text.isdigit()
        or not size_text.isascii()
        or (size_text != "0" and size_text[0] == "0")
    ):
        raise VerificationError(f"checkpoint tree size {size_text[:30]!r} is not a decimal number")
    root = _unb64(root_text, "checkpoint root hash")
    if len(root) != 32:
        raise VerificationError(f"checkpoint root hash is {len(root)} bytes, not 32")
    size = int(size_text)
    if problem := empty_root_error(size, root):
        raise VerificationError(f"checkpoint root hash: {problem}")
    return origin, size, root


def open_checkpoint(text: str, verifiers: Verifier | Iterable[Verifier]) -> Checkpoint:
    """Verify the signatures (`verify_note`) and parse the body (`parse_body`) of a checkpoint
    note; the result names the known keys that signed it."""
    body, signers = verify_note(text, verifiers)
    origin, size, root = parse_body(body)
    return Checkpoint(origin, size, root, text, signers)


def note_signers(text: str) -> list[tuple[str, bytes]]:
    """(name, key hash) of each signature line, unverified: to pick a key from a key ring, or
    to name the keys of a note none of whose keys is known."""
    out = []
    for line in text[text.rfind("\n\n") + 2 :].splitlines():
        if line.startswith(SIG_PREFIX):
            name, _, b64 = line[len(SIG_PREFIX) :].partition(" ")
            try:
                out.append((name, base64.b64decode(b64)[:4]))
            except (binascii.Error, ValueError):
                continue
    return out
