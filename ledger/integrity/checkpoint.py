"""Signed checkpoints: (origin, tree size, root) as a C2SP tlog-checkpoint signed note, Ed25519.

Formats (all text, interoperable with golang.org/x/mod/sumdb/note and C2SP tools):
- verifier key `DIR/ledger.vkey`: `<name>+<keyhash hex8>+<base64(0x01 || public key)>`
- private key `DIR/ledger.key` (mode 0600):
  `PRIVATE+KEY+<name>+<keyhash hex8>+<base64(0x01 || seed)>`
  where keyhash = SHA-256(name || 0x0A || 0x01 || public key)[:4] and seed is the 32-byte
  Ed25519 private key.
- checkpoint body: `<origin>\\n<size>\\n<base64(root)>\\n`; the signed note is the body, a blank
  line, then `— <name> <base64(keyhash || signature over the body)>\\n`.

The default origin is `agent-ledger/<db file stem>` (`LEDGER_ORIGIN` or `--origin` override
it); the default key name is `agent-ledger`. Every checkpoint signed is kept in the
`checkpoints` table with the verifier key that signed it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path

import duckdb
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger import merkle, treestore
from ledger.config import Settings
from ledger.errors import ConfigError, StoreError, VerificationError
from ledger.store import Store

log = logging.getLogger("ledger.checkpoint")

ALG_ED25519 = 0x01
SIG_PREFIX = "\u2014 "
DEFAULT_KEY_NAME = "agent-ledger"
KEY_FILE = "ledger.key"
VKEY_FILE = "ledger.vkey"


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
    return sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public).digest()[:4]


@dataclass(frozen=True, slots=True)
class Verifier:
    """A C2SP Ed25519 verifier key."""

    name: str
    hash: bytes
    public: bytes

    @property
    def text(self) -> str:
        return f"{self.name}+{self.hash.hex()}+{_b64(bytes([ALG_ED25519]) + self.public)}"

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


def sign_note(body: str, signer: Signer) -> str:
    """The C2SP signed note of `body` (which must end in a newline) with one signature."""
    if not body.endswith("\n") or "\n\n" in body:
        raise ValueError("note body must end in a newline and hold no blank line")
    sig = signer.sign(body.encode())
    return f"{body}\n{SIG_PREFIX}{signer.name} {_b64(signer.verifier.hash + sig)}\n"


def open_note(text: str, verifier: Verifier) -> str:
    """The body of a signed note, if `verifier`'s signature on it is valid; else raise."""
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
    signers = []
    matched = False
    for line in sig_block.splitlines():
        if not line.startswith(SIG_PREFIX):
            raise VerificationError(f"malformed signature line {line[:40]!r}")
        name, _, b64 = line[len(SIG_PREFIX) :].partition(" ")
        raw = _unb64(b64, f"signature of {name!r}")
        if not name or len(raw) < 5:
            raise VerificationError(f"malformed signature line {line[:40]!r}")
        signers.append(f"{name}+{raw[:4].hex()}")
        if name == verifier.name and raw[:4] == verifier.hash:
            if not verifier.verify(body.encode(), raw[4:]):
                raise VerificationError(
                    f"signature by {verifier.name}+{verifier.hash.hex()} is invalid "
                    "(forged, or the note was altered)"
                )
            matched = True
    if not signers:
        raise VerificationError("signed note has no signature lines")
    if not matched:
        raise VerificationError(
            f"note is not signed by {verifier.name}+{verifier.hash.hex()} "
            f"(signed by {', '.join(signers)})"
        )
    return body


# -- checkpoints ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A verified (or freshly signed) checkpoint and its note text."""

    origin: str
    size: int
    root: bytes
    note: str


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    if not origin or "\n" in origin:
        raise ConfigError(f"origin {origin!r} must be one non-empty line")
    return f"{origin}\n{size}\n{_b64(root)}\n"


def parse_body(body: str) -> tuple[str, int, bytes]:
    """(origin, size, root) of a tlog-checkpoint body; extension lines are allowed and ignored."""
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
    return origin, int(size_text), root


def open_checkpoint(text: str, verifier: Verifier) -> Checkpoint:
    """Verify the signature and parse the body of a checkpoint note."""
    origin, size, root = parse_body(open_note(text, verifier))
    return Checkpoint(origin, size, root, text)


def note_signers(text: str) -> list[tuple[str, bytes]]:
    """(name, key hash) of each signature line, unverified: to pick a key from a key ring."""
    out = []
    for line in text[text.rfind("\n\n") + 2 :].splitlines():
        if line.startswith(SIG_PREFIX):
            name, _, b64 = line[len(SIG_PREFIX) :].partition(" ")
            try:
                out.append((name, base64.b64decode(b64)[:4]))
            except (binascii.Error, ValueError):
                continue
    return out


# -- key files -----------------------------------------------------------------------------------


def write_keypair(
    out_dir: str | os.PathLike[str], name: str = DEFAULT_KEY_NAME, force: bool = False
) -> tuple[Path, Path]:
    """Generate an Ed25519 key: DIR/ledger.key (0600) and DIR/ledger.vkey; never overwrite
    an existing key unless `force`."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    key_path, vkey_path = directory / KEY_FILE, directory / VKEY_FILE
    if not force:
        for p in (key_path, vkey_path):
            if p.exists():
                raise ConfigError(f"{p} already exists (use --force to replace the key)")
    signer = Signer.generate(name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if force else os.O_EXCL)
    try:
        fd = os.open(key_path, flags, 0o600)
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(signer.text + "\n")
        vkey_path.write_text(signer.verifier.text + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot write key to {directory}: {exc.strerror}") from exc
    return key_path, vkey_path


def load_signer(path: str | os.PathLike[str]) -> Signer:
    """The signing key in `path`; like ssh, it says so when others may read that file."""
    try:
        text = Path(path).read_text()
        mode = os.stat(path).st_mode & 0o777
    except OSError as exc:
        raise ConfigError(f"cannot read private key {path}: {exc.strerror}") from exc
    if os.name == "posix" and mode & 0o077:
        log.warning(
            "private key %s can be read by others (mode %03o): run `chmod 600 %s`", path, mode, path
        )
    return Signer.parse(text)


def load_verifier(key: str) -> Verifier:
    """A verifier key from a file path, or the key text itself."""
    if "+" not in key or os.path.exists(key):
        try:
            key = Path(key).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read public key {key}: {exc.strerror}") from exc
    return Verifier.parse(key)


def default_origin(db_path: str) -> str:
    return f"agent-ledger/{Path(db_path).stem}"


def resolve(key: str | None, origin: str | None, db_path: str) -> tuple[Signer, str]:
    """Signer and origin from flags, then LEDGER_KEY / LEDGER_ORIGIN, then defaults."""
    from ledger import config

    settings = config.load(key=key, origin=origin)
    if not settings.key:
        raise ConfigError("no signing key: pass --key FILE or set LEDGER_KEY (see `ledger keygen`)")
    return load_signer(settings.key), settings.origin or default_origin(db_path)


# -- the checkpoints table -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stored:
    """A row of the `checkpoints` table (n counts checkpoints in the order they were signed)."""

    n: int
    size: int
    root: bytes
    origin: str
    note: str
    vkey: str
    created_at: datetime


def stored(con: duckdb.DuckDBPyConnection) -> list[Stored]:
    try:
        rows = con.execute(
            "SELECT n, size, root, origin, note, vkey, created_at FROM checkpoints ORDER BY n"
        ).fetchall()
    except duckdb.CatalogException:
        return []
    return [Stored(int(n), int(s), bytes(r), o, t, v, c) for n, s, r, o, t, v, c in rows]


def create(store: Store, signer: Signer, origin: str) -> Checkpoint:
    """Sign the ledger's current tree head and keep it; refuse if the ledger shrank or forked
    since the last checkpoint. Signing the same head again returns the same note."""
    if store.read_only:
        raise StoreError(f"{store.path} is open read-only")
    con = store.con
    head = treestore.read_head(con)
    size = store.size()
    if head.size != size:
        raise StoreError(f"the Merkle tree covers {head.size} entries but the ledger holds {size}")
    history = stored(con)
    if history:
        last = history[-1]
        if last.size > size:
            raise VerificationError(
                f"the ledger holds {size} entries but checkpoint #{last.n} already covered "
                f"{last.size}: entries from seq {size} on are gone (truncated or rolled back)"
            )
        if treestore.root_at(con, last.size, head) != last.root:
            raise VerificationError(
                f"the ledger's root at size {last.size} differs from checkpoint #{last.n}: "
                f"the ledger was rewritten (fork) before seq {last.size}"
            )
    note = sign_note(checkpoint_body(origin, size, head.root), signer)
    vkey = signer.verifier.text
    if history and history[-1].note == note and history[-1].vkey == vkey:
        return Checkpoint(origin, size, head.root, note)
    n = history[-1].n + 1 if history else 1
    con.execute(
        "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?)",
        [n, size, head.root, origin, note, vkey, datetime.now(UTC)],
    )
    return Checkpoint(origin, size, head.root, note)


class Checkpointer:
    """Checkpoints on its own: after `every_entries` new entries, or `every_seconds` after the
    last checkpoint if anything is pending. The consumer calls `maybe_checkpoint` after each
    append (idle=False) and on each empty poll (idle=True), so the timer fires while idle too.
    A rule set to 0 is off."""

    def __init__(
        self,
        signer: Signer,
        origin: str,
        every_entries: int = 10_000,
        every_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.signer = signer
        self.origin = origin
        self.every_entries = every_entries
        self.every_seconds = every_seconds
        self.clock = clock
        self._last_size: int | None = None
        self._last_time = clock()
        self.made = 0

    @classmethod
    def from_settings(
        cls, settings: Settings, every_entries: int, every_seconds: float
    ) -> Checkpointer:
        """The consumer's checkpointer from `LEDGER_KEY` / `LEDGER_ORIGIN` (or their flags)."""
        signer, origin = resolve(settings.key, settings.origin, settings.db)
        return cls(signer, origin, every_entries, every_seconds)

    def maybe_checkpoint(self, store: Store, idle: bool = False) -> Checkpoint | None:
        """A new checkpoint if one is due, else None. `idle` only documents the caller's state:
        the same rules apply (the time rule is what makes idle checkpoints happen)."""
        size = treestore.read_head(store.con).size
        if self._last_size is None:
            history = stored(store.con)
            self._last_size = history[-1].size if history else 0
        pending = size - self._last_size
        if pending <= 0:
            return None
        by_count = self.every_entries > 0 and pending >= self.every_entries
        by_time = self.every_seconds > 0 and self.clock() - self._last_time >= self.every_seconds
        if not (by_count or by_time):
            return None
        cp = create(store, self.signer, self.origin)
        self._last_size = cp.size
        self._last_time = self.clock()
        self.made += 1
        return cp


# -- verify: the ledger against its checkpoints ---------------------------------------------------


@dataclass(slots=True)
class Integrity:
    """What `verify` learns from the Merkle tree and the checkpoints."""

    root: bytes
    checkpoints: int
    problem: str | None = None
    bad_seq: int | None = None


def _external(
    history: list[Stored], note: str, pinned: Verifier | None
) -> tuple[Checkpoint | None, str | None]:
    verifier = pinned
    if verifier is None:
        signers = note_signers(note)
        for row in reversed(history):
            v = Verifier.parse(row.vkey)
            if (v.name, v.hash) in signers:
                verifier = v
                break
    if verifier is None:
        return None, "no key to check the given checkpoint with: pass --public-key"
    try:
        return open_checkpoint(note, verifier), None
    except VerificationError as exc:
        return None, f"the given checkpoint does not verify: {exc}"


def audit_ledger(
    store: Store,
    size: int,
    checks: list[str],
    external_note: str | None = None,
    public_key: str | None = None,
) -> Integrity:
    """Check the stored Merkle tree and every checkpoint against the (already verified) entries:
    signatures, no checkpoint larger than the ledger (truncation), sizes never going down in
    signing order (replay), roots equal to the recomputed ones (fork); and the same for an
    `external_note` kept by the auditor, checked with `public_key` (file or text)."""
    con = store.con
    history = stored(con)
    result = Integrity(merkle.EMPTY_ROOT, len(history))

    def fail(reason: str, bad_seq: int | None) -> Integrity:
        result.problem, result.bad_seq = reason, bad_seq
        return result

    pinned = load_verifier(public_key) if public_key else None
    external = None
    if external_note is not None:
        checks.append("given checkpoint")
        external, why = _external(history, external_note, pinned)
        if why:
            return fail(why, None)
        assert external is not None
        if external.size > size:
            return fail(
                f"the given checkpoint covers {external.size} entries but the ledger holds "
                f"{size}: entries from seq {size} on were removed (truncated or rolled back)",
                size,
            )
    checks += ["checkpoint signatures", "checkpoint sizes", "Merkle roots", "Merkle state"]
    previous: Stored | None = None
    for row in history:
        where = f"checkpoint #{row.n} (size {row.size})"
        if row.size > size:
            return fail(
                f"{where} covers more than the ledger's {size} entries: entries from seq "
                f"{size} on were removed (truncation)",
                size,
            )
        if pinned is not None and row.vkey.strip() != pinned.text:
            return fail(f"{where} is not signed by the given public key", None)
        try:
            cp = open_checkpoint(row.note, Verifier.parse(row.vkey))
        except (VerificationError, ConfigError) as exc:
            return fail(f"{where}: {exc}", None)
        if (cp.origin, cp.size, cp.root) != (row.origin, row.size, row.root):
            return fail(f"{where}: the table's columns disagree with its signed note", None)
        if previous is not None and row.size < previous.size:
            return fail(
                f"{where} is smaller than the earlier checkpoint #{previous.n} "
                f"(size {previous.size}): an old checkpoint was replayed as new",
                row.size,
            )
        previous = row
    sizes = {row.size for row in history} | ({external.size} if external else set())
    audit = treestore.audit(con, size, sizes)
    result.root = audit.roots.get(size, merkle.EMPTY_ROOT)
    good = 0
    if external is not None and audit.roots[external.size] != external.root:
        return fail(
            f"the ledger forked from the given checkpoint: its Merkle root at size "
            f"{external.size} differs, so entries before seq {external.size} were rewritten",
            None,
        )
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
