"""Auditor commands: keygen, checkpoint, prove, verify-proof (thin wrappers over the library)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from ledger.cli._common import EXIT_ERROR, EXIT_OK, db_option, echo_json, json_option
from ledger.errors import ConfigError

__all__ = ["COMMANDS"]


def _write(out: str, text: str) -> None:
    if out == "-":
        click.echo(text, nl=False)
        return
    try:
        Path(out).write_text(text)
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror}") from exc


def _read(path: str, what: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc


def _key_text(value: str) -> str:
    """A verifier key given as a file path or as the key text itself."""
    if os.path.exists(value) or "+" not in value:
        return _read(value, "public key").strip()
    return value.strip()


@click.command()
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Directory for the key files.")
@click.option("--name", default="agent-ledger", show_default=True, help="Key name (no spaces/+).")
@click.option("--force", is_flag=True, help="Replace an existing key in DIR.")
@json_option
def keygen(out_dir: str, name: str, force: bool, as_json: bool) -> None:
    """Make an Ed25519 signing key for checkpoints.

    Writes DIR/ledger.key (private, mode 0600, `PRIVATE+KEY+name+hash+key`) and
    DIR/ledger.vkey (the C2SP verifier key `name+hash+key`, give it to auditors).

    \b
    Examples:
      ledger keygen --out keys/
      export LEDGER_KEY=keys/ledger.key
    """
    from ledger.integrity.checkpoint import write_keypair

    key, vkey = write_keypair(out_dir, name, force)
    text = vkey.read_text().strip()
    if as_json:
        echo_json({"key": str(key), "vkey": str(vkey), "public_key": text})
    else:
        click.echo(f"wrote {key} (private, 0600) and {vkey}\npublic key: {text}")


@click.command("checkpoint")
@db_option
@click.option("--key", metavar="FILE", help="Private key. Env: LEDGER_KEY.")
@click.option("--origin", metavar="NAME", help="Log origin. Env: LEDGER_ORIGIN. "
              "Default: agent-ledger/<db file stem>.")  # fmt: skip
@click.option("--out", metavar="FILE", help="Also write the signed note to FILE.")
@json_option
def checkpoint_cmd(
    db: str, key: str | None, origin: str | None, out: str | None, as_json: bool
) -> None:
    """Sign the ledger's tree head (origin, size, root) as a C2SP checkpoint.

    The signed note is kept in the `checkpoints` table and printed (or written to
    --out). Keep copies elsewhere: `ledger verify --checkpoint FILE` later detects a
    ledger that was truncated, rolled back or rewritten since.

    \b
    Examples:
      ledger checkpoint --key keys/ledger.key --out cp-$(date +%s).txt
      LEDGER_KEY=keys/ledger.key ledger checkpoint --json
    """
    from ledger.integrity.checkpoint import create, resolve
    from ledger.store import Store

    signer, origin = resolve(key, origin, db)
    with Store.open(db) as store:
        cp = create(store, signer, origin)
    if out:
        _write(out, cp.note)
    if as_json:
        echo_json({"origin": cp.origin, "size": cp.size, "root": cp.root.hex(),
                   "note": cp.note, "out": out})  # fmt: skip
    elif out:
        click.echo(f"checkpoint of {cp.size:,} entries, root {cp.root.hex()}, written to {out}")
    else:
        click.echo(cp.note, nl=False)


@click.command()
@click.argument("event_id", required=False)
@click.option("--consistency", "old_size", type=click.IntRange(min=0), metavar="OLD_SIZE",
              help="Prove the checkpoint of OLD_SIZE is a prefix of a later one.")  # fmt: skip
@click.option("--to", "new_size", type=click.IntRange(min=0), metavar="NEW_SIZE",
              help="With --consistency: the later size (default: latest).")  # fmt: skip
@click.option("--checkpoint", "checkpoint_file", metavar="FILE",
              help="Prove against this checkpoint (default: latest covering).")  # fmt: skip
@click.option("--public-key", metavar="KEY", help="Verifier key (file or text) to pin.")
@click.option("--key", metavar="FILE", help="Private key: sign a checkpoint if none covers "
              "the event. Env: LEDGER_KEY.")  # fmt: skip
@click.option("--origin", metavar="NAME", help="Origin of such a checkpoint. Env: LEDGER_ORIGIN.")
@click.option("--out", default="-", show_default=True, metavar="FILE", help="Bundle file.")
@db_option
@json_option
def prove(
    *,
    event_id: str | None,
    old_size: int | None,
    new_size: int | None,
    checkpoint_file: str | None,
    public_key: str | None,
    key: str | None,
    origin: str | None,
    out: str,
    db: str,
    as_json: bool,
) -> None:
    """Write a self-contained proof bundle (JSON) for an auditor.

    EVENT_ID: the event's bytes, its audit path and the signed checkpoint it leads to.
    --consistency OLD_SIZE: proof that the ledger only grew between two checkpoints.
    Check either with `ledger verify-proof FILE --public-key ledger.vkey` (no database).

    \b
    Examples:
      ledger prove 0193a1b2-... --out proof.json
      ledger prove --consistency 1000 --to 5000 --out grew.json
    """
    from ledger import config
    from ledger.integrity import proofs
    from ledger.integrity.checkpoint import load_signer
    from ledger.store import Store
    from ledger.tlog.note import Signer, Verifier

    if (event_id is None) == (old_size is None):
        raise click.UsageError("give either EVENT_ID or --consistency OLD_SIZE")
    pinned = Verifier.parse(_key_text(public_key)) if public_key else None
    settings = config.load(key=key, origin=origin)
    signer: Signer | None = load_signer(settings.key) if settings.key and event_id else None
    bundle: dict[str, Any]
    with Store.open(db, read_only=signer is None) as store:
        if event_id is not None:
            note = _read(checkpoint_file, "checkpoint") if checkpoint_file else None
            bundle = proofs.inclusion_bundle(
                store,
                event_id,
                checkpoint_note=note,
                public_key=pinned,
                signer=signer,
                origin=settings.origin,
            )
        else:
            assert old_size is not None
            bundle = proofs.consistency_bundle(store, old_size, new_size, pinned)
    _write(out, json.dumps(bundle, indent=2) + "\n")
    if out == "-":
        return
    size = bundle.get("tree_size", bundle.get("new_size"))
    if as_json:
        echo_json({"out": out, "tree_size": size, "bytes": Path(out).stat().st_size})
    else:
        click.echo(f"wrote {out} (tree size {size:,})")


@click.command("verify-proof")
@click.argument("file")
@click.option("--public-key", metavar="KEY", help="The verifier key you trust (file or text).")
@json_option
def verify_proof(file: str, public_key: str | None, as_json: bool) -> int:
    """Check a proof bundle offline: leaf hash, audit path or consistency proof, checkpoint
    signature. No database, no network.

    Pin the log's key with --public-key; without it the key inside the bundle is used,
    which only shows the bundle agrees with itself.

    \b
    Examples:
      ledger verify-proof proof.json --public-key keys/ledger.vkey
      ledger verify-proof grew.json --public-key "agent-ledger+1a2b3c4d+AX..."

    Exit: 0 the bundle proves what it says, 1 it does not (the reason is printed).
    """
    from ledger.integrity.proofcheck import ProofCheckError, check_file

    pinned = _key_text(public_key) if public_key else None
    try:
        result = check_file(file, pinned)
    except ProofCheckError as exc:
        if as_json:
            echo_json({"ok": False, "reason": str(exc)})
        else:
            click.echo(f"FAILED: {exc}", err=True)
        return EXIT_ERROR
    if as_json:
        echo_json({"ok": True, "kind": result.kind, "summary": result.summary,
                   "pinned": result.pinned})  # fmt: skip
    else:
        key_note = "pinned key" if result.pinned else "the bundle's own key (not pinned)"
        click.echo(f"ok: {result.summary}; signature checked with {key_note}")
    return EXIT_OK


COMMANDS = [keygen, checkpoint_cmd, prove, verify_proof]
