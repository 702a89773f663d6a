"""Checkpoints made: key files, the origin, signing the ledger's head, and doing it on the way.

- verifier key `DIR/ledger.vkey` and private key `DIR/ledger.key` (mode 0600), in the C2SP
  formats of `ledger.tlog.note`; the default key name is `agent-ledger`;
- the origin (C2SP tlog-checkpoint: the log's identity) is the ledger's own, fixed when the
  file was created (`ledger.store.checkpoints.ledger_origin`); an origin given when signing
  must be that one;
- every checkpoint signed is kept in the `checkpoints` table (`ledger.store.checkpoints`) with
  the verifier key of every key that signed it. Signing refuses a ledger that shrank or forked
  since its last checkpoint (one root recomputation from the stored nodes: O(log n) reads;
  tlog-checkpoint, "Signatures": a log MUST NOT sign a checkpoint inconsistent with one it
  signed before).

Keys rotate by handover: the checkpoint after a new key is made is signed by the old and the
new key together (one note, two signature lines); from then on the new key signs alone. Signing
with keys none of which signed the previous checkpoint is refused unless `rotate` is set,
since the keys' holders could then not be linked by any checkpoint both signed (see
`ledger.integrity.audit` for what a verifier with only the new key accepts).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ledger.config import Settings, load
from ledger.errors import ConfigError, NotFoundError, StoreError, VerificationError
from ledger.store import Store, treestore
from ledger.store.checkpoints import (
    Stored,
    claim_origin,
    insert,
    latest,
    ledger_origin,
    stored,
)
from ledger.store.checkpoints import default_origin as _default_origin
from ledger.tlog.note import (
    DEFAULT_KEY_NAME,
    Checkpoint,
    Signer,
    Verifier,
    check_origin,
    checkpoint_body,
    key_id,
    note_signers,
    sign_note,
    verify_note,
)

__all__ = [
    "KEY_FILE",
    "VKEY_FILE",
    "Checkpointer",
    "LatestCheckpoint",
    "SignerReport",
    "check_signing",
    "create",
    "default_origin",
    "latest_checkpoint",
    "ledger_origin",
    "load_signer",
    "load_signers",
    "load_verifier",
    "load_verifiers",
    "resolve",
    "write_keypair",
]

log = logging.getLogger("ledger.integrity.checkpoint")

KEY_FILE = "ledger.key"
VKEY_FILE = "ledger.vkey"


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


def load_signers(paths: Sequence[str | os.PathLike[str]]) -> list[Signer]:
    """The signing keys in `paths`, in order; the same key twice is an error."""
    signers = [load_signer(p) for p in paths]
    ids = [s.verifier.id for s in signers]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"the same signing key was given twice ({', '.join(ids)})")
    return signers


def load_verifier(key: str) -> Verifier:
    """A verifier key from a file path, or the key text itself."""
    if "+" not in key or os.path.exists(key):
        try:
            key = Path(key).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read public key {key}: {exc.strerror}") from exc
    return Verifier.parse(key)


def load_verifiers(keys: Sequence[str]) -> list[Verifier]:
    """A trusted key set from files or key texts (the same key given twice counts once)."""
    out: dict[str, Verifier] = {}
    for key in keys:
        v = load_verifier(key)
        out.setdefault(v.text, v)
    return list(out.values())


def default_origin(db_path: str) -> str:
    """`agent-ledger/<file stem>`: the origin a ledger created without LEDGER_ORIGIN gets."""
    return _default_origin(db_path)


def resolve(
    keys: str | Sequence[str] | None, origin: str | None
) -> tuple[list[Signer], str | None]:
    """Signing keys and origin from flags, then LEDGER_KEY / LEDGER_ORIGIN. The origin is None
    unless one was given: the ledger's own is used then (`create`), never the file name."""
    given = [keys] if isinstance(keys, str) else list(keys or ())
    settings = load(origin=origin)
    paths = given or ([settings.key] if settings.key else [])
    if not paths:
        raise ConfigError("no signing key: pass --key FILE or set LEDGER_KEY (see `ledger keygen`)")
    return load_signers(paths), settings.origin


# -- signing -------------------------------------------------------------------------------------


def _as_list(signers: Signer | Sequence[Signer]) -> list[Signer]:
    keys = [signers] if isinstance(signers, Signer) else list(signers)
    if not keys:
        raise ConfigError("no signing key given")
    return keys


def check_signing(
    store: Store,
    signers: Signer | Sequence[Signer],
    origin: str | None = None,
    *,
    rotate: bool = False,
) -> str:
    """The origin to sign with, once the keys and origin are checked against the ledger.

    The origin must be the ledger's (`ledger_origin`): a checkpoint for another origin would be
    another log's (C2SP tlog-checkpoint, "Note text"). Unless `rotate`, at least one of the
    keys must have signed the previous stored checkpoint, so that every change of key is a
    handover that a verifier trusting only the new key can follow (C2SP signed-note allows
    several signatures on one note for exactly this). Raises `ConfigError`.
    """
    keys = _as_list(signers)
    mine = ledger_origin(store)
    if origin is not None and origin != mine:
        raise ConfigError(
            f"this ledger's origin is {mine!r} (fixed when it was created), not {origin!r}: "
            "drop --origin / LEDGER_ORIGIN, or sign another ledger"
        )
    last = latest(store.con)
    if last is not None and not rotate:
        previous = set(last.vkeys)
        if not any(k.verifier.text in previous for k in keys):
            before = ", ".join(Verifier.parse(v).id for v in last.vkeys) or "no key"
            given = ", ".join(k.verifier.id for k in keys)
            raise ConfigError(
                f"checkpoint #{last.n} was signed by {before}, not by {given}: to change keys, "
                "sign the next checkpoint with the old and the new key together (--key OLD "
                "--key NEW), or pass --rotate to start a new key without that handover"
            )
    return mine


def create(
    store: Store,
    signers: Signer | Sequence[Signer],
    origin: str | None = None,
    *,
    rotate: bool = False,
) -> Checkpoint:
    """Sign the ledger's current tree head with every key in `signers` (one C2SP note, one
    signature line each) and keep it; refuse if the ledger shrank or forked since the last
    checkpoint, if `origin` is not the ledger's, or (unless `rotate`) if no key signed the
    previous checkpoint (`check_signing`). Signing the same head with the same keys again
    returns the same note (Ed25519 signatures are deterministic)."""
    if store.read_only:
        raise StoreError(f"{store.path} is open read-only")
    keys = _as_list(signers)
    origin = check_signing(store, keys, origin, rotate=rotate)
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
    note = sign_note(checkpoint_body(origin, size, head.root), keys)
    verifiers = tuple(k.verifier for k in keys)
    vkey = "\n".join(v.text for v in verifiers)
    cp = Checkpoint(origin, size, head.root, note, verifiers)
    if history and history[-1].note == note and history[-1].vkey == vkey:
        return cp
    n = history[-1].n + 1 if history else 1
    insert(con, Stored(n, size, head.root, origin, note, vkey, datetime.now(UTC)))
    return cp


# -- the latest checkpoint, shown ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignerReport:
    """One signature line of a checkpoint: the key's name and C2SP key ID (hash), and whether
    it verified with a verifier key the ledger stored for that checkpoint."""

    name: str
    key_hash: str
    verified: bool

    @property
    def id(self) -> str:
        return f"{self.name}+{self.key_hash}"


@dataclass(frozen=True, slots=True)
class LatestCheckpoint:
    """The latest stored checkpoint, as `ledger checkpoint --show` prints it."""

    n: int
    size: int
    root: str
    origin: str
    signers: list[SignerReport]
    created_at: str
    note: str

    def to_dict(self) -> dict[str, object]:
        return {
            "n": self.n,
            "size": self.size,
            "root": self.root,
            "origin": self.origin,
            "signers": [
                {"name": s.name, "key_hash": s.key_hash, "key_id": s.id, "verified": s.verified}
                for s in self.signers
            ],
            "created_at": self.created_at,
            "note": self.note,
        }


def latest_checkpoint(store: Store) -> LatestCheckpoint:
    """The latest stored checkpoint, signing nothing (read-only is enough); each signature
    line is checked against the verifier keys stored beside it. `NotFoundError` if none."""
    row = latest(store.con)
    if row is None:
        raise NotFoundError(
            f"no checkpoint is stored in {store.path} "
            "(sign one with `ledger checkpoint --key FILE`)"
        )
    known = []
    for text in row.vkeys:
        try:
            known.append(Verifier.parse(text))
        except VerificationError:
            continue
    good: set[str] = set()
    if known:
        try:
            good = {v.id for v in verify_note(row.note, known)[1]}
        except (VerificationError, ConfigError):
            good = set()
    signers = [
        SignerReport(name, khash.hex(), key_id(name, khash) in good)
        for name, khash in note_signers(row.note)
    ]
    return LatestCheckpoint(
        row.n,
        row.size,
        row.root.hex(),
        row.origin,
        signers,
        row.created_at.astimezone(UTC).isoformat(),
        row.note,
    )


# -- on the way ----------------------------------------------------------------------------------


class Checkpointer:
    """Checkpoints on its own: after `every_entries` new entries, or `every_seconds` after the
    last checkpoint if anything is pending. The consumer calls `maybe_checkpoint` after each
    append (idle=False) and on each empty poll (idle=True), so the timer fires while idle too,
    and `final_checkpoint` when it stops cleanly, so the last entries do not stay unsigned.
    A rule set to 0 is off."""

    def __init__(
        self,
        signer: Signer | Sequence[Signer],
        origin: str | None = None,
        every_entries: int = 10_000,
        every_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.signers = _as_list(signer)
        self.origin = origin
        self.every_entries = every_entries
        self.every_seconds = every_seconds
        self.clock = clock
        self._last_size: int | None = None
        self._last_time = clock()
        self.made = 0

    @property
    def signer(self) -> Signer:
        """The first signing key (kept for callers that sign with one)."""
        return self.signers[0]

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        every_entries: int,
        every_seconds: float,
        keys: Sequence[str] = (),
    ) -> Checkpointer:
        """The consumer's checkpointer from `keys` (else `LEDGER_KEY`) and `LEDGER_ORIGIN` (or
        their flags). An existing ledger is checked now, read-only, so that a wrong origin or
        a key that would break the handover rule stops `consume` before it appends anything;
        a ledger that does not exist yet is created now, with the origin given, if any."""
        signers, origin = resolve(list(keys) or settings.key, settings.origin)
        if settings.db == ":memory:":
            return cls(signers, origin, every_entries, every_seconds)
        if Path(settings.db).exists():
            with Store.open(settings.db, read_only=True) as store:
                check_signing(store, signers, origin)
        elif origin is not None:
            check_origin(origin)
            with Store.open(settings.db) as store:
                claim_origin(store, origin)
        return cls(signers, origin, every_entries, every_seconds)

    def _sign(self, store: Store) -> Checkpoint:
        cp = create(store, self.signers, self.origin)
        self._last_size = cp.size
        self._last_time = self.clock()
        self.made += 1
        return cp

    def _pending(self, store: Store) -> int:
        size = treestore.read_head(store.con).size
        if self._last_size is None:
            history = stored(store.con)
            self._last_size = history[-1].size if history else 0
        return size - self._last_size

    def maybe_checkpoint(self, store: Store, idle: bool = False) -> Checkpoint | None:
        """A new checkpoint if one is due, else None. `idle` only documents the caller's state:
        the same rules apply (the time rule is what makes idle checkpoints happen)."""
        pending = self._pending(store)
        if pending <= 0:
            return None
        by_count = self.every_entries > 0 and pending >= self.every_entries
        by_time = self.every_seconds > 0 and self.clock() - self._last_time >= self.every_seconds
        if not (by_count or by_time):
            return None
        return self._sign(store)

    def final_checkpoint(self, store: Store) -> Checkpoint | None:
        """On a clean stop: sign the tail (a checkpoint at the final size) if the ledger grew
        since the last checkpoint, whatever the rules; else None."""
        if self._pending(store) <= 0:
            return None
        cp = self._sign(store)
        log.info("signed checkpoint of %d entries on the way out", cp.size)
        return cp
