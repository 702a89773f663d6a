"""`ledger quarantine`: what the ledger refused, with its bytes, for investigation and replay.

Thin: parse the options, open the ledger read-only, call `ledger.store.quarantine` (list, and
export when asked), render. Listing reads metadata and a 32-byte preview per row; `--export`
also reads every listed row's raw bytes, a thousand rows at a time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ledger.cli._common import EXIT_OK, db_option, echo_json, json_option, render_table
from ledger.errors import ConfigError

if TYPE_CHECKING:
    from ledger.store.quarantine import Quarantined

__all__ = ["COMMANDS"]


@click.command("quarantine")
@click.option("--reason", metavar="TEXT", help="Only rows whose reason contains TEXT (any case).")
@click.option("--since", metavar="TIME",
              help="Only rows received at or after TIME (ISO 8601; naive means UTC).")  # fmt: skip
@json_option
@click.option("--nl", "as_nl", is_flag=True, help="Print one JSON object per line (NDJSON).")
@click.option("--export", "export_dir", metavar="DIR",
              help="Write each row's raw bytes to DIR (NNNNNN-<source>.bin) with a manifest "
              "DIR/index.jsonl (name, source, reason, received_at, size, sha256).")  # fmt: skip
@click.option("--force", is_flag=True, help="With --export: overwrite files already in DIR.")
@db_option
def quarantine_cmd(
    reason: str | None,
    since: str | None,
    as_json: bool,
    as_nl: bool,
    export_dir: str | None,
    force: bool,
    db: str,
) -> int:
    """List the input the ledger quarantined instead of appending it.

    Undecodable messages, invalid events, and conflicting duplicates (an event_id
    the ledger already holds, arriving with different bytes; the reason names the
    seq of the entry kept and both SHA-256s). Each row: when it was received,
    where from (file:NAME:LINE or kafka:TOPIC/PARTITION/OFFSET), its size in
    bytes, its first bytes (non-printable ones as \\xNN) and the reason.
    --export writes the exact bytes for replay once the cause is fixed; it never
    overwrites a file unless --force. Opens the ledger read-only.

    \b
    Examples:
      ledger quarantine
      ledger quarantine --reason "conflicting duplicate" --json
      ledger quarantine --since 2026-03-23T00:00:00Z --nl | jq .source
      ledger quarantine --reason "not valid JSON" --export replay/

    Exit: 0 listed (also when nothing matches), 1 error (no ledger, bad --since,
    an export file already there).
    """
    from ledger.store import Store
    from ledger.store.quarantine import MANIFEST, export, parse_time, quarantined

    if as_json and as_nl:
        raise ConfigError("use one of --json and --nl")
    if force and not export_dir:
        raise ConfigError("--force only applies with --export DIR")
    after = None
    if since is not None:
        try:
            after = parse_time(since)
        except ConfigError as exc:
            raise ConfigError(f"--since: {exc}") from exc
    with Store.open(db, read_only=True) as store:
        rows = quarantined(store.con, reason=reason, since=after)
        files = export(store.con, rows, export_dir, force) if export_dir else []
    names = [p.name for p in files]
    dicts = [
        {**row.to_dict(), **({"file": names[i]} if export_dir else {})}
        for i, row in enumerate(rows)
    ]
    if as_json:
        echo_json(dicts)
    elif as_nl:
        for d in dicts:
            click.echo(json.dumps(d, default=str, ensure_ascii=False))
    else:
        click.echo(_table(rows) if rows else "no quarantined input" + _matching(reason, since))
    if export_dir:
        manifest = Path(export_dir) / MANIFEST
        click.echo(f"exported {len(files):,} rows to {export_dir} (manifest {manifest})",
                   err=as_json or as_nl)  # fmt: skip
    return EXIT_OK


def _matching(reason: str | None, since: str | None) -> str:
    given = ([f"--reason {reason!r}"] if reason is not None else []) + (
        [f"--since {since}"] if since is not None else []
    )
    return " matches " + " ".join(given) if given else ""


def _table(rows: list[Quarantined]) -> str:
    return render_table(
        (
            (
                r.number,
                r.received_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
                r.source,
                "" if r.size is None else f"{r.size:,}",
                "(no bytes)" if r.size is None else r.preview,
                " ".join(r.reason.split()),  # one line per row
            )
            for r in rows
        ),
        ["#", "received_at", "source", "size", "first bytes", "reason"],
    )


COMMANDS = [quarantine_cmd]
