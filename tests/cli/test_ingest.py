"""`ledger ingest`: summary, quarantine with file:NAME:LINE, exit codes 0 / 3 / 1."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from ledger.cli import cli
from tests import factories as f
from tests.conftest import write_jsonl

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "events.jsonl"


def good_events() -> list[dict[str, object]]:
    return [f.principal("agent:p"), f.granted("d-1", "user:a", "agent:p"), f.action("a", "agent:p")]


def test_all_lines_accepted_exit_0(tmp_path: Path, db_path: Path) -> None:
    path = write_jsonl(tmp_path / "ok.jsonl", good_events())
    result = CliRunner().invoke(cli, ["ingest", str(path), "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    assert "3 appended, 0 duplicates, 0 quarantined" in result.stdout
    again = CliRunner().invoke(cli, ["ingest", str(path), "--db", str(db_path), "--json"])
    assert again.exit_code == 0
    summary = json.loads(again.stdout)
    assert (summary["appended"], summary["duplicates"], summary["size"]) == (0, 3, 3)


def test_bad_lines_are_quarantined_exit_3(tmp_path: Path, db_path: Path) -> None:
    evs: list[dict[str, object] | str] = [*good_events(), "{oops", '{"type": "action.performed"}']
    path = write_jsonl(tmp_path / "mixed.jsonl", evs)
    result = CliRunner().invoke(cli, ["ingest", str(path), "--db", str(db_path)])
    assert result.exit_code == 3, result.output
    assert "3 appended, 0 duplicates, 2 quarantined" in result.stdout
    assert "ledger quarantine --db" in result.stderr
    con = duckdb.connect(str(db_path), read_only=True)
    rows = con.execute("SELECT source, reason FROM quarantine ORDER BY source").fetchall()
    con.close()
    assert [s for s, _ in rows] == [f"file:{path}:4", f"file:{path}:5"]
    assert "not valid JSON" in rows[0][1]
    assert rows[1][1]  # a reason a human can act on


def test_missing_file_exit_1_one_line(tmp_path: Path, db_path: Path) -> None:
    result = CliRunner().invoke(cli, ["ingest", str(tmp_path / "nope.jsonl"), "--db", str(db_path)])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: no such file: {tmp_path / 'nope.jsonl'}"
    assert not db_path.exists()


def test_stdin_and_ledger_db_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "env.duckdb"
    monkeypatch.setenv("LEDGER_DB", str(db))
    text = "".join(json.dumps(e) + "\n" for e in good_events())
    result = CliRunner().invoke(cli, ["ingest", "-"], input=text)
    assert result.exit_code == 0, result.output
    assert db.exists()
    assert f"ledger {db} has 3 entries" in result.stdout


def test_help_has_examples() -> None:
    result = CliRunner().invoke(cli, ["ingest", "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.stdout and "ledger ingest examples/events.jsonl" in result.stdout


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_DB"}
    return subprocess.run(
        [sys.executable, "-m", "ledger", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_python_m_ledger_exit_codes(tmp_path: Path) -> None:
    """The real process: 0 all accepted, 3 some quarantined, 1 missing file (one line)."""
    ok = run("ingest", str(EXAMPLES), "--db", "a.duckdb", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "appended" in ok.stdout
    bad = write_jsonl(tmp_path / "bad.jsonl", [f.principal("agent:q"), "not json at all"])
    mixed = run("ingest", str(bad), "--db", "a.duckdb", cwd=tmp_path)
    assert mixed.returncode == 3, mixed.stderr
    missing = run("ingest", "missing.jsonl", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == ["error: no such file: missing.jsonl"]
    assert not (tmp_path / "ledger.duckdb").exists()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dup_2() -> list[dict[str, object]]:
    """The reported case: `dup-2` sent three times, as three different events."""
    return [
        f.action("a-1", "agent:p", operation="crm:read", event_id="dup-2"),
        f.action("a-2", "agent:p", operation="hr:delete", resource="hr/all", event_id="dup-2"),
        f.retired("agent:p", event_id="dup-2"),
    ]


@pytest.mark.parametrize("batch_size", ["10000", "1"], ids=["one batch", "one event per batch"])
def test_conflicting_duplicates_are_quarantined_exit_3(
    tmp_path: Path, db_path: Path, batch_size: str
) -> None:
    """Regression: this was "2 duplicates, 0 quarantined", exit 0, the bytes recorded nowhere."""
    path = write_jsonl(tmp_path / "dup2.jsonl", dup_2())
    args = ["ingest", str(path), "--db", str(db_path), "--batch-size", batch_size]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 3, result.output
    assert "1 appended, 0 duplicates, 2 quarantined" in result.stdout
    con = duckdb.connect(str(db_path), read_only=True)
    rows = con.execute("SELECT source, reason, raw FROM quarantine ORDER BY rowid").fetchall()
    ((stored,),) = con.execute("SELECT payload FROM entries WHERE event_id = 'dup-2'").fetchall()
    con.close()
    assert [s for s, _, _ in rows] == [f"file:{path}:2", f"file:{path}:3"]
    for _, reason, raw in rows:
        assert reason == (
            f"conflicting duplicate of seq 0: stored payload sha256 {sha(stored)}, "
            f"received sha256 {sha(raw)}"
        )
    assert rows[0][2] != rows[1][2] != stored
    assert b"hr/all" in rows[0][2] and b"principal.retired" in rows[1][2]

    again = CliRunner().invoke(cli, [*args, "--json"])  # a replay: the exact copy is a duplicate
    assert again.exit_code == 3, again.output
    summary = json.loads(again.stdout)
    assert (summary["appended"], summary["duplicates"], summary["quarantined"]) == (0, 1, 2)


def test_exact_repeats_are_silent_duplicates_exit_0(tmp_path: Path, db_path: Path) -> None:
    ev = dup_2()[0]
    path = write_jsonl(tmp_path / "same.jsonl", [ev, ev, dict(reversed(list(ev.items())))])
    result = CliRunner().invoke(cli, ["ingest", str(path), "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    assert "1 appended, 2 duplicates, 0 quarantined" in result.stdout
