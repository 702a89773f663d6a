"""`ledger violations`: JSON array shape, kind filter, exit 0 with findings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.cli import cli
from tests.query.test_rules import build, scenario


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, set[tuple[str, str]]]:
    events, expected = scenario()
    return str(build(tmp_path_factory.mktemp("v") / "ledger.duckdb", events)), expected


def test_violations_json_is_an_array_of_findings(db: tuple[str, set[tuple[str, str]]]) -> None:
    path, expected = db
    result = CliRunner().invoke(cli, ["violations", "--db", path, "--json"])
    assert result.exit_code == 0
    items = json.loads(result.stdout)
    assert isinstance(items, list)
    assert {(v["kind"], v["subject_id"]) for v in items} == expected
    for v in items:
        assert set(v) == {"kind", "subject_id", "event_id", "occurred_at", "principal_id", "detail"}
        assert v["occurred_at"].endswith("Z")


def test_kind_filter_and_thresholds(db: tuple[str, set[tuple[str, str]]]) -> None:
    path, _ = db
    result = CliRunner().invoke(
        cli,
        [
            "violations",
            "--kind",
            "burst",
            "--kind",
            "LONG_LIVED_CREDENTIAL",
            "--credential-max-hours",
            "30",
            "--burst-actions",
            "99",
            "--db",
            path,
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert {(v["kind"], v["subject_id"]) for v in json.loads(result.stdout)} == {
        ("BURST", "agent:burst"),
        ("BURST", "agent:calm"),
        ("LONG_LIVED_CREDENTIAL", "k3"),
        ("LONG_LIVED_CREDENTIAL", "k-long"),
    }


def test_text_table_and_since(db: tuple[str, set[tuple[str, str]]]) -> None:
    path, _ = db
    result = CliRunner().invoke(
        cli, ["violations", "--db", path, "--since", "2026-03-23T10:30:30Z"]
    )
    assert result.exit_code == 0
    assert "REVOKED_DELEGATION" in result.stdout and "violations" in result.stdout
    assert "ex2" not in result.stdout


def test_unknown_kind_is_a_usage_error(db: tuple[str, set[tuple[str, str]]]) -> None:
    result = CliRunner().invoke(cli, ["violations", "--kind", "NOPE", "--db", db[0]])
    assert result.exit_code == 1


def test_empty_ledger_has_no_violations(tmp_path: Path) -> None:
    path = build(tmp_path / "e.duckdb", [])
    result = CliRunner().invoke(cli, ["violations", "--db", str(path)])
    assert result.exit_code == 0 and "no violations" in result.stdout
    result = CliRunner().invoke(cli, ["violations", "--db", str(path), "--json"])
    assert json.loads(result.stdout) == []
