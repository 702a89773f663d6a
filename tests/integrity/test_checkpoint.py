"""Ed25519 keys, C2SP signed notes and checkpoints, the checkpoints table, the Checkpointer."""

from __future__ import annotations

import logging
import re
import shutil
import stat
from pathlib import Path

import pytest

from ledger.errors import ConfigError, NotFoundError, StoreError, VerificationError
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
        cp = ckpt.create(store, signer)
        assert (cp.size, cp.root) == (10, treestore.read_head(store.con).root)
        assert cp.origin == "agent-ledger/ledger"  # the ledger's own, fixed at creation
        assert signed_note.open_checkpoint(cp.note, signer.verifier) == cp
        again = ckpt.create(store, signer, "agent-ledger/ledger")
        assert again.note == cp.note
        assert len(checkpoints.stored(store.con)) == 1
        store.append(incoming(3, "b"))
        ckpt.create(store, signer)
        rows = checkpoints.stored(store.con)
        assert [(r.n, r.size) for r in rows] == [(1, 10), (2, 13)]
        assert rows[1].vkey == signer.verifier.text
    assert ckpt.default_origin(str(db_path)) == "agent-ledger/ledger"


def test_create_refuses_a_shrunk_or_rewritten_ledger(db_path: Path) -> None:
    signer = Signer.generate()
    with Store.open(db_path) as store:
        store.append(incoming(20))
        ckpt.create(store, signer)
        store.con.execute("UPDATE checkpoints SET size = 25")
        with pytest.raises(VerificationError, match="already covered 25"):
            ckpt.create(store, signer)
        store.con.execute("UPDATE checkpoints SET size = 20, root = ?", [bytes(32)])
        with pytest.raises(VerificationError, match="rewritten"):
            ckpt.create(store, signer)
    with Store.open(db_path, read_only=True) as store, pytest.raises(StoreError):
        ckpt.create(store, signer)


def test_resolve_uses_flags_then_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, _ = ckpt.write_keypair(tmp_path)
    monkeypatch.delenv("LEDGER_KEY", raising=False)
    monkeypatch.delenv("LEDGER_ORIGIN", raising=False)
    with pytest.raises(ConfigError, match="LEDGER_KEY"):
        ckpt.resolve(None, None)
    monkeypatch.setenv("LEDGER_KEY", str(key))
    signers, origin = ckpt.resolve(None, None)
    assert [s.verifier for s in signers] == [ckpt.load_verifier(str(key.with_suffix(".vkey")))]
    assert origin is None  # none given: the ledger's own is used when signing
    monkeypatch.setenv("LEDGER_ORIGIN", "corp.example/ledger")
    assert ckpt.resolve(None, None)[1] == "corp.example/ledger"
    assert ckpt.resolve(None, "flag/origin")[1] == "flag/origin"
    other, _ = ckpt.write_keypair(tmp_path / "other")
    assert len(ckpt.resolve([str(key), str(other)], None)[0]) == 2  # flags win over LEDGER_KEY
    with pytest.raises(ConfigError, match="given twice"):
        ckpt.resolve([str(key), str(key)], None)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_checkpointer_by_count_by_time_and_when_idle(db_path: Path) -> None:
    clock = Clock()
    events = incoming(30)
    with Store.open(db_path) as store:
        signer = Signer.generate()
        cpr = Checkpointer(signer, None, every_entries=10, every_seconds=60, clock=clock)
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
        fresh = Checkpointer(signer, None, every_entries=10, every_seconds=0, clock=clock)
        store.append(events[15:24])
        assert fresh.maybe_checkpoint(store) is None
        store.append(events[24:25])
        assert fresh.maybe_checkpoint(store) is not None


# -- the origin: fixed when the ledger is created ----------------------------------------------


def test_the_origin_is_fixed_at_creation_and_kept_by_a_renamed_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEDGER_ORIGIN", raising=False)
    signer = Signer.generate()
    first = tmp_path / "audit.duckdb"
    with Store.open(first) as store:
        assert store.origin() == checkpoints.ledger_origin(store) == "agent-ledger/audit"
        store.append(incoming(5))
        assert ckpt.create(store, signer).origin == "agent-ledger/audit"
    copy = tmp_path / "copy-of-audit.duckdb"
    shutil.copy(first, copy)
    with Store.open(copy) as store:  # writable: nothing is rewritten
        store.append(incoming(2, "b"))
        assert ckpt.create(store, signer).origin == "agent-ledger/audit"
        with pytest.raises(ConfigError, match=r"origin is 'agent-ledger/audit'"):
            ckpt.create(store, signer, "agent-ledger/copy-of-audit")
    monkeypatch.setenv("LEDGER_ORIGIN", "corp.example/ledger")
    with Store.open(tmp_path / "new.duckdb") as store:
        assert checkpoints.ledger_origin(store) == "corp.example/ledger"
    with Store.open(copy, read_only=True) as store:  # an env origin changes no existing ledger
        assert checkpoints.ledger_origin(store) == "agent-ledger/audit"


def test_a_ledger_made_before_origins_were_recorded(tmp_path: Path) -> None:
    """No recorded origin: its first checkpoint's origin, else the file stem; written on the
    next writable open."""
    signer = Signer.generate()
    path = tmp_path / "old.duckdb"
    with Store.open(path) as store:
        store.append(incoming(3))
        store.con.execute("UPDATE ledger_meta SET value = 'legacy/log' WHERE key = 'origin'")
        ckpt.create(store, signer)
        store.con.execute("DELETE FROM ledger_meta WHERE key = 'origin'")
    renamed = tmp_path / "renamed.duckdb"
    path.rename(renamed)
    with Store.open(renamed, read_only=True) as store:
        assert store.origin() is None
        assert checkpoints.ledger_origin(store) == "legacy/log"
    with Store.open(renamed) as store:
        assert store.origin() == "legacy/log"
    bare = tmp_path / "bare.duckdb"
    with Store.open(bare) as store:
        store.con.execute("DELETE FROM ledger_meta WHERE key = 'origin'")
    with Store.open(bare, read_only=True) as store:
        assert checkpoints.ledger_origin(store) == "agent-ledger/bare"


def test_claiming_an_origin_only_for_a_new_ledger(db_path: Path) -> None:
    with Store.open(db_path) as store:
        checkpoints.claim_origin(store, "corp.example/x")
        assert store.origin() == "corp.example/x"
        store.append(incoming(1))
        with pytest.raises(StoreError, match="origin is fixed"):
            checkpoints.claim_origin(store, "corp.example/y")


# -- keys: several at once, handover, rotation ---------------------------------------------------


def test_a_checkpoint_signed_by_two_keys_keeps_both(db_path: Path) -> None:
    old, new = Signer.generate("example.org/old"), Signer.generate("example.org/new")
    with Store.open(db_path) as store:
        store.append(incoming(4))
        ckpt.create(store, old)
        cp = ckpt.create(store, [old, new])  # the same head, handed over: a new row
        assert cp.signers == (old.verifier, new.verifier)
        rows = checkpoints.stored(store.con)
        assert [(r.n, r.size) for r in rows] == [(1, 4), (2, 4)]
        assert rows[1].vkeys == [old.verifier.text, new.verifier.text]
        assert ckpt.create(store, [old, new]).note == rows[1].note  # deterministic
        assert len(checkpoints.stored(store.con)) == 2
        store.append(incoming(2, "b"))
        assert ckpt.create(store, new).size == 6  # new signed the previous one: fine


def test_a_new_key_without_the_old_one_is_refused_unless_rotate(db_path: Path) -> None:
    old, new = Signer.generate("example.org/old"), Signer.generate("example.org/new")
    with Store.open(db_path) as store:
        store.append(incoming(4))
        ckpt.create(store, old)
        store.append(incoming(1, "b"))
        why = rf"signed by {re.escape(old.verifier.id)}, not by"
        with pytest.raises(ConfigError, match=why) as exc:
            ckpt.create(store, new)
        assert "--key OLD --key NEW" in str(exc.value) and "--rotate" in str(exc.value)
        assert len(checkpoints.stored(store.con)) == 1
        assert ckpt.create(store, new, rotate=True).signers == (new.verifier,)


def test_latest_checkpoint_is_shown_without_signing(db_path: Path) -> None:
    old, new = Signer.generate("example.org/old"), Signer.generate("example.org/new")
    with Store.open(db_path) as store:
        with pytest.raises(NotFoundError, match="no checkpoint is stored"):
            ckpt.latest_checkpoint(store)
        store.append(incoming(4))
        ckpt.create(store, old)
        ckpt.create(store, [old, new])
    with Store.open(db_path, read_only=True) as store:
        shown = ckpt.latest_checkpoint(store)
    assert (shown.n, shown.size, shown.origin) == (2, 4, "agent-ledger/ledger")
    assert [(s.id, s.verified) for s in shown.signers] == [
        (old.verifier.id, True),
        (new.verifier.id, True),
    ]
    as_dict = shown.to_dict()
    assert as_dict["signers"][1]["key_hash"] == new.verifier.hash.hex()
    assert as_dict["note"].startswith("agent-ledger/ledger\n4\n") and as_dict["created_at"]


def test_the_checkpointer_signs_the_tail_when_asked(db_path: Path) -> None:
    signer = Signer.generate()
    with Store.open(db_path) as store:
        cpr = Checkpointer(signer, None, every_entries=100, every_seconds=0, clock=Clock())
        assert cpr.final_checkpoint(store) is None  # nothing appended: nothing to sign
        store.append(incoming(7))
        assert cpr.maybe_checkpoint(store) is None  # no rule is due
        tail = cpr.final_checkpoint(store)
        assert tail is not None and tail.size == 7
        assert cpr.final_checkpoint(store) is None  # it did not move since
        assert [r.size for r in checkpoints.stored(store.con)] == [7]


def test_the_consumers_checkpointer_checks_key_and_origin_before_consuming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ledger.config import load

    monkeypatch.delenv("LEDGER_ORIGIN", raising=False)
    monkeypatch.delenv("LEDGER_KEY", raising=False)
    old_key, _ = ckpt.write_keypair(tmp_path / "old")
    new_key, _ = ckpt.write_keypair(tmp_path / "new", name="agent-ledger-2")
    db = tmp_path / "fresh.duckdb"
    # a ledger that does not exist yet is created with the origin given
    settings = load(db=str(db), key=str(old_key), origin="corp.example/fresh")
    Checkpointer.from_settings(settings, 10, 0)
    with Store.open(db) as store:
        assert store.origin() == "corp.example/fresh"
        store.append(incoming(3))
        ckpt.create(store, ckpt.load_signer(old_key))
    with pytest.raises(ConfigError, match=r"origin is 'corp\.example/fresh'"):
        Checkpointer.from_settings(load(db=str(db), key=str(old_key), origin="other/o"), 10, 0)
    with pytest.raises(ConfigError, match="--rotate"):
        Checkpointer.from_settings(load(db=str(db), key=str(new_key)), 10, 0)
    both = Checkpointer.from_settings(load(db=str(db)), 10, 0, keys=[str(old_key), str(new_key)])
    assert len(both.signers) == 2
