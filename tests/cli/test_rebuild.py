"""`ledger rebuild`: answers identical before and after."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from ledger.cli import cli
from tests.query.test_ledger import tree
from tests.query.test_rules import build


def test_rebuild_keeps_answers(tmp_path: Path) -> None:
    db = str(build(tmp_path / "r.duckdb", tree()))
    runner = CliRunner()

    def answers() -> list[str]:
        return [
            runner.invoke(cli, [*args, "--db", db, "--json"]).stdout
            for args in (
                ["violations"],
                ["trace", "a-late"],
                ["inventory"],
                ["blast-radius", "--principal", "user:alice", "--until", "2026-03-23T10:10:00Z"],
            )
        ]

    before = answers()
    result = runner.invoke(cli, ["rebuild", "--db", db, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["entries"] == len(tree())
    assert answers() == before
    text = runner.invoke(cli, ["rebuild", "--db", db])
    assert text.exit_code == 0 and "rebuilt projections from 18 entries" in text.stdout


def test_rebuild_of_a_missing_ledger_fails(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["rebuild", "--db", str(tmp_path / "nope" / "x.duckdb")])
    assert result.exit_code == 1
