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
    unpinned = run("verify-proof", d / "p.json")
    assert unpinned.exit_code == 1 and "no trusted key" in unpinned.output
    assert "not pinned" in run("verify-proof", d / "p.json", "--self-signed").output

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
    assert run("verify-proof", d / "absent.json", "--self-signed").exit_code == 1


def test_checkpoint_show_prints_the_latest_without_signing(setup: dict[str, Path]) -> None:
    db, keys = setup["db"], setup["keys"]
    none = run("checkpoint", "--show", "--db", db)
    assert none.exit_code == 1
    assert none.output == (
        f"error: no checkpoint is stored in {db} (sign one with `ledger checkpoint --key FILE`)\n"
    )
    assert run("checkpoint", "--db", db, "--key", keys / "ledger.key").exit_code == 0
    vkey = (keys / "ledger.vkey").read_text().strip()
    key_id = "+".join(vkey.split("+")[:2])
    text = run("checkpoint", "--show", "--db", db)
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0].startswith("checkpoint #1 of agent-ledger/ledger: 20 entries, root ")
    assert lines[1] == f"signed by {key_id} (signature valid for the key stored beside it)"
    assert lines[2].startswith("created at ")
    assert "\n".join(lines[4:]).startswith("agent-ledger/ledger\n20\n")
    shown = json.loads(run("checkpoint", "--show", "--db", db, "--json").stdout)
    assert (shown["n"], shown["size"], shown["origin"]) == (1, 20, "agent-ledger/ledger")
    assert shown["signers"] == [
        {"name": "agent-ledger", "key_hash": key_id.split("+")[1], "key_id": key_id,
         "verified": True}
    ]  # fmt: skip
    assert run("checkpoint", "--show", "--db", db, "--key", keys / "ledger.key").exit_code == 1
    again = json.loads(run("checkpoint", "--show", "--db", db, "--json").stdout)
    assert again["n"] == 1  # nothing was signed by showing


def test_prove_consistency_between_any_sizes(setup: dict[str, Path]) -> None:
    db, keys, d = setup["db"], setup["keys"], setup["dir"]
    vkey = keys / "ledger.vkey"
    assert run("ingest", d / "b.jsonl", "--db", db).exit_code == 0  # 30 entries
    assert run("checkpoint", "--db", db, "--key", keys / "ledger.key").exit_code == 0
    for args, sizes in (
        (["0"], (0, 30)),
        (["0", "30"], (0, 30)),
        (["7"], (7, 30)),
        (["12", "30"], (12, 30)),
        (["30", "30"], (30, 30)),
        (["5", "--to", "30"], (5, 30)),
    ):
        res = run("prove", "--consistency", *args, "--db", db, "--out", d / "c.json")
        assert res.exit_code == 0, (args, res.output)
        bundle = json.loads((d / "c.json").read_text())
        assert (bundle["old_size"], bundle["new_size"]) == sizes
        assert bundle["new_checkpoint"] is not None
        assert (bundle["old_checkpoint"] is None) == (sizes[0] != 30)
        ok = run(
            "verify-proof", d / "c.json", "--public-key", vkey, "--origin", "agent-ledger/ledger"
        )
        assert ok.exit_code == 0, (args, ok.output)
    res = run("prove", "--consistency", "3", "9", "--db", db)
    assert res.exit_code == 1
    assert (
        "no stored checkpoint of size 3 or 9, so nothing in the proof would be signed" in res.output
    )
    assert run("prove", "--consistency", "3", "31", "--db", db).exit_code == 1
    clash = run("prove", "--consistency", "3", "30", "--to", "20", "--db", db)
    assert clash.exit_code == 1 and "NEW given twice" in clash.output


def test_verify_proof_pins_the_origin_and_takes_several_keys(setup: dict[str, Path]) -> None:
    """The reported case: a checkpoint of another log, signed by the same key, was accepted."""
    db, keys, d = setup["db"], setup["keys"], setup["dir"]
    other_db = d / "other.duckdb"
    assert run("ingest", d / "b.jsonl", "--db", other_db).exit_code == 0
    for ledger_db in (db, other_db):
        assert run("checkpoint", "--db", ledger_db, "--key", keys / "ledger.key").exit_code == 0
    res = run("prove", "--consistency", "0", "--db", other_db, "--out", d / "other.json")
    assert res.exit_code == 0
    vkey = keys / "ledger.vkey"
    assert run("verify-proof", d / "other.json", "--public-key", vkey).exit_code == 0
    pinned = run("verify-proof", d / "other.json", "--public-key", vkey,
                 "--origin", "agent-ledger/ledger", "--json")  # fmt: skip
    assert pinned.exit_code == 1
    assert json.loads(pinned.output)["reason"] == (
        "new_checkpoint is for the log 'agent-ledger/other', not the pinned origin "
        "'agent-ledger/ledger'"
    )
    assert run("keygen", "--out", d / "spare").exit_code == 0
    two = run("verify-proof", d / "other.json", "--public-key", d / "spare" / "ledger.vkey",
              "--public-key", vkey, "--json")  # fmt: skip
    assert two.exit_code == 0, two.output
    assert json.loads(two.output)["origin"] == "agent-ledger/other"


def readme_rotation(setup: dict[str, Path]) -> dict[str, Path]:
    """The README's "Rotating the signing key", command by command (paths under the test dir)."""
    db, d = setup["db"], setup["dir"]
    old = setup["keys"]  # keys/ledger.key: the key in use so far
    assert run("checkpoint", "--db", db, "--key", old / "ledger.key").exit_code == 0
    # 1. a new key, in a new directory (never over the old one)
    new = d / "keys-2026"
    assert run("keygen", "--out", new, "--name", "agent-ledger-2026").exit_code == 0
    # a checkpoint with the new key alone is refused: it would break the chain of keys
    alone = run("checkpoint", "--db", db, "--key", new / "ledger.key")
    assert alone.exit_code == 1 and "--key OLD --key NEW" in alone.output
    # 2. the handover: one checkpoint signed by both keys
    both = run("checkpoint", "--db", db, "--key", old / "ledger.key", "--key", new / "ledger.key",
               "--out", d / "handover.txt")  # fmt: skip
    assert both.exit_code == 0, both.output
    # 3. the old private key is retired; the new key signs alone from now on
    (old / "ledger.key").unlink()
    assert run("ingest", d / "b.jsonl", "--db", db).exit_code == 0
    env = {"LEDGER_KEY": str(new / "ledger.key")}
    assert run("checkpoint", "--db", db, env=env).exit_code == 0
    return {"old_vkey": old / "ledger.vkey", "new_vkey": new / "ledger.vkey"}


def test_key_rotation_as_the_readme_describes_it(setup: dict[str, Path]) -> None:
    """The reported case: after `keygen` to a new file, `verify --public-key new.vkey` failed on
    the old checkpoints, and --public-key given twice kept only the last."""
    db, d = setup["db"], setup["dir"]
    keys = readme_rotation(setup)
    new_only = run("verify", "--db", db, "--public-key", keys["new_vkey"], "--json")
    assert new_only.exit_code == 0, new_only.output
    details = json.loads(new_only.output)["checkpoint_details"]
    assert [(c["n"], c["size"], len(c["signed_by"])) for c in details] == [
        (1, 20, 1), (2, 20, 2), (3, 30, 1)
    ]  # fmt: skip
    assert details[0]["accepted"].startswith("signed by a key that co-signed checkpoint #2")
    handover = ["verify", "--db", db, "--checkpoint", d / "handover.txt"]
    assert run(*handover, "--public-key", keys["new_vkey"]).exit_code == 0
    old_only = run("verify", "--db", db, "--public-key", keys["old_vkey"])
    assert old_only.exit_code == 1
    assert "checkpoint #3 (size 30) is signed only by agent-ledger-2026+" in old_only.stderr
    both = run("verify", "--db", db, "--public-key", keys["old_vkey"],
               "--public-key", keys["new_vkey"])  # fmt: skip
    assert both.exit_code == 0, both.output
    shown = json.loads(run("checkpoint", "--show", "--db", db, "--json").stdout)
    assert [s["name"] for s in shown["signers"]] == ["agent-ledger-2026"]
    ids = json.loads((d / "ids.json").read_text())
    assert run("prove", ids[3], "--db", db, "--out", d / "p.json").exit_code == 0
    ok = run("verify-proof", d / "p.json", "--public-key", keys["new_vkey"])
    assert ok.exit_code == 0, ok.output
    assert run("prove", "--consistency", "20", "--db", db, "--out", d / "c.json").exit_code == 0
    assert run("verify-proof", d / "c.json", "--public-key", keys["new_vkey"]).exit_code == 0


def test_the_audit_notebook_runs_after_a_rotation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reported case: notebooks/audit.ipynb stopped with an AssertionError after a key
    rotation. Here on a ledger of the demo's events, trusting only the new key."""
    import nbformat
    from nbclient import NotebookClient

    from ledger.demo import scenario

    monkeypatch.delenv("LEDGER_KEY", raising=False)
    monkeypatch.delenv("LEDGER_ORIGIN", raising=False)
    db = tmp_path / "demo-ledger.duckdb"
    events = scenario.events()
    write_jsonl(tmp_path / "a.jsonl", events[:250])
    write_jsonl(tmp_path / "b.jsonl", events[250:])
    assert run("ingest", tmp_path / "a.jsonl", "--db", db).exit_code == 0
    keys = tmp_path / "demo-ledger-keys"
    assert run("keygen", "--out", keys, "--name", "agent-ledger-demo").exit_code == 0
    assert run("checkpoint", "--db", db, "--key", keys / "ledger.key").exit_code == 0
    assert run("keygen", "--out", keys / "2026", "--name", "agent-ledger-demo-2026").exit_code == 0
    handover = run("checkpoint", "--db", db, "--key", keys / "ledger.key",
                   "--key", keys / "2026" / "ledger.key")  # fmt: skip
    assert handover.exit_code == 0, handover.output
    (keys / "ledger.key").unlink()
    assert run("ingest", tmp_path / "b.jsonl", "--db", db).exit_code == 0
    assert run("checkpoint", "--db", db, "--key", keys / "2026" / "ledger.key").exit_code == 0
    monkeypatch.setenv("LEDGER_DB", str(db))
    monkeypatch.setenv("LEDGER_PUBLIC_KEYS", str(keys / "2026" / "ledger.vkey"))
    path = Path(__file__).resolve().parents[2] / "notebooks" / "audit.ipynb"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # fmt: skip
    out = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "trusted key: agent-ledger-demo-2026+" in out
    assert "signed by a key that co-signed checkpoint #2 with a trusted key" in out
    assert "first bad seq: 100" in out
