"""`ledger keygen / checkpoint / prove / verify-proof` and `verify --checkpoint`, end to end."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ledger.cli import cli
from ledger.cli.audit import COMMANDS
from tests import factories as f
from tests.conftest import write_jsonl


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


@pytest.fixture
def setup(tmp_path: Path, db_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.delenv("LEDGER_KEY", raising=False)
    monkeypatch.delenv("LEDGER_ORIGIN", raising=False)
    events = [f.principal(f"agent:{i}") for i in range(30)]
    write_jsonl(tmp_path / "a.jsonl", events[:20])
    write_jsonl(tmp_path / "b.jsonl", events[20:])
    assert run("ingest", tmp_path / "a.jsonl", "--db", db_path).exit_code == 0
    assert run("keygen", "--out", tmp_path / "keys").exit_code == 0
    ids = [e["event_id"] for e in events]
    (tmp_path / "ids.json").write_text(json.dumps(ids))
    return {"db": db_path, "keys": tmp_path / "keys", "dir": tmp_path}


def test_commands_are_registered_with_examples() -> None:
    names = {c.name for c in COMMANDS}
    assert names == {"keygen", "checkpoint", "prove", "verify-proof"}
    for name in names:
        out = run(name, "--help").output
        assert "Examples:" in out, name


def test_keygen_writes_a_private_key_and_a_vkey(setup: dict[str, Path]) -> None:
    keys = setup["keys"]
    assert stat.S_IMODE((keys / "ledger.key").stat().st_mode) == 0o600
    assert (keys / "ledger.key").read_text().startswith("PRIVATE+KEY+agent-ledger+")
    assert (keys / "ledger.vkey").read_text().startswith("agent-ledger+")
    again = run("keygen", "--out", keys)
    assert again.exit_code == 1
    assert "already exists" in again.output
    named = run("keygen", "--out", setup["dir"] / "k2", "--name", "corp.example/ledger", "--json")
    assert json.loads(named.output)["public_key"].startswith("corp.example/ledger+")


def test_checkpoint_prove_and_verify_proof(setup: dict[str, Path]) -> None:
    db, keys, d = setup["db"], setup["keys"], setup["dir"]
    ids = json.loads((d / "ids.json").read_text())
    key = keys / "ledger.key"
    vkey = keys / "ledger.vkey"
    res = run("checkpoint", "--db", db, "--key", key, "--out", d / "cp20.txt")
    assert res.exit_code == 0, res.output
    note = (d / "cp20.txt").read_text()
    assert note.startswith("agent-ledger/ledger\n20\n")
    # deterministic: same ledger, key and origin give the same signed note
    again = run("checkpoint", "--db", db, "--json", env={"LEDGER_KEY": str(key)})
    assert json.loads(again.output)["note"] == note

    res = run("prove", ids[4], "--db", db, "--out", d / "p.json")
    assert res.exit_code == 0, res.output
    bundle = json.loads((d / "p.json").read_text())
    assert (bundle["seq"], bundle["tree_size"], bundle["checkpoint"]) == (4, 20, note)
    ok = run("verify-proof", d / "p.json", "--public-key", vkey)
    assert ok.exit_code == 0 and "pinned key" in ok.output
    assert "not pinned" in run("verify-proof", d / "p.json").output

    other = run("keygen", "--out", d / "other")
    assert other.exit_code == 0
    bad = run("verify-proof", d / "p.json", "--public-key", d / "other" / "ledger.vkey", "--json")
    assert bad.exit_code == 1
    assert json.loads(bad.output) == {
        "ok": False,
        "reason": "the bundle's public_key is not the pinned key",
    }

    assert run("ingest", d / "b.jsonl", "--db", db).exit_code == 0
    missing = run("prove", ids[25], "--db", db, "--out", d / "q.json")
    assert missing.exit_code == 1
    assert missing.output.strip().count("\n") == 0
    assert "no checkpoint covers seq 25" in missing.output
    signed = run("prove", ids[25], "--db", db, "--key", key, "--out", d / "q.json")
    assert signed.exit_code == 0, signed.output
    assert json.loads((d / "q.json").read_text())["tree_size"] == 30

    res = run("prove", "--consistency", "20", "--db", db, "--out", d / "c.json", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["tree_size"] == 30
    c = json.loads((d / "c.json").read_text())
    assert (c["old_size"], c["new_size"], c["old_checkpoint"]) == (20, 30, note)
    assert run("verify-proof", d / "c.json", "--public-key", vkey).exit_code == 0

    res = run("verify", "--db", db, "--checkpoint", d / "cp20.txt", "--public-key", vkey, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["checkpoints"] == 2 and "given checkpoint" in report["checks"]


def test_usage_errors_are_one_line(setup: dict[str, Path]) -> None:
    db, d = setup["db"], setup["dir"]
    both = run("prove", "x", "--consistency", "1", "--db", db)
    assert both.exit_code == 1 and "either EVENT_ID or --consistency" in both.output
    nokey = run("checkpoint", "--db", db)
    assert nokey.exit_code == 1
    assert (
        nokey.output
        == "error: no signing key: pass --key FILE or set LEDGER_KEY (see `ledger keygen`)\n"
    )
    unknown = run("prove", "nope", "--db", db, "--out", d / "x.json")
    assert unknown.output == "error: no event 'nope' in the ledger\n"
    assert run("verify-proof", d / "absent.json").exit_code == 1
