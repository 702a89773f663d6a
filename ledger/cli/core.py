"""`ledger ingest`, `verify` and `schema`: the commands of the ledger file and its contract."""

from __future__ import annotations

import os
from typing import Any

import click

from ledger.cli._common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_QUARANTINED,
    Progress,
    db_option,
    echo_json,
    json_option,
)
from ledger.errors import LedgerError

__all__ = ["COMMANDS"]


@click.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@db_option
@json_option
@click.option("--batch-size", default=10_000, show_default=True, help="Events per transaction.")
def ingest(files: tuple[str, ...], db: str, as_json: bool, batch_size: int) -> int:
    """Append events from JSON Lines files (`-` reads stdin) to the ledger.

    Valid events are encoded to single-object Avro, exactly as Kafka carries them,
    then hashed and appended. A repeated event_id with the same bytes is a duplicate
    (counted, not appended); with different bytes it is quarantined as a conflicting
    duplicate. Invalid lines go to the `quarantine` table with file, line number and
    reason (`ledger quarantine` lists them). Creates the ledger only where no file
    exists; a DuckDB file that is not a ledger is refused untouched.

    \b
    Examples:
      ledger ingest examples/events.jsonl
      cat more.jsonl | ledger ingest - --db audit.duckdb

    Exit: 0 all lines accepted, 3 some lines quarantined, 1 usage or I/O error.
    """
    from ledger.store import Store
    from ledger.stream.ingest import ingest as run_ingest
    from ledger.stream.ingest import read_lines

    for path in files:
        if path != "-" and not os.path.isfile(path):
            raise LedgerError(f"no such file: {path}")
    meter = Progress("ingest")
    with Store.open(db) as store:
        summary = run_ingest(
            store,
            read_lines(files),
            batch_size=batch_size,
            progress=lambda s: meter.update(s.appended + s.duplicates + s.quarantined),
        )
    meter.done()
    if as_json:
        echo_json(summary.to_dict())
    else:
        click.echo(
            f"{summary.appended:,} appended, {summary.duplicates:,} duplicates, "
            f"{summary.quarantined:,} quarantined; ledger {db} has {summary.size:,} entries"
        )
        if summary.quarantined:
            click.echo(f"see them with: ledger quarantine --db {db}", err=True)
    return EXIT_QUARANTINED if summary.quarantined else EXIT_OK


@click.command()
@db_option
@json_option
@click.option("--checkpoint", "checkpoint_file", metavar="FILE",
              help="A checkpoint kept elsewhere: detect rollback, truncation, fork, and a "
              "stored checkpoint deleted.")  # fmt: skip
@click.option("--public-key", "public_keys", multiple=True, metavar="FILE",
              help="A verifier key you trust (file or text); repeatable. Every stored "
              "checkpoint must then be signed by one, or by a key that co-signed a later "
              "one with it (a key handover); with no checkpoint at all, verify fails.")  # fmt: skip
@click.option("--origin", metavar="NAME", help="The origin you expect the ledger to have.")
def verify(
    db: str,
    as_json: bool,
    checkpoint_file: str | None,
    public_keys: tuple[str, ...],
    origin: str | None,
) -> int:
    """Recompute every hash and link from seq 0; name the first bad entry.

    Checks: seq runs 0, 1, 2, … with no gap or repeat; each prev_hash is the previous
    entry_hash; each entry_hash = SHA-256(0x00 || u64be(seq) || prev_hash || payload);
    each row's event_id, type and occurred_at agree with its payload; the head agrees
    with the one recorded by the last append; the Merkle tree matches the entries; the
    stored checkpoints are numbered #1, #2, … with no gap; every one is validly signed,
    of the ledger's origin, no larger than the ledger and has its root; every
    projection row (what trace, violations and authority read) equals what its entry's
    payload says; source and recorded_at agree with the meta chain. Shows the ledger's
    origin, the keys (name+keyhash) that signed its checkpoints, and what nothing here
    can vouch for (consumer offsets, quarantine).

    \b
    Examples:
      ledger verify
      ledger verify --db audit.duckdb --json
      ledger verify --checkpoint kept/cp.txt --public-key keys/ledger.vkey
      ledger verify --public-key keys/2026/ledger.vkey

    Exit: 0 intact (or empty, said so), 1 the first bad seq and why.
    """
    from ledger.integrity.verify import verify_store
    from ledger.store import Store

    note = None
    if checkpoint_file:
        try:
            with open(checkpoint_file, encoding="utf-8") as fh:
                note = fh.read()
        except OSError as exc:
            raise LedgerError(f"cannot read {checkpoint_file}: {exc.strerror}") from exc
    meter = Progress("verify")
    try:
        with Store.open(db, read_only=True) as store:
            report = verify_store(
                store,
                progress=meter.update,
                checkpoint=note,
                public_keys=public_keys,
                origin=origin,
            )
    except LedgerError as exc:
        if as_json:  # a script reading stdout gets a verdict, not an empty string
            echo_json({"ok": False, "db": db, "error": str(exc)})
        raise
    meter.done()
    if as_json:
        echo_json(report.to_dict())
    elif report.ok and report.size == 0:
        click.echo(f"ledger {db} is empty: nothing to verify (origin {report.origin})")
    elif report.ok:
        click.echo(f"ok: {report.size:,} entries verified, head {report.head_hash}")
        click.echo(f"origin {report.origin}; Merkle root {report.merkle_root}")
        click.echo(_signers_line(report.checkpoint_details, report.trusted_keys))
        click.echo("projections: every row recomputed from its entry and equal")
        for item in report.unvouched:
            click.echo(f"not vouched for: {item}")
    else:
        where = "" if report.bad_seq is None else f" at seq {report.bad_seq}"
        click.echo(f"FAILED{where}: {report.reason}", err=True)
        for d in report.derived[1:]:
            click.echo(f"  also: {d['reason']}", err=True)
        if report.derived_total > len(report.derived):
            click.echo(f"  ({report.derived_total:,} projection rows differ in all)", err=True)
    return EXIT_OK if report.ok else EXIT_ERROR


def _signers_line(details: list[dict[str, Any]], trusted: list[str]) -> str:
    """`N checkpoints (#a..#b), signed by KEY (#i..#j), …` and which keys were trusted."""
    if not details:
        return "no checkpoint stored: nothing is signed (`ledger checkpoint --key FILE`)"
    spans: dict[str, list[int]] = {}
    for d in details:
        for k in d["signed_by"]:
            spans.setdefault(k["key_id"], []).append(d["n"])
    keys = ", ".join(
        f"{key} (#{ns[0]}..#{ns[-1]})" if len(ns) > 1 else f"{key} (#{ns[0]})"
        for key, ns in spans.items()
    )
    line = f"{len(details)} checkpoint(s) #{details[0]['n']}..#{details[-1]['n']}, signed by {keys}"
    if trusted:
        line += f"; trusted key(s): {', '.join(trusted)}"
    else:
        line += " (checked with the keys stored beside them: pin yours with --public-key)"
    return line


@click.group()
def schema() -> None:
    """The Avro wire contract, for producers in any language."""


@schema.command("show")
def schema_show() -> None:
    """Print the current AuditEvent Avro schema as JSON.

    \b
    Example:
      ledger schema show > audit_event.avsc
    """
    from ledger.contract.codec import current_schema

    echo_json(current_schema())


@schema.command("fingerprint")
@json_option
def schema_fingerprint(as_json: bool) -> None:
    """Print the CRC-64-AVRO fingerprint (wire byte order, hex) of the current schema.

    Kafka values start with 0xC3 0x01 followed by these 8 bytes.

    \b
    Example:
      ledger schema fingerprint
    """
    from ledger.contract.codec import default_codec

    codec = default_codec()
    if as_json:
        echo_json({"fingerprint": codec.fingerprint.hex(), "known": codec.known_fingerprints})
    else:
        click.echo(codec.fingerprint.hex())


COMMANDS = [ingest, verify, schema]
