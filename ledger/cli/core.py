"""`ledger ingest`, `verify` and `schema`: the commands of the ledger file and its contract."""

from __future__ import annotations

import os

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
    then hashed and appended; a repeated event_id is counted once. Invalid lines go
    to the `quarantine` table with file, line number and reason.

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
            click.echo(
                f"see them with: ledger sql --db {db} "
                '"SELECT source, reason FROM quarantine ORDER BY received_at DESC LIMIT 20"',
                err=True,
            )
    return EXIT_QUARANTINED if summary.quarantined else EXIT_OK


@click.command()
@db_option
@json_option
@click.option("--checkpoint", "checkpoint_file", metavar="FILE",
              help="A checkpoint kept elsewhere: detect rollback, truncation, fork.")  # fmt: skip
@click.option("--public-key", metavar="FILE", help="Verifier key that must have signed it all.")
def verify(db: str, as_json: bool, checkpoint_file: str | None, public_key: str | None) -> int:
    """Recompute every hash and link from seq 0; name the first bad entry.

    Checks: seq runs 0, 1, 2, … with no gap or repeat; each prev_hash is the previous
    entry_hash; each entry_hash = SHA-256(0x00 || u64be(seq) || prev_hash || payload);
    each row's event_id, type and occurred_at agree with its payload; the head agrees
    with the one recorded by the last append; the Merkle tree matches the entries; every
    stored checkpoint is validly signed, no larger than the ledger and has its root.

    \b
    Examples:
      ledger verify
      ledger verify --db audit.duckdb --json
      ledger verify --checkpoint kept/cp.txt --public-key keys/ledger.vkey

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
    with Store.open(db, read_only=True) as store:
        report = verify_store(store, progress=meter.update, checkpoint=note, public_key=public_key)
    meter.done()
    if as_json:
        echo_json(report.to_dict())
    elif report.ok and report.size == 0:
        click.echo(f"ledger {db} is empty: nothing to verify")
    elif report.ok:
        click.echo(f"ok: {report.size:,} entries verified, head {report.head_hash}")
    else:
        where = "" if report.bad_seq is None else f" at seq {report.bad_seq}"
        click.echo(f"FAILED{where}: {report.reason}", err=True)
    return EXIT_OK if report.ok else EXIT_ERROR


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
