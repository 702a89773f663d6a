"""`ledger verify`: ok with count and head, empty said so, tampering named by seq, exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
from click.testing import CliRunner

from ledger.cli import cli
from tests import factories as f
from tests.conftest import write_jsonl


def make_ledger(tmp_path: Path, db: Path, n: int = 6) -> None:
    evs = [f.action(f"a-{i}", "agent:p", minutes=i) for i in range(n)]
    path = write_jsonl(tmp_path / "in.jsonl", evs)
    assert CliRunner().invoke(cli, ["ingest", str(path), "--db", str(db)]).exit_code == 0


def test_intact_ledger(tmp_path: Path, db_path: Path) -> None:
    make_ledger(tmp_path, db_path)
    result = CliRunner().invoke(cli, ["verify", "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    con = duckdb.connect(str(db_path), read_only=True)
    head = con.execute("SELECT entry_hash FROM entries WHERE seq = 5").fetchall()[0][0]
    con.close()
    assert result.stdout.strip() == f"ok: 6 entries verified, head {head.hex()}"
    as_json = json.loads(CliRunner().invoke(cli, ["verify", "--db", str(db_path), "--json"]).stdout)
    assert (as_json["ok"], as_json["size"], as_json["head_hash"]) == (True, 6, head.hex())


def test_empty_ledger_says_so(tmp_path: Path, db_path: Path) -> None:
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    CliRunner().invoke(cli, ["ingest", str(empty), "--db", str(db_path)])
    result = CliRunner().invoke(cli, ["verify", "--db", str(db_path)])
    assert result.exit_code == 0
    assert "is empty" in result.stdout


def test_tampered_ledger_names_the_seq(tmp_path: Path, db_path: Path) -> None:
    make_ledger(tmp_path, db_path)
    con = duckdb.connect(str(db_path))
    con.execute("UPDATE entries SET payload = payload || '\\x00'::BLOB WHERE seq = 3")
    con.close()
    result = CliRunner().invoke(cli, ["verify", "--db", str(db_path)])
    assert result.exit_code == 1
    assert result.stderr.startswith("FAILED at seq 3: entry_hash does not equal")
    report = json.loads(CliRunner().invoke(cli, ["verify", "--db", str(db_path), "--json"]).stdout)
    assert (report["ok"], report["bad_seq"]) == (False, 3)


def test_missing_ledger_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["verify", "--db", str(tmp_path / "none.duckdb")])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: no ledger at")


def test_python_m_ledger_verify_exit_codes(tmp_path: Path) -> None:
    db = tmp_path / "l.duckdb"
    make_ledger(tmp_path, db)
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_DB"}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ledger", "verify", "--db", str(db)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    ok = run()
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: 6 entries verified")
    con = duckdb.connect(str(db))
    con.execute("DELETE FROM entries WHERE seq = 2")
    con.close()
    bad = run()
    assert bad.returncode == 1
    assert bad.stderr.startswith("FAILED at seq 2: entry seq 2 is missing")
