"""The `ledger` command: thin click wrappers that open the ledger, call the library, render.

Exit codes: 0 success; 1 error (usage, I/O, not found) or a failed integrity check;
3 some input was quarantined (ingest, emit); 130 interrupted.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import click

from ledger.errors import LedgerError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_QUARANTINED = 3
EXIT_INTERRUPTED = 130


class LedgerGroup(click.Group):
    """Turns every failure into one line on stderr and a documented exit code."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            rv = super().main(args, prog_name or "ledger", complete_var, False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            exc.show()
            sys.exit(EXIT_ERROR)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except LedgerError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except (KeyboardInterrupt, click.Abort):
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:
            sys.stderr.close()
            sys.exit(EXIT_ERROR)
        except Exception as exc:
            if os.environ.get("LEDGER_DEBUG"):
                raise
            click.echo(
                f"error: unexpected {type(exc).__name__}: {exc} "
                "(set LEDGER_DEBUG=1 for a traceback)",
                err=True,
            )
            sys.exit(EXIT_ERROR)
        sys.exit(rv if isinstance(rv, int) else EXIT_OK)


# -- shared options and rendering -------------------------------------------------------------


def db_option(f: F) -> F:
    return click.option(
        "--db",
        "db",
        envvar="LEDGER_DB",
        default="ledger.duckdb",
        show_default=True,
        metavar="PATH",
        help="Ledger file (DuckDB). Env: LEDGER_DB.",
    )(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(f)


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str, ensure_ascii=False))


def render_table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain, aligned text table (no colour, so it pipes and pastes cleanly)."""
    body = [["" if v is None else str(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    out = [line, "  ".join("-" * w for w in widths)]
    out += [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in body
    ]
    return "\n".join(out)


class Progress:
    """A one-line progress meter on a terminal's stderr; silent when stderr is piped."""

    def __init__(self, label: str, enabled: bool | None = None, interval: float = 0.5) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.interval = interval
        self.started = time.monotonic()
        self._last = 0.0
        self._shown = False

    def update(self, done: int, total: int | None = None, extra: str = "") -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < self.interval:
            return
        self._last = now
        rate = done / max(now - self.started, 1e-9)
        of = f"/{total:,}" if total else ""
        click.echo(
            f"\r{self.label}: {done:,}{of} ({rate:,.0f}/s) {extra}".ljust(70), err=True, nl=False
        )
        self._shown = True

    def done(self) -> None:
        if self._shown:
            click.echo("\r" + " " * 70 + "\r", err=True, nl=False)


@click.group(cls=LedgerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="agent-ledger", prog_name="ledger")
def cli() -> None:
    """agent-ledger: a tamper-evident audit ledger of AI-agent delegation lineage.

    \b
    Agents emit delegation and action events; the ledger appends them to a
    hash-chained DuckDB file; investigators trace authority; auditors verify.

    \b
    Examples:
      ledger demo                       # everything end to end, nothing to set up
      ledger ingest examples/events.jsonl && ledger verify
      ledger schema show > audit_event.avsc

    Exit codes: 0 ok, 1 error or failed check, 3 some input quarantined, 130 interrupted.
    """


# -- ingest / verify / schema ------------------------------------------------------------------


@cli.command()
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
    from ledger.ingest import ingest as run_ingest
    from ledger.ingest import read_lines
    from ledger.store import Store

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


@cli.command()
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
    from ledger.store import Store
    from ledger.verify import verify_store

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


@cli.group()
def schema() -> None:
    """The Avro wire contract, for producers in any language."""


@schema.command("show")
def schema_show() -> None:
    """Print the current AuditEvent Avro schema as JSON.

    \b
    Example:
      ledger schema show > audit_event.avsc
    """
    from ledger.codec import current_schema

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
    from ledger.codec import default_codec

    codec = default_codec()
    if as_json:
        echo_json({"fingerprint": codec.fingerprint.hex(), "known": codec.known_fingerprints})
    else:
        click.echo(codec.fingerprint.hex())


def _register_commands() -> None:
    """Attach the command modules; each keeps its own concern (stream, investigate, audit)."""
    from ledger import cli_audit, cli_demo, cli_investigate, cli_stream

    for module in (cli_stream, cli_investigate, cli_audit, cli_demo):
        for command in module.COMMANDS:
            cli.add_command(command)


_register_commands()


def main() -> None:
    cli.main(prog_name="ledger")
