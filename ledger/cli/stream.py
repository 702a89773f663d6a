"""`ledger emit`, `ledger consume`, `ledger broker`: the Kafka side of the command line."""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import click

from ledger.cli._common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_QUARANTINED,
    db_option,
    echo_json,
    is_process_main,
    json_option,
)
from ledger.errors import LedgerError

__all__ = ["COMMANDS"]

F = TypeVar("F", bound=Callable[..., Any])
MAX_LISTED = 20


#: (flag, setting, help) of the options saying how to reach a secured cluster
SECURITY_OPTIONS = (
    ("--security-protocol", "security_protocol",
     "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL. [default: PLAINTEXT]"),
    ("--sasl-mechanism", "sasl_mechanism", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."),
    ("--sasl-username", "sasl_username", "SASL user name."),
    ("--sasl-password-file", "sasl_password_file",
     "File holding the SASL password (or set LEDGER_SASL_PASSWORD)."),
    ("--ssl-cafile", "ssl_cafile", "CA bundle that verifies the brokers' certificates."),
    ("--ssl-certfile", "ssl_certfile", "Client certificate (PEM), for mutual TLS."),
    ("--ssl-keyfile", "ssl_keyfile", "Client private key (PEM), for mutual TLS."),
)  # fmt: skip


def kafka_options(f: F) -> F:
    """--bootstrap-servers / --topic and the security flags (each also a LEDGER_* variable);
    the security ones reach the command as one `security` dict for `load()`."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        security = {name: kwargs.pop(name) for _, name, _ in SECURITY_OPTIONS}
        return f(*args, security=security, **kwargs)

    g: Any = wrapper
    for flag, name, text in reversed(SECURITY_OPTIONS):
        g = click.option(
            flag, name, default=None, metavar="VALUE", help=f"{text} Env: LEDGER_{name.upper()}."
        )(g)
    g = click.option(
        "--topic",
        default=None,
        metavar="NAME",
        help="Kafka topic. Env: LEDGER_TOPIC. [default: agent-audit-events]",
    )(g)
    return click.option(  # type: ignore[no-any-return]
        "--bootstrap-servers",
        "-b",
        default=None,
        metavar="HOST:PORT[,...]",
        help="Kafka brokers. Env: LEDGER_BOOTSTRAP_SERVERS. [default: localhost:9092]",
    )(g)


def _logging(verbose: bool, level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # ours say it in one line


@click.command()
@click.argument("file", metavar="[FILE|-]", required=False)
@kafka_options
@click.option(
    "--skip-invalid", is_flag=True, help="Send the valid lines even if some are invalid (exit 3)."
)
@click.option(
    "--spool",
    default=None,
    metavar="PATH",
    help="Spool file, or a directory holding one per destination. Env: LEDGER_SPOOL. "
    "[default: ~/.cache/agent-ledger/TOPIC-HASH.spool]",
)
@click.option(
    "--compression",
    type=click.Choice(["none", "gzip", "snappy", "lz4", "zstd"]),
    default=None,
    help="Compress record batches on the wire. Env: LEDGER_COMPRESSION. [default: none]",
)
@click.option(
    "--durability",
    type=click.Choice(["spool", "memory"]),
    default=None,
    help="spool: every batch is fsynced in the spool before the next; memory: written, "
    "fsynced every second. Env: LEDGER_DURABILITY. [default: spool]",
)
@json_option
def emit(
    *,
    file: str | None,
    bootstrap_servers: str | None,
    topic: str | None,
    skip_invalid: bool,
    spool: str | None,
    compression: str | None,
    durability: str | None,
    security: dict[str, Any],
    as_json: bool,
) -> int:
    """Send events from a JSON Lines file (`-` reads stdin) to Kafka as single-object Avro;
    first, whatever waits in the spool of that destination (brokers + topic). Without FILE,
    only the spool is sent.

    Every line is validated first: if any is invalid, nothing is sent and each bad line
    is listed with its number and reason, unless --skip-invalid. Keys are the delegation
    id, else the principal id. Events Kafka does not acknowledge wait in the spool and are
    re-sent by the next `ledger emit` to the same destination. Damaged spool frames are
    moved to SPOOL.bad (offset, reason, bytes) and counted.

    \b
    Examples:
      ledger emit examples/events.jsonl -b localhost:9092
      cat events.jsonl | ledger emit - --topic agent-audit-events --skip-invalid
      ledger emit events.jsonl --compression zstd
      ledger emit -b kafka-1:9092 --topic agent-audit-events   # re-send the spool only

    Exit: 0 all delivered; 3 some lines skipped (--skip-invalid); 6 some events not
    delivered (they wait in the spool); 7 events lost: spool frames damaged (see SPOOL.bad)
    or a spool write failed; 1 invalid input or another error. 7 wins over 6, 6 over 3.
    """
    from ledger.config import load
    from ledger.stream.emitfile import SpoolDamagedError, UndeliveredError, emit_lines
    from ledger.stream.ingest import read_lines

    if file is not None and file != "-" and not os.path.isfile(file):
        raise LedgerError(f"no such file: {file}")
    settings = load(
        bootstrap_servers=bootstrap_servers, topic=topic, spool=spool, compression=compression,
        durability=durability, **security,
    )  # fmt: skip
    _logging(False, settings.log_level)
    lines = read_lines([file]) if file is not None else []
    summary = emit_lines(lines, settings, skip_invalid=skip_invalid)
    if as_json:
        echo_json(summary.to_dict())
    for source, reason in summary.invalid[:MAX_LISTED]:
        click.echo(f"{source.removeprefix('file:')}: {reason}", err=True)
    if len(summary.invalid) > MAX_LISTED:
        click.echo(f"... and {len(summary.invalid) - MAX_LISTED} more invalid lines", err=True)
    if summary.invalid and not skip_invalid:
        raise LedgerError(
            f"{len(summary.invalid)} of {summary.lines} lines are invalid; nothing sent "
            "(fix them, or use --skip-invalid)"
        )
    counts = (
        f"{summary.sent:,} sent, {summary.resent:,} re-sent from the spool, "
        f"{summary.damaged:,} damaged, {summary.unsent:,} unsent"
    )
    if summary.not_written:
        raise SpoolDamagedError(
            f"{counts}: {summary.not_written:,} event(s) were lost to a failed write of spool "
            f"{summary.spool} (see the errors above)"
        )
    if summary.damaged:
        raise SpoolDamagedError(
            f"{counts}: {summary.damaged_regions:,} damaged region(s) of spool {summary.spool} "
            f"lost at least {summary.damaged:,} event(s); their bytes and offsets are in "
            f"{summary.bad_file}"
        )
    if summary.unsent:
        raise UndeliveredError(
            f"{counts}: Kafka {settings.bootstrap_servers} did not take them; they wait in spool "
            f"{summary.spool} ({summary.spool_bytes:,} bytes) and are re-sent first by the next "
            f"`ledger emit` to {settings.topic} on these brokers"
        )
    if not as_json:
        torn = f", {summary.torn:,} torn tail(s) of crashed writes set aside" * bool(summary.torn)
        click.echo(
            f"{counts} to {settings.topic} ({summary.rate:,.0f}/s), "
            f"{summary.skipped:,} invalid lines skipped{torn}"
        )
    return EXIT_QUARANTINED if summary.skipped else EXIT_OK


@click.command()
@kafka_options
@click.option(
    "--group", default=None, help="Consumer group. Env: LEDGER_GROUP. [default: agent-ledger]"
)
@db_option
@click.option(
    "--until-idle",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Exit 0 once caught up and no message arrived for SECONDS (batch jobs, tests).",
)
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="Most events per transaction. Env: LEDGER_BATCH_SIZE. [default: 10000]",
)
@click.option(
    "--decode-workers",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Processes decoding messages beside the consumer (0 = decode in it). "
    "Env: LEDGER_DECODE_WORKERS. [default: 1 with two or more cores, else 0]",
)
@click.option(
    "--key",
    "keys",
    multiple=True,
    metavar="FILE",
    help="Sign checkpoints on the way, and the tail on a clean exit, with this private key "
    "(repeatable: several keys sign together). Env: LEDGER_KEY.",
)
@click.option(
    "--origin",
    default=None,
    metavar="NAME",
    help="The log's origin: fixed when the ledger is created (a new ledger takes this, "
    "else agent-ledger/<db stem>); given for an existing ledger, it must be that one, or "
    "consume refuses to start. Env: LEDGER_ORIGIN.",
)
@click.option(
    "--checkpoint-every",
    type=int,
    default=10_000,
    show_default=True,
    metavar="N",
    help="With --key: checkpoint after N new entries (0 = off).",
)
@click.option(
    "--checkpoint-interval",
    type=float,
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="With --key: checkpoint pending entries after SECONDS, idle or not (0 = off).",
)
@click.option(
    "--isolation-level",
    type=click.Choice(["read_committed", "read_uncommitted"]),
    default=None,
    help="read_committed never takes records of aborted Kafka transactions. "
    "Env: LEDGER_ISOLATION_LEVEL. [default: read_committed]",
)
@click.option(
    "--memory-limit",
    default=None,
    metavar="SIZE",
    help="DuckDB memory limit of the consumer, e.g. 512MB, 2GB. Env: LEDGER_MEMORY_LIMIT. "
    "[default: 512MB]",
)
@click.option(
    "--schema-registry",
    default=None,
    metavar="URL",
    help="Schema Registry resolving the schema ids of values in the Confluent wire format "
    "(GET URL/schemas/ids/ID). Env: LEDGER_SCHEMA_REGISTRY.",
)
@click.option(
    "--schema-registry-username",
    default=None,
    metavar="USER",
    help="Basic-auth user of the registry. Env: LEDGER_SCHEMA_REGISTRY_USERNAME.",
)
@click.option(
    "--schema-registry-password-file",
    default=None,
    metavar="FILE",
    help="File holding the registry password (or set LEDGER_SCHEMA_REGISTRY_PASSWORD). "
    "Env: LEDGER_SCHEMA_REGISTRY_PASSWORD_FILE.",
)
@click.option(
    "--schema-registry-cafile",
    default=None,
    metavar="FILE",
    help="CA bundle verifying an https registry. Env: LEDGER_SCHEMA_REGISTRY_CAFILE. "
    "[default: system CAs]",
)
@click.option(
    "--schema-cache",
    default=None,
    metavar="FILE",
    help="Where schemas fetched from the registry are kept, so they resolve offline later. "
    "Env: LEDGER_SCHEMA_CACHE. [default: ~/.cache/agent-ledger/schema-registry-HASH.json]",
)
@click.option(
    "--schema-dir",
    default=None,
    metavar="DIR",
    help="Resolve schema ids offline from DIR/ID.avsc files exported from a registry "
    "(instead of --schema-registry). Env: LEDGER_SCHEMA_DIR.",
)
@click.option(
    "--reset-offsets",
    type=click.Choice(["earliest", "stored"]),
    default=None,
    help="After exit code 5 (the topic is not the one the ledger read): 'earliest' reads it "
    "all again (repeats are deduped), 'stored' resumes at the stored offsets anyway.",
)
@click.option("--verbose", "-v", is_flag=True, help="Also log the Kafka client's own messages.")
@json_option
def consume(
    *,
    bootstrap_servers: str | None,
    topic: str | None,
    group: str | None,
    db: str,
    until_idle: float | None,
    batch_size: int | None,
    decode_workers: int | None,
    keys: tuple[str, ...],
    origin: str | None,
    checkpoint_every: int,
    checkpoint_interval: float,
    isolation_level: str | None,
    memory_limit: str | None,
    schema_registry: str | None,
    schema_registry_username: str | None,
    schema_registry_password_file: str | None,
    schema_registry_cafile: str | None,
    schema_cache: str | None,
    schema_dir: str | None,
    reset_offsets: Literal["earliest", "stored"] | None,
    verbose: bool,
    security: dict[str, Any],
    as_json: bool,
) -> int:
    """Append events from Kafka to the ledger, exactly once, until Ctrl-C or SIGTERM.

    Each batch (entries, quarantined messages, next offsets) is one DuckDB
    transaction; on every partition assignment the consumer resumes from the
    offsets stored in the ledger, whatever Kafka's group offsets say. Malformed
    messages go to the `quarantine` table as `kafka:TOPIC/PARTITION/OFFSET`.
    Progress (events/s, lag per partition) is logged to stderr every few seconds;
    an unreachable broker is retried with backoff, and said so. Failures no retry
    can cure (a codec, credentials or authorization the broker refuses, a topic
    that does not exist: consume never creates one) stop the run with one line.
    With --until-idle, a broker silent for that long stops it too. Gzip, snappy,
    lz4 and zstd batches are all read. Decoding runs in a worker process on the
    second core, one batch ahead of the append.

    \b
    Examples:
      ledger consume -b localhost:9092 --db audit.duckdb
      ledger consume --until-idle 5 && ledger verify
      ledger consume --key keys/ledger.key --checkpoint-every 50000
      ledger consume -b kafka:9093 --security-protocol SASL_SSL \\
        --sasl-mechanism SCRAM-SHA-512 --sasl-username ledger --sasl-password-file pw.txt

    On resuming, the last record read from each partition is fetched again and
    compared with what the ledger read: a recreated topic, or a broker that lost
    its data, stops the run (exit 5) instead of skipping records silently.

    Values in Avro single-object encoding and in the Confluent wire format (0x00,
    schema id, body) are both read. Schema ids resolve through --schema-registry
    (cached) or --schema-dir; the ledger keeps each schema with the entries. An
    unknown or unusable id is quarantined; an unreachable registry is waited for.

    Exit: 0 stopped by signal or idle, 1 error, 4 Kafka failure that no retry cures
    (or no broker answered within --until-idle), 5 the topic is not the one the
    ledger read (see --reset-offsets).
    """
    from ledger.config import load
    from ledger.integrity.checkpoint import Checkpointer
    from ledger.stream.consumer import StopSignals
    from ledger.stream.consumer import consume as run_consume

    # from here to the exit, SIGINT/SIGTERM stop the run cleanly, never as an interruption
    with StopSignals(restore=not is_process_main()) as signals:
        settings = load(
            bootstrap_servers=bootstrap_servers, topic=topic, group=group, db=db,
            batch_size=batch_size, decode_workers=decode_workers,
            key=keys[0] if keys else None, origin=origin, isolation_level=isolation_level,
            memory_limit=memory_limit, schema_registry=schema_registry,
            schema_registry_username=schema_registry_username,
            schema_registry_password_file=schema_registry_password_file,
            schema_registry_cafile=schema_registry_cafile, schema_cache=schema_cache,
            schema_dir=schema_dir, **security,
        )  # fmt: skip
        _logging(verbose, settings.log_level)
        checkpointer = (
            Checkpointer.from_settings(settings, checkpoint_every, checkpoint_interval, keys)
            if settings.key
            else None
        )
        stats = run_consume(
            settings,
            until_idle=until_idle,
            checkpointer=checkpointer,
            reset_offsets=reset_offsets,
            signals=signals,
        )
        if as_json:
            echo_json(stats.to_dict())
        else:
            click.echo(
                f"{stats.received:,} messages: {stats.appended:,} appended, "
                f"{stats.duplicates:,} duplicates, {stats.quarantined:,} quarantined; "
                f"ledger {settings.db} has {stats.size:,} entries"
            )
        return EXIT_OK


@click.command()
@click.option("--port", type=int, default=None, help="Port on 127.0.0.1. [default: a free one]")
def broker(port: int | None) -> int:
    """Run the embedded development broker (Tansu, memory-only) until Ctrl-C.

    Everything it holds is lost when it stops: for development and demos only.
    Production points --bootstrap-servers at a real Kafka cluster.

    \b
    Examples:
      ledger broker --port 9092
      ledger consume -b 127.0.0.1:9092 --until-idle 5

    Exit: 0 after Ctrl-C or SIGTERM, 1 if it cannot start.
    """
    from ledger.stream.broker import EmbeddedBroker

    stop = {"now": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with EmbeddedBroker(port=port) as embedded:
        click.echo(f"embedded broker (memory-only) pid {embedded.pid}")
        click.echo(embedded.bootstrap_servers)
        sys.stdout.flush()
        while not stop["now"]:
            if not embedded.running():
                click.echo("error: the broker exited", err=True)
                return EXIT_ERROR
            time.sleep(0.2)
    click.echo("broker stopped", err=True)
    return EXIT_OK


COMMANDS = [emit, consume, broker]
