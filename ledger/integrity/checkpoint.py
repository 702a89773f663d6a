"""Checkpoints made: key files, the origin, signing the ledger's head, and doing it on the way.

- verifier key `DIR/ledger.vkey` and private key `DIR/ledger.key` (mode 0600), in the C2SP
  formats of `ledger.tlog.note`;
- the default origin is `agent-ledger/<db file stem>` (`LEDGER_ORIGIN` or `--origin` override
  it); the default key name is `agent-ledger`;
- every checkpoint signed is kept in the `checkpoints` table (`ledger.store.checkpoints`) with
  the verifier key that signed it. Signing refuses a ledger that shrank or forked since its last
  checkpoint (one root recomputation from the stored nodes: O(log n) reads).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from ledger.config import Settings, load
from ledger.errors import ConfigError, StoreError, VerificationError
from ledger.store import Store, treestore
from ledger.store.checkpoints import Stored, insert, stored
from ledger.tlog.note import (
    DEFAULT_KEY_NAME,
    Checkpoint,
    Signer,
    Verifier,
    checkpoint_body,
    sign_note,
)

__all__ = [
    "KEY_FILE",
    "VKEY_FILE",
    "Checkpointer",
    "create",
    "default_origin",
    "load_signer",
    "load_verifier",
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
    settings = load(key=key, origin=origin)
    if not settings.key:
        raise ConfigError("no signing key: pass --key FILE or set LEDGER_KEY (see `ledger keygen`)")
    return load_signer(settings.key), settings.origin or default_origin(db_path)


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
    insert(con, Stored(n, size, head.root, origin, note, vkey, datetime.now(UTC)))
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
