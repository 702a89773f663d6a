"""`ledger verify`: ok with count and head, empty said so, tampering named by seq, exit 1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner, Result

from ledger.cli import cli
from ledger.tlog import merkle
from tests import factories as f
from tests.conftest import write_jsonl


@pytest.fixture(autouse=True)
def _no_key_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEDGER_KEY", raising=False)
    monkeypatch.delenv("LEDGER_ORIGIN", raising=False)


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
    lines = result.stdout.splitlines()
    assert lines[0] == f"ok: 6 entries verified, head {head.hex()}"
    assert lines[1].startswith("origin agent-ledger/ledger; Merkle root ")
    assert lines[2] == "no checkpoint stored: nothing is signed (`ledger checkpoint --key FILE`)"
    as_json = json.loads(CliRunner().invoke(cli, ["verify", "--db", str(db_path), "--json"]).stdout)
    assert (as_json["ok"], as_json["size"], as_json["head_hash"]) == (True, 6, head.hex())
    assert as_json["origin"] == "agent-ledger/ledger"
    assert as_json["merkle_root_size"] == 6 and as_json["checkpoint_details"] == []


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


def run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_a_failed_verify_json_reports_the_root_it_computed(tmp_path: Path, db_path: Path) -> None:
    make_ledger(tmp_path, db_path)
    con = duckdb.connect(str(db_path))
    hashes = [
        bytes(r[0]) for r in con.execute("SELECT entry_hash FROM entries ORDER BY seq").fetchall()
    ]
    con.execute("UPDATE entries SET payload = payload || '\\x00'::BLOB WHERE seq = 3")
    con.close()
    result = run("verify", "--db", db_path, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["merkle_root"] == merkle.root(hashes[:3]).hex() != merkle.EMPTY_ROOT.hex()
    assert report["merkle_root_size"] == 3
    assert report["merkle_root_basis"].startswith("recomputed from the entry hashes of seq 0..2")
    assert report["origin"] == "agent-ledger/ledger"


def test_the_origin_is_the_one_of_creation_after_a_rename(tmp_path: Path, db_path: Path) -> None:
    """The reported case: a renamed copy got a new origin from its file name."""
    make_ledger(tmp_path, db_path)
    assert run("keygen", "--out", tmp_path / "keys").exit_code == 0
    key = tmp_path / "keys" / "ledger.key"
    assert run("checkpoint", "--db", db_path, "--key", key).exit_code == 0
    copy = tmp_path / "evidence-copy.duckdb"
    shutil.copy(db_path, copy)
    report = json.loads(run("verify", "--db", copy, "--json").stdout)
    assert (report["ok"], report["origin"]) == (True, "agent-ledger/ledger")
    assert "origin agent-ledger/ledger;" in run("verify", "--db", copy).stdout
    make_ledger(tmp_path, copy, 8)  # the copy grows, then is checkpointed
    signed = json.loads(run("checkpoint", "--db", copy, "--key", key, "--json").stdout)
    assert signed["note"].startswith("agent-ledger/ledger\n14\n")
    other = run("checkpoint", "--db", copy, "--key", key, "--origin", "agent-ledger/evidence-copy")
    assert other.exit_code == 1
    assert other.stderr == (
        "error: this ledger's origin is 'agent-ledger/ledger' (fixed when it was created), not "
        "'agent-ledger/evidence-copy': drop --origin / LEDGER_ORIGIN, or sign another ledger\n"
    )
    assert run("verify", "--db", copy, "--origin", "agent-ledger/ledger").exit_code == 0
    pinned = run("verify", "--db", copy, "--origin", "agent-ledger/evidence-copy")
    assert pinned.exit_code == 1 and "not the expected" in pinned.stderr


def test_public_key_with_no_checkpoint_fails(tmp_path: Path, db_path: Path) -> None:
    """The reported case: `verify --public-key K` said ok with nothing signed."""
    make_ledger(tmp_path, db_path)
    assert run("keygen", "--out", tmp_path / "keys").exit_code == 0
    result = run("verify", "--db", db_path, "--public-key", tmp_path / "keys" / "ledger.vkey")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("FAILED: no checkpoint is stored (and none was given)")


def test_public_key_is_repeatable_and_unknown_keys_are_named_by_hash(
    tmp_path: Path, db_path: Path
) -> None:
    make_ledger(tmp_path, db_path)
    for d in ("a", "b", "c"):
        assert run("keygen", "--out", tmp_path / d, "--name", f"corp.example/{d}").exit_code == 0
    vkey = {d: (tmp_path / d / "ledger.vkey").read_text().strip() for d in "abc"}
    assert run("checkpoint", "--db", db_path, "--key", tmp_path / "a" / "ledger.key").exit_code == 0
    both = run("verify", "--db", db_path, "--public-key", vkey["b"], "--public-key", vkey["a"])
    assert both.exit_code == 0, both.output
    assert "trusted key(s): corp.example/b+" in both.stdout
    wrong = run("verify", "--db", db_path, "--public-key", tmp_path / "c" / "ledger.vkey")
    assert wrong.exit_code == 1
    a_id = "+".join(vkey["a"].split("+")[:2])
    assert f"is signed only by {a_id}: not a trusted key" in wrong.stderr
    report = json.loads(run("verify", "--db", db_path, "--public-key", vkey["a"], "--json").stdout)
    (detail,) = report["checkpoint_details"]
    assert detail["signed_by"] == [
        {"name": "corp.example/a", "key_hash": a_id.split("+")[1], "key_id": a_id, "trusted": True}
    ]
