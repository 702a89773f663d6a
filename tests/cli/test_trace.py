"""`ledger trace`: JSON shape, text, Mermaid and dot graphs, unknown ids."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ledger.cli import cli
from tests import factories as f
from tests.query.test_ledger import tree
from tests.query.test_rules import build


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build(tmp_path_factory.mktemp("trace") / "ledger.duckdb", tree()))


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_trace_json(db: str) -> None:
    code, out, _ = run("trace", "a-late", "--db", db, "--json")
    assert code == 0
    t = json.loads(out)
    assert set(t) >= {"action", "chain", "root_principal", "accountable", "violations"}
    assert [h["delegation_id"] for h in t["chain"]] == ["d3", "d2", "d1"]
    assert t["root_principal"] == "user:alice"
    assert t["chain"][1]["revoked_at"] == f.at(25)
    assert t["chain"][0]["problems"] == ["REVOKED_DELEGATION"]
    assert [(v["kind"], v["subject_id"]) for v in t["violations"]] == [
        ("REVOKED_DELEGATION", "a-late")
    ]
    assert t["action"]["occurred_at"].endswith("Z")
    code2, out2, _ = run("trace", "a-late", "--db", db, "--format", "json")
    assert code2 == 0 and json.loads(out2) == t


def test_trace_text_is_a_readable_table(db: str) -> None:
    code, out, _ = run("trace", "a3", "--db", db)
    assert code == 0
    assert "root principal: user:alice" in out
    assert "policy pol-git" in out
    assert out.count("\nd") >= 3 and "no violations" in out


def test_trace_mermaid_marks_offending_hops(db: str) -> None:
    code, out, _ = run("trace", "a-late", "--db", db, "--format", "mermaid")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "flowchart LR"
    bad = next(line for line in lines if line.strip().startswith("class "))
    marked = bad.split()[1].split(",")
    labels = {line.split("{{")[0].strip(): line for line in lines if "{{" in line}
    assert {labels[n].split('"')[1].split("<br/>")[0] for n in marked if n in labels} == {
        "d3",
        "d2",
    }
    assert any("d1<br/>" in line for line in lines)
    planner = run("trace", "a1", "--db", db, "--format", "mermaid")[1]
    assert "-.->" in planner and "agent:coder" in planner  # the actor's subagent


def test_trace_dot(db: str) -> None:
    code, out, _ = run("trace", "a-late", "--db", db, "--format", "dot")
    assert code == 0
    assert out.startswith("digraph trace {") and out.rstrip().endswith("}")
    assert '"d:d2" [label="d2\\ngit:write\\nREVOKED_DELEGATION"' in out and "color=red" in out
    assert '"user:alice" -> "d:d1" -> "agent:planner";' in out


def test_unknown_action_is_a_one_line_error(db: str) -> None:
    code, out, err = run("trace", "no-such-action", "--db", db)
    assert code == 1 and out == ""
    assert err.strip() == "error: no action 'no-such-action' in the ledger"


def test_help_has_examples() -> None:
    code, out, _ = run("trace", "--help")
    assert code == 0 and "Examples:" in out and "--format" in out
