"""`ledger sql`: read-only, with table, JSON and CSV output."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner

from ledger.cli import cli
from tests.query.test_ledger import tree
from tests.query.test_rules import build


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build(tmp_path_factory.mktemp("sql") / "ledger.duckdb", tree()))


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_select_json_csv_and_table(db: str) -> None:
    q = "SELECT action_id, occurred_at FROM actions ORDER BY occurred_at LIMIT 2"
    code, out, _ = run("sql", q, "--db", db, "--json")
    assert code == 0
    assert json.loads(out) == [
        {"action_id": "a3", "occurred_at": "2026-03-23T10:05:00Z"},
        {"action_id": "a2", "occurred_at": "2026-03-23T10:06:00Z"},
    ]
    code, out, _ = run("sql", q, "--db", db, "--csv")
    assert list(csv.reader(io.StringIO(out))) == [
        ["action_id", "occurred_at"],
        ["a3", "2026-03-23T10:05:00Z"],
        ["a2", "2026-03-23T10:06:00Z"],
    ]
    code, out, _ = run("sql", q, "--db", db)
    assert out.splitlines()[0].split() == ["action_id", "occurred_at"]


@pytest.mark.parametrize(
    "query",
    [
        "DELETE FROM entries",
        "UPDATE actions SET outcome = 'failed'",
        "INSERT INTO principals SELECT * FROM principals",
        "ATTACH '/tmp/other.duckdb' AS other",
        "COPY entries TO '/tmp/entries.csv'",
        "INSTALL httpfs",
    ],
)
def test_writes_are_refused_with_one_line(db: str, query: str) -> None:
    code, out, err = run("sql", query, "--db", db)
    assert code == 1 and out == ""
    assert err.startswith("error: refused:") and err.count("\n") == 1
    assert run("sql", "SELECT count(*) AS n FROM entries", "--db", db, "--json")[1].count('"n": 18')


def test_bad_sql_is_one_line(db: str) -> None:
    code, _, err = run("sql", "SELEC nonsense", "--db", db)
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1
