"""`ledger inventory`: the register of principals, as a table and as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from ledger.cli import cli
from tests import factories as f
from tests.query.test_ledger import tree
from tests.query.test_rules import build


def test_inventory_json_and_table(tmp_path: Path) -> None:
    db = str(build(tmp_path / "i.duckdb", [*tree(), f.action("x", "agent:ghost", "d1")]))
    result = CliRunner().invoke(cli, ["inventory", "--db", db, "--json"])
    assert result.exit_code == 0
    items = {i["principal_id"]: i for i in json.loads(result.stdout)}
    assert len(items) == 6
    for item in items.values():
        assert set(item) >= {
            "principal_id",
            "kind",
            "owner_id",
            "status",
            "delegated_by",
            "delegated_to",
            "tools",
            "resources",
            "live_credentials",
            "unknown",
        }
    assert items["agent:ghost"]["unknown"] is True
    assert items["agent:planner"]["owner_id"] == "user:bob"
    assert items["agent:planner"]["delegated_to"] == ["agent:coder"]
    text = CliRunner().invoke(cli, ["inventory", "--db", db])
    assert text.exit_code == 0
    ghost = next(line for line in text.stdout.splitlines() if line.startswith("agent:ghost"))
    assert "unknown" in ghost
    assert text.stdout.splitlines()[0].startswith("principal")
