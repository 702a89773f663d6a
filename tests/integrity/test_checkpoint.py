"""Ed25519 keys, C2SP signed notes and checkpoints, the checkpoints table, the Checkpointer."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from ledger.errors import ConfigError, StoreError, VerificationError
from ledger.integrity import checkpoint as ckpt
from ledger.integrity.checkpoint import Checkpointer
from ledger.store import Store, checkpoints, treestore
from ledger.tlog import note as signed_note
from ledger.tlog.note import Signer, Verifier
from tests.store.test_treestore import incoming

# golang.org/x/mod/sumdb/note documentation example (also in C2SP implementations' test suites)
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZ"
    "SNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
# the C2SP signed-note specification's example
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfX"
    "ppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)


def test_reference_keys_and_notes_byte_for_byte() -> None:
    signer = Signer.parse(GO_SKEY)
    assert signer.text == GO_SKEY
    assert signer.verifier.text == GO_VKEY
    assert signed_note.sign_note(GO_TEXT, signer) == GO_NOTE
    assert signed_note.open_note(GO_NOTE, Verifier.parse(GO_VKEY)) == GO_TEXT
    assert (
        signed_note.open_note(SPEC_NOTE, Verifier.parse(SPEC_VKEY))
        == "This is an example message.\n"
    )


def test_notes_that_must_not_verify() -> None:
    v = Verifier.parse(GO_VKEY)
    other = Signer.generate("PeterNeumann")
    cases = {
        GO_NOTE.replace("problem,", "problem;"): "invalid",
        GO_NOTE.replace("\u2014", "-"): "malformed signature line",
        GO_NOTE.rstrip("\n"): "newline",
        GO_TEXT: "no blank line",
        signed_note.sign_note(GO_TEXT, other): r"not signed by PeterNeumann\+c74f20a3",
        GO_NOTE.replace("AM=\n", "AN=\n"): "canonical base64",
        GO_NOTE.replace("problem,", "problem\r"): "control characters",
    }
    for note, why in cases.items():
        with pytest.raises(VerificationError, match=why):
            signed_note.open_note(note, v)


def test_key_parsing_rejects_bad_keys() -> None:
    with pytest.raises(VerificationError, match="hash"):
        Verifier.parse(GO_VKEY.replace("c74f20a3", "c74f20a4"))
    with pytest.raises(VerificationError, match="name\\+hash\\+key"):
        Verifier.parse("no-plus-signs")
    with pytest.raises(ConfigError, match="PRIVATE\\+KEY"):
        Signer.parse(GO_VKEY)
    with pytest.raises(ConfigError, match="key name"):
        Signer.generate("has space")


def test_checkpoint_body_round_trip_and_errors() -> None:
    body = signed_note.checkpoint_body("example.com/log", 42, bytes(range(32)))
    assert body == "example.com/log\n42\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
    assert signed_note.parse_body(body) == ("example.com/log", 42, bytes(range(32)))
    assert signed_note.parse_body(body + "extension line\n")[1] == 42
    for bad in (body.replace("42", "042"), body.replace("42", "-4"), "o\n1\nAAAA\n", "o\n1\n"):
        with pytest.raises(VerificationError):
            signed_note.parse_body(bad)


def test_keygen_files(tmp_path: Path) -> None:
    key, vkey = ckpt.write_keypair(tmp_path / "keys", "example.org/ledger")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    signer = ckpt.load_signer(key)
    assert ckpt.load_verifier(str(vkey)) == signer.verifier
    assert vkey.read_text().startswith("example.org/ledger+")
    with pytest.raises(ConfigError, match="already exists"):
        ckpt.write_keypair(tmp_path / "keys")
    ckpt.write_keypair(tmp_path / "keys", force=True)
    assert ckpt.load_signer(key) != signer


def test_a_private_key_others_can_read_is_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key, _ = ckpt.write_keypair(tmp_path / "keys", "example.org/ledger")
    with caplog.at_level(logging.WARNING, "ledger.integrity.checkpoint"):
        ckpt.load_signer(key)
        assert caplog.records == []
        key.chmod(0o644)
        signer = ckpt.load_signer(key)
    assert signer.verifier.name == "example.org/ledger"
    (record,) = caplog.records
    assert f"private key {key} can be read by others (mode 644)" in record.getMessage()
    assert f"chmod 600 {key}" in record.getMessage()


def test_create_stores_signs_and_is_deterministic(db_path: Path) -> None:
    signer = Signer.generate()
    with Store.open(db_path) as store:
        store.append(incoming(10))
        cp = ckpt.create(store, signer, "agent-ledger/test")
        assert (cp.size, cp.root) == (10, treestore.read_head(store.con).root)
        assert signed_note.open_checkpoint(cp.note, signer.verifier) == cp
        again = ckpt.create(store, signer, "agent-ledger/test")
        assert again.note == cp.note
        assert len(checkpoints.stored(store.con)) == 1
        store.append(incoming(3, "b"))
        ckpt.create(store, signer, "agent-ledger/test")
        rows = checkpoints.stored(store.con)
        assert [(r.n, r.size) for r in rows] == [(1, 10), (2, 13)]
        assert rows[1].vkey == signer.verifier.text
    assert ckpt.default_origin(str(db_path)) == "agent-ledger/ledger"


def test_create_refuses_a_shrunk_or_rewritten_ledger(db_path: Path) -> None:
    signer = Signer.generate()
    with Store.open(db_path) as store:
        store.append(incoming(20))
        ckpt.create(store, signer, "o")
        store.con.execute("UPDATE checkpoints SET size = 25")
        with pytest.raises(VerificationError, match="already covered 25"):
            ckpt.create(store, signer, "o")
        store.con.execute("UPDATE checkpoints SET size = 20, root = ?", [bytes(32)])
        with pytest.raises(VerificationError, match="rewritten"):
            ckpt.create(store, signer, "o")
    with Store.open(db_path, read_only=True) as store, pytest.raises(StoreError):
        ckpt.create(store, signer, "o")


def test_resolve_uses_flags_then_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, _ = ckpt.write_keypair(tmp_path)
    monkeypatch.delenv("LEDGER_KEY", raising=False)
    monkeypatch.delenv("LEDGER_ORIGIN", raising=False)
    with pytest.raises(ConfigError, match="LEDGER_KEY"):
        ckpt.resolve(None, None, "x/audit.duckdb")
    monkeypatch.setenv("LEDGER_KEY", str(key))
    assert ckpt.resolve(None, None, "x/audit.duckdb")[1] == "agent-ledger/audit"
    monkeypatch.setenv("LEDGER_ORIGIN", "corp.example/ledger")
    assert ckpt.resolve(None, None, "x/audit.duckdb")[1] == "corp.example/ledger"
    assert ckpt.resolve(None, "flag/origin", "x/audit.duckdb")[1] == "flag/origin"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_checkpointer_by_count_by_time_and_when_idle(db_path: Path) -> None:
    clock = Clock()
    events = incoming(30)
    with Store.open(db_path) as store:
        cpr = Checkpointer(Signer.generate(), "o", every_entries=10, every_seconds=60, clock=clock)
        assert cpr.maybe_checkpoint(store, idle=True) is None  # nothing to sign
        store.append(events[:4])
        assert cpr.maybe_checkpoint(store) is None  # 4 < 10 and not yet 60 s
        store.append(events[4:12])
        made = cpr.maybe_checkpoint(store)
        assert made is not None and made.size == 12
        store.append(events[12:15])
        clock.now += 30
        assert cpr.maybe_checkpoint(store, idle=True) is None
        clock.now += 31
        made = cpr.maybe_checkpoint(store, idle=True)  # idle, 3 pending, 61 s: due
        assert made is not None and made.size == 15
        clock.now += 500
        assert cpr.maybe_checkpoint(store, idle=True) is None  # idle, nothing pending
        assert [r.size for r in checkpoints.stored(store.con)] == [12, 15]
        # a new Checkpointer (a restarted consumer) counts from the last stored checkpoint
        fresh = Checkpointer(Signer.generate(), "o", every_entries=10, every_seconds=0, clock=clock)
        store.append(events[15:24])
        assert fresh.maybe_checkpoint(store) is None
        store.append(events[24:25])
        assert fresh.maybe_checkpoint(store) is not None
