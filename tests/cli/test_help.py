"""Every command's help reads well to a newcomer: it runs, explains, and shows an example."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from ledger.cli import cli


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in sorted(group.commands.items()):
        path = (*prefix, name)
        if isinstance(cmd, click.Group):
            out += _commands(cmd, path)
        else:
            out.append(path)
    return out


ALL = _commands(cli)


def test_every_issue_command_is_there() -> None:
    names = {" ".join(p) for p in ALL}
    expected = {"ingest", "verify", "schema show", "schema fingerprint", "emit", "consume",
                "broker", "trace", "blast-radius", "violations", "inventory", "sql", "rebuild",
                "keygen", "checkpoint", "prove", "verify-proof", "demo", "quarantine"}  # fmt: skip
    assert expected <= names


@pytest.mark.parametrize("path", ALL, ids=" ".join)
def test_help_has_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    assert f"ledger {' '.join(path)}" in result.output


def test_top_level_help_lists_exit_codes() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "Exit codes" in result.output
