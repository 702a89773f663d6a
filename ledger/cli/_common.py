"""What every `ledger` command shares: exit codes, the error boundary, options, rendering.

Exit codes: 0 success; 1 error (usage, I/O, not found) or a failed integrity check;
3 some input was quarantined (ingest, emit); 130 interrupted. The stream layer's errors carry
their own (4, 5 consume; 6, 7 emit: README "Exit codes"), which the boundary passes on.
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

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_QUARANTINED",
    "LedgerGroup",
    "Progress",
    "db_option",
    "echo_json",
    "json_option",
    "render_table",
]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_QUARANTINED = 3
EXIT_INTERRUPTED = 130


_PROCESS = {"main": False}


def mark_process_main() -> None:
    """Called by the console script: this process ends when the command returns (a command
    may then keep process-wide settings, such as signal handlers, to the end)."""
    _PROCESS["main"] = True


def is_process_main() -> bool:
    """True in the `ledger` process itself, False when the CLI is invoked in process (tests)."""
    return _PROCESS["main"]


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


def db_option(f: F) -> F:
    return click.option(
        "--db",
        "db",
        envvar="LEDGER_DB",
        default=_configured_db,
        metavar="PATH",
        help="Ledger file (DuckDB). Env: LEDGER_DB. [default: `db` of the config file, "
        "else ledger.duckdb]",
    )(f)


def _configured_db() -> str:
    """The `db` of the config file when it sets one (read only when --db and LEDGER_DB are
    both absent), else the default."""
    from ledger.config import DEFAULT_DB, configured

    return str(configured().get("db", DEFAULT_DB))


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
