"""The `ledger` command: thin click wrappers that open the ledger, call the library, render.

The group imports every command module (`core`, `stream`, `investigate`, `quarantine`,
`audit`, `demo`); none of them imports this one. Each command imports what it calls only when
it runs, so `ledger --help` loads neither DuckDB nor Kafka. Exit codes are in `ledger.cli._common`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import click

from ledger.cli import audit, core, demo, investigate, quarantine, stream
from ledger.cli._common import LedgerGroup, mark_process_main

__all__ = ["cli", "main"]


def _to_env(name: str) -> Callable[[click.Context, click.Parameter, str | None], None]:
    """A root flag that every command's settings see: it sets the `LEDGER_*` variable, which
    flags of the command itself still override."""

    def callback(_ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        if value is not None:
            os.environ[name] = value

    return callback


@click.group(cls=LedgerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="agent-ledger", prog_name="ledger")
@click.option(
    "--config",
    metavar="FILE",
    expose_value=False,
    is_eager=True,
    callback=_to_env("LEDGER_CONFIG"),
    help="TOML file of settings (keys as in the README's Configuration table). "
    "Env: LEDGER_CONFIG. [default: ./ledger.toml when present]",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    expose_value=False,
    callback=_to_env("LEDGER_LOG_LEVEL"),
    help="Logging of consume and broker. Env: LEDGER_LOG_LEVEL. [default: INFO]",
)
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

      ledger --config prod.toml consume --until-idle 5

    Exit codes: 0 ok, 1 error or failed check, 3 some input quarantined, 4 Kafka failure
    that no retry cures (consume), 5 the topic is not the one the ledger read (consume),
    6 events wait in the spool, 7 events lost (emit), 130 interrupted.
    """


for _module in (core, stream, investigate, quarantine, audit, demo):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    """The console script `ledger` (and `python -m ledger`)."""
    mark_process_main()
    cli.main(prog_name="ledger")
