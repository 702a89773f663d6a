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
@click.option("--key", "keys", multiple=True, metavar="FILE",
              help="Private key; repeat it to sign with several keys at once (a key "
              "handover: --key OLD --key NEW). Env: LEDGER_KEY.")  # fmt: skip
@click.option("--origin", metavar="NAME", help="The log's origin, to have it checked: "
              "fixed when the ledger is created, it must be that one. "
              "Env: LEDGER_ORIGIN.")  # fmt: skip
@click.option("--rotate", is_flag=True, help="Sign with keys none of which signed the previous "
              "checkpoint (a new key without a handover).")  # fmt: skip
@click.option("--show", is_flag=True, help="Print the latest stored checkpoint; sign nothing.")
@click.option("--out", metavar="FILE", help="Also write the signed note to FILE.")
@json_option
def checkpoint_cmd(
    *,
    db: str,
    keys: tuple[str, ...],
    origin: str | None,
    rotate: bool,
    show: bool,
    out: str | None,
    as_json: bool,
) -> None:
    """Sign the ledger's tree head (origin, size, root) as a C2SP checkpoint.

    The signed note is kept in the `checkpoints` table and printed (or written to
    --out). Keep copies elsewhere: `ledger verify --checkpoint FILE` later detects a
    ledger that was truncated, rolled back or rewritten since. The origin is the
    ledger's own, fixed when it was created.

    Rotating keys: sign one checkpoint with the old and the new key together
    (--key OLD --key NEW), then use the new key alone. Signing with keys none of
    which signed the previous checkpoint is refused unless --rotate.

    --show prints the latest stored checkpoint (number, size, root, origin, the
    keys that signed it, when) without signing; it needs no key.

    \b
    Examples:
      ledger checkpoint --key keys/ledger.key --out cp-$(date +%s).txt
      LEDGER_KEY=keys/ledger.key ledger checkpoint --json
      ledger checkpoint --key keys/2025/ledger.key --key keys/2026/ledger.key
      ledger checkpoint --show
    """
    from ledger.integrity.checkpoint import create, latest_checkpoint, resolve
    from ledger.store import Store

    if show:
        if keys or rotate or origin:
            raise click.UsageError("--show signs nothing: it takes no --key, --origin or --rotate")
        with Store.open(db, read_only=True) as store:
            latest = latest_checkpoint(store)
        if out:
            _write(out, latest.note)
        if as_json:
            echo_json(latest.to_dict())
            return
        valid = "signature valid for the key stored beside it"
        signed = ", ".join(
            f"{s.id} ({valid if s.verified else 'NOT ' + valid})" for s in latest.signers
        )
        click.echo(
            f"checkpoint #{latest.n} of {latest.origin}: {latest.size:,} entries, "
            f"root {latest.root}\nsigned by {signed}\ncreated at {latest.created_at}\n"
        )
        click.echo(latest.note, nl=False)
        return
    signers, origin = resolve(keys, origin)
    with Store.open(db, create=False) as store:
        cp = create(store, signers, origin, rotate=rotate)
    if out:
        _write(out, cp.note)
    ids = [v.id for v in cp.signers]
    if as_json:
        echo_json({"origin": cp.origin, "size": cp.size, "root": cp.root.hex(),
                   "signers": ids, "note": cp.note, "out": out})  # fmt: skip
    elif out:
        click.echo(
            f"checkpoint of {cp.size:,} entries, root {cp.root.hex()}, signed by "
            f"{', '.join(ids)}, written to {out}"
        )
    else:
        click.echo(cp.note, nl=False)


@click.command()
@click.argument("event_id", required=False, metavar="[EVENT_ID | NEW]")
@click.option("--consistency", "old_size", type=click.IntRange(min=0), metavar="OLD",
              help="Prove the ledger's tree of OLD entries is a prefix of its tree of NEW "
              "(the argument; default: the latest checkpoint's size).")  # fmt: skip
@click.option("--to", "new_size", type=click.IntRange(min=0), metavar="NEW",
              help="With --consistency: NEW, as an option.")  # fmt: skip
@click.option("--checkpoint", "checkpoint_file", metavar="FILE",
              help="Prove against this checkpoint (default: latest covering).")  # fmt: skip
@click.option("--public-key", "public_keys", multiple=True, metavar="KEY",
              help="Verifier key (file or text) the checkpoint must be signed by; "
              "repeatable.")  # fmt: skip
@click.option("--key", "keys", multiple=True, metavar="FILE", help="Private key: sign a "
              "checkpoint if none covers the event (repeatable). Env: LEDGER_KEY.")  # fmt: skip
@click.option("--origin", metavar="NAME", help="The log's origin, checked when signing. "
              "Env: LEDGER_ORIGIN.")  # fmt: skip
@click.option("--out", default="-", show_default=True, metavar="FILE", help="Bundle file.")
@db_option
@json_option
def prove(
    *,
    event_id: str | None,
    old_size: int | None,
    new_size: int | None,
    checkpoint_file: str | None,
    public_keys: tuple[str, ...],
    keys: tuple[str, ...],
    origin: str | None,
    out: str,
    db: str,
    as_json: bool,
) -> None:
    """Write a self-contained proof bundle (JSON) for an auditor.

    EVENT_ID: the event's bytes, its audit path and the signed checkpoint it leads to.

    --consistency OLD [NEW]: proof that the ledger's first OLD entries are still the
    first OLD entries at size NEW (0 <= OLD <= NEW <= its size). NEW defaults to the
    latest stored checkpoint. Each side carries the stored checkpoint of its size if
    there is one, else null and the root the ledger computed (unsigned, and said so);
    at least one side must be signed.

    Check either with `ledger verify-proof FILE --public-key ledger.vkey` (no database).

    \b
    Examples:
      ledger prove 0193a1b2-... --out proof.json
      ledger prove --consistency 1000 --out grew.json
      ledger prove --consistency 0 5000 --out grew.json
    """
    from ledger import config
    from ledger.integrity import proofs
    from ledger.integrity.checkpoint import load_signers
    from ledger.store import Store
    from ledger.tlog.note import Signer, Verifier

    if old_size is not None and event_id is not None:
        if not event_id.isdigit():
            raise click.UsageError(
                f"give either EVENT_ID or --consistency OLD [NEW] (NEW is a tree size, "
                f"not {event_id!r})"
            )
        if new_size is not None and new_size != int(event_id):
            raise click.UsageError(f"NEW given twice: {event_id} and --to {new_size}")
        new_size, event_id = int(event_id), None
    if (event_id is None) == (old_size is None):
        raise click.UsageError("give either EVENT_ID or --consistency OLD [NEW]")
    pinned = [Verifier.parse(_key_text(k)) for k in public_keys]
    settings = config.load(origin=origin)
    paths = list(keys) or ([settings.key] if settings.key else [])
    signers: list[Signer] | None = load_signers(paths) if paths and event_id else None
    bundle: dict[str, Any]
    with Store.open(db, read_only=signers is None, create=False) as store:
        if event_id is not None:
            note = _read(checkpoint_file, "checkpoint") if checkpoint_file else None
            bundle = proofs.inclusion_bundle(
                store,
                event_id,
                checkpoint_note=note,
                public_keys=pinned,
                signer=signers,
                origin=settings.origin,
            )
        else:
            assert old_size is not None
            bundle = proofs.consistency_bundle(store, old_size, new_size, public_keys=pinned)
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
@click.option("--public-key", "public_keys", multiple=True, metavar="KEY",
              help="A verifier key you trust (file or text); repeatable: a log's keys "
              "before and after a rotation.")  # fmt: skip
@click.option("--origin", metavar="NAME", help="The log you expect: a checkpoint of any "
              "other origin fails, whoever signed it.")  # fmt: skip
@click.option("--self-signed", is_flag=True, help="Without --public-key, accept the key "
              "inside the bundle: proves only that the bundle agrees with itself.")  # fmt: skip
@json_option
def verify_proof(
    file: str, public_keys: tuple[str, ...], origin: str | None, self_signed: bool, as_json: bool
) -> int:
    """Check a proof bundle offline: leaf hash, audit path or consistency proof, checkpoint
    signatures. No database, no network.

    Pin the log's key with --public-key (and its origin with --origin). Without a key
    it fails: anyone can sign a bundle with a key of their own. --self-signed checks it
    against the key inside the bundle, which only shows the bundle agrees with itself.
    A consistency bundle may leave one side unsigned (null checkpoint): the summary
    then says which root nobody signed.

    \b
    Examples:
      ledger verify-proof proof.json --public-key keys/ledger.vkey
      ledger verify-proof grew.json --public-key "agent-ledger+1a2b3c4d+AX..."
      ledger verify-proof proof.json --public-key old.vkey --public-key new.vkey \\
          --origin agent-ledger/audit

    Exit: 0 the bundle proves what it says, 1 it does not (the reason is printed).
    """
    from ledger.integrity.proofcheck import ProofCheckError, check_file

    pinned = [_key_text(k) for k in public_keys] or None
    if pinned is None and not self_signed:
        reason = (
            "no trusted key: pass --public-key (the log's verifier key, from a channel you "
            "trust), or --self-signed to check the bundle only against its own key"
        )
        if as_json:
            echo_json({"ok": False, "reason": reason})
        else:
            click.echo(f"FAILED: {reason}", err=True)
        return EXIT_ERROR
    try:
        result = check_file(file, pinned, origin)
    except ProofCheckError as exc:
        if as_json:
            echo_json({"ok": False, "reason": str(exc)})
        else:
            click.echo(f"FAILED: {exc}", err=True)
        return EXIT_ERROR
    if as_json:
        echo_json({"ok": True, "kind": result.kind, "summary": result.summary,
                   "pinned": result.pinned, "origin": result.origin,
                   "signers": list(result.signers)})  # fmt: skip
    else:
        key_note = "pinned key" if result.pinned else "the bundle's own key (not pinned)"
        click.echo(
            f"ok: {result.summary}; signed by {', '.join(result.signers)}, checked with {key_note}"
        )
    return EXIT_OK


COMMANDS = [keygen, checkpoint_cmd, prove, verify_proof]
