"""`ledger blast-radius`: JSON shape and usage errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ledger.cli import cli
from tests.query.test_ledger import tree
from tests.query.test_rules import build


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build(tmp_path_factory.mktemp("blast") / "ledger.duckdb", tree()))


def test_blast_radius_json(db: str) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "blast-radius",
            "--delegation",
            "d2",
            "--until",
            "2026-03-23T10:10:00Z",
            "--db",
            db,
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    assert set(r) >= {
        "delegations",
        "principals",
        "credentials",
        "actions",
        "resources",
        "still_active",
    }
    assert r["delegations"] == ["d2", "d3"]
    assert r["actions"] == ["a2", "a3"]
    assert r["still_active"] == {"delegations": ["d2", "d3"], "credentials": ["k1"]}


def test_blast_radius_principal_since_and_text(db: str) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "blast-radius",
            "--principal",
            "agent:planner",
            "--since",
            "2026-03-23T10:06:00",
            "--db",
            db,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "blast radius of principal agent:planner" in result.stdout
    assert "a-late, a1, a2" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["blast-radius"],
        ["blast-radius", "--principal", "a", "--credential", "b"],
        ["blast-radius", "--delegation", "nope"],
        ["blast-radius", "--principal", "agent:nobody"],
        ["blast-radius", "--delegation", "d1", "--since", "yesterday"],
    ],
)
def test_bad_subjects_fail_cleanly(db: str, args: list[str]) -> None:
    result = CliRunner().invoke(cli, [*args, "--db", db])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
