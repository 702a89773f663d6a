"""Only `ingest`, `consume` and `demo` create a ledger, and only where no file exists.

The class of fault: a writer opened on a path it should have refused (a typo, another DuckDB
file) creates or alters a file and then reports success on an empty ledger. Every command is
run on a missing path (it must say "no ledger at PATH", exit 1, and leave no file) and on a
DuckDB file that is not a ledger (it must say so, exit 1, and leave the file byte for byte).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from ledger.cli import cli
from ledger.errors import StoreError
from ledger.integrity.checkpoint import write_keypair
from ledger.store import Store
from tests import factories as f
from tests.conftest import write_jsonl


@pytest.fixture
def key(tmp_path: Path) -> str:
    private, _ = write_keypair(tmp_path / "keys", name="test")
    return str(private)


def commands(key: str, tmp_path: Path) -> dict[str, list[str]]:
    """Every command that opens a ledger file, with the arguments it needs."""
    return {
        "checkpoint": ["checkpoint", "--key", key],
        "rebuild": ["rebuild"],
        "verify": ["verify"],
        "prove-consistency": ["prove", "--consistency", "0", "--key", key],
        "prove-event": ["prove", "ev-1", "--key", key],
        "trace": ["trace", "a-1"],
        "violations": ["violations"],
        "inventory": ["inventory"],
        "sql": ["sql", "SELECT 1"],
        "blast-radius": ["blast-radius", "--principal", "agent:x"],
        "authority": ["authority", "--principal", "agent:x"],
    }


def fingerprint(path: Path) -> tuple[str, ...]:
    """The bytes of the file and every sibling DuckDB writes (WAL), and the directory listing."""
    files = sorted(p for p in path.parent.iterdir() if p.name.startswith(path.name))
    return tuple(f"{p.name}:{hashlib.sha256(p.read_bytes()).hexdigest()}" for p in files)


def foreign_duckdb(path: Path) -> Path:
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE customers (id INTEGER, name VARCHAR)")
    con.execute("INSERT INTO customers VALUES (1, 'acme')")
    con.close()
    return path


@pytest.mark.parametrize(
    "name",
    [
        "checkpoint",
        "rebuild",
        "verify",
        "prove-consistency",
        "prove-event",
        "trace",
        "violations",
        "inventory",
        "sql",
        "blast-radius",
        "authority",
    ],
)
def test_a_command_on_a_missing_ledger_creates_nothing(name: str, key: str, tmp_path: Path) -> None:
    typo = tmp_path / "typo.duckdb"
    args = commands(key, tmp_path)[name]
    result = CliRunner().invoke(cli, [*args, "--db", str(typo)])
    assert result.exit_code == 1, result.output
    assert f"no ledger at {typo}" in result.output
    assert "Traceback" not in result.output
    assert not list(tmp_path.glob("typo*")), "a file was created"


@pytest.mark.parametrize(
    "name",
    [
        "checkpoint",
        "rebuild",
        "verify",
        "prove-consistency",
        "trace",
        "violations",
        "sql",
        "authority",
    ],
)
def test_a_command_on_a_foreign_duckdb_file_touches_nothing(
    name: str, key: str, tmp_path: Path
) -> None:
    other = foreign_duckdb(tmp_path / "crm.duckdb")
    before = fingerprint(other)
    args = commands(key, tmp_path)[name]
    result = CliRunner().invoke(cli, [*args, "--db", str(other)])
    assert result.exit_code == 1, result.output
    assert "not an agent-ledger" in result.output
    assert fingerprint(other) == before


def test_ingest_refuses_a_foreign_duckdb_file(tmp_path: Path) -> None:
    other = foreign_duckdb(tmp_path / "crm.duckdb")
    before = fingerprint(other)
    events = write_jsonl(tmp_path / "in.jsonl", [f.principal("agent:a")])
    result = CliRunner().invoke(cli, ["ingest", str(events), "--db", str(other)])
    assert result.exit_code == 1, result.output
    assert "not an agent-ledger" in result.output
    assert fingerprint(other) == before
    con = duckdb.connect(str(other), read_only=True)
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    con.close()
    assert tables == {"customers"}


def test_ingest_creates_where_no_file_exists_and_extends_a_ledger(tmp_path: Path) -> None:
    db = tmp_path / "new.duckdb"
    runner = CliRunner()
    first = write_jsonl(tmp_path / "a.jsonl", [f.principal("agent:a")])
    second = write_jsonl(tmp_path / "b.jsonl", [f.principal("agent:b")])
    assert runner.invoke(cli, ["ingest", str(first), "--db", str(db)]).exit_code == 0
    assert runner.invoke(cli, ["ingest", str(second), "--db", str(db)]).exit_code == 0
    with Store.open(db, read_only=True) as store:
        assert store.size() == 2


@pytest.mark.parametrize("content", [b"", b"not a database\n"])
def test_a_file_that_is_not_duckdb_is_refused_untouched(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "notes.duckdb"
    path.write_bytes(content)
    events = write_jsonl(tmp_path / "in.jsonl", [f.principal("agent:a")])
    result = CliRunner().invoke(cli, ["ingest", str(events), "--db", str(path)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert path.read_bytes() == content


def test_the_library_creates_only_when_asked(tmp_path: Path) -> None:
    typo = tmp_path / "typo.duckdb"
    with pytest.raises(StoreError, match="no ledger at"):
        Store.open(typo, create=False)
    with pytest.raises(StoreError, match="no ledger at"):
        Store.open(typo, read_only=True)
    assert not typo.exists()
    other = foreign_duckdb(tmp_path / "crm.duckdb")
    before = fingerprint(other)
    with pytest.raises(StoreError, match="not an agent-ledger"):
        Store.open(other)
    assert fingerprint(other) == before
    with Store.open(typo, create=True) as store:
        assert store.size() == 0
    with Store.open(typo, create=False) as store:
        assert store.size() == 0


def test_verify_json_gives_a_verdict_on_stdout_when_it_cannot_run(tmp_path: Path) -> None:
    import json

    typo = tmp_path / "typo.duckdb"
    result = CliRunner().invoke(cli, ["verify", "--db", str(typo), "--json"])
    assert result.exit_code == 1
    verdict = json.loads(result.stdout)
    assert verdict["ok"] is False and "no ledger at" in verdict["error"]
