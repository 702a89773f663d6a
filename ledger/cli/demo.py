"""`ledger demo`: the README's first command."""

from __future__ import annotations

import time

import click

from ledger.cli._common import echo_json, json_option

__all__ = ["COMMANDS"]


@click.command()
@click.option("--db", default="demo-ledger.duckdb", show_default=True, metavar="PATH",
              help="Ledger file to create or extend.")  # fmt: skip
@click.option("--keep-broker", is_flag=True,
              help="Leave the embedded broker running afterwards, until Ctrl-C.")  # fmt: skip
@json_option
def demo(db: str, keep_broker: bool, as_json: bool) -> None:
    """Run everything end to end on embedded defaults and explain an incident.

    Starts a development Kafka broker, simulates an organisation whose agents emit
    delegation and action events through the real Emitter, consumes them into a
    ledger, signs a checkpoint, verifies it, then answers: who authorized the
    incident, what was wrong at which hop, who is accountable, what else the
    compromised agent reached. Running it again on the same file adds nothing:
    every event is a duplicate.

    \b
    Examples:
      ledger demo
      ledger demo --db /tmp/demo.duckdb --json > demo.json
      ledger demo --keep-broker        # then point `ledger emit` at the printed address
    """
    from ledger import demo as demo_lib
    from ledger.stream.broker import EmbeddedBroker

    def say(msg: str) -> None:
        click.echo(msg, err=True)

    def hold(broker: EmbeddedBroker) -> None:
        say(f"broker still running on {broker.bootstrap_servers} (pid {broker.pid}); "
            "Ctrl-C to stop it")  # fmt: skip
        try:
            while broker.running():
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass

    report = demo_lib.run(db, say=say, hold=hold if keep_broker else None)
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(demo_lib.render(report))


COMMANDS = [demo]
