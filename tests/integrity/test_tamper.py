"""Tamper suite: every modification is detected, with a message naming what and where."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ledger.cli import cli
from ledger.integrity import checkpoint as ckpt
from ledger.integrity import proofs
from ledger.integrity.proofcheck import ProofCheckError, check_bundle
from ledger.integrity.verify import VerifyReport, verify_store
from ledger.store import Store, treestore
from ledger.tlog import chain, merkle
from ledger.tlog import note as signed_note
from ledger.tlog.note import Signer
from tests.store.test_treestore import incoming

ORIGIN = "example.org/ledger"


@pytest.fixture
def signer() -> Signer:
    return Signer.generate("example.org/keys")


@pytest.fixture
def ledger(
    db_path: Path, signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Store, list[str]]]:
    """40 entries with checkpoints at 20 and 40; yields the store and both notes. The ledger
    (and any other created in the test) gets ORIGIN as its origin when it is created."""
    monkeypatch.setenv("LEDGER_ORIGIN", ORIGIN)
    events = incoming(40)
    store = Store.open(db_path)
    store.append(events[:20])
    notes = [ckpt.create(store, signer, ORIGIN).note]
    store.append(events[20:])
    notes.append(ckpt.create(store, signer, ORIGIN).note)
    assert verify_store(store).ok
    yield store, notes
    store.close()


def rechain_and_rebuild(store: Store) -> None:
    """What a thorough attacker with write access does after editing entries: recompute every
    link and hash, fix the recorded head, and rebuild the Merkle state from scratch."""
    con = store.con
    rows = con.execute("SELECT seq, payload FROM entries ORDER BY seq").fetchall()
    prev = chain.GENESIS
    for seq, payload in rows:
        h = chain.entry_hash(seq, prev, bytes(payload))
        con.execute(
            "UPDATE entries SET prev_hash = ?, entry_hash = ? WHERE seq = ?", [prev, h, seq]
        )
        prev = h
    con.execute("UPDATE ledger_meta SET value = ? WHERE key = 'head_size'", [str(len(rows))])
    con.execute("UPDATE ledger_meta SET value = ? WHERE key = 'head_hash'", [prev.hex()])
    con.execute("DELETE FROM merkle_nodes")
    con.execute("DELETE FROM merkle_head")
    treestore.catch_up(con)


def failed(report: VerifyReport, bad_seq: int | None, *words: str) -> None:
    assert not report.ok, report
    assert report.bad_seq == bad_seq, report
    for w in words:
        assert w in str(report.reason), report.reason


def test_modified_payload(ledger: tuple[Store, list[str]], signer: Signer) -> None:
    store, notes = ledger
    store.con.execute("UPDATE entries SET payload = payload || '\\x00'::BLOB WHERE seq = 7")
    failed(verify_store(store), 7, "entry_hash does not equal")
    rechain_and_rebuild(store)
    failed(verify_store(store), 0, "checkpoint #1 (size 20)", "seq 0..19 were rewritten")
    store.con.execute("DELETE FROM checkpoints")
    report = verify_store(store, checkpoint=notes[0], public_key=signer.verifier.text)
    failed(report, None, "forked from the given checkpoint", "root at size 20")


def test_deleted_middle_row(ledger: tuple[Store, list[str]]) -> None:
    store, _ = ledger
    store.con.execute("DELETE FROM entries WHERE seq = 10")
    failed(verify_store(store), 10, "entry seq 10 is missing")


def test_deleted_tail_after_a_checkpoint(ledger: tuple[Store, list[str]], signer: Signer) -> None:
    store, notes = ledger
    store.con.execute("DELETE FROM entries WHERE seq >= 30")
    failed(verify_store(store), 30, "recorded with 40 entries but holds 30")
    rechain_and_rebuild(store)
    failed(verify_store(store), 30, "checkpoint #2 (size 40) covers more than", "from seq 30")
    store.con.execute("DELETE FROM checkpoints")
    report = verify_store(store, checkpoint=notes[1], public_key=signer.verifier.text)
    failed(report, 30, "given checkpoint covers 40 entries but the ledger holds 30")


def test_emptied_ledger_is_not_reported_as_empty_and_fine(
    ledger: tuple[Store, list[str]],
) -> None:
    store, _ = ledger
    store.con.execute("DELETE FROM entries")
    store.con.execute("DELETE FROM ledger_meta WHERE key LIKE 'head_%'")
    store.con.execute("DELETE FROM merkle_nodes")
    store.con.execute("DELETE FROM merkle_head")
    failed(verify_store(store), 0, "checkpoint #1 (size 20) covers more than the ledger's 0")


def test_reordered_rows(ledger: tuple[Store, list[str]]) -> None:
    store, _ = ledger
    store.con.execute(
        "UPDATE entries SET seq = CASE seq WHEN 5 THEN 6 ELSE 5 END WHERE seq IN (5, 6)"
    )
    failed(verify_store(store), 5, "prev_hash does not equal the entry_hash of seq 4")


def test_forked_ledger_against_a_checkpoint_of_the_original(
    ledger: tuple[Store, list[str]], signer: Signer, tmp_path: Path
) -> None:
    _, notes = ledger
    fork_path = tmp_path / "fork.duckdb"
    with Store.open(fork_path) as fork:
        fork.append(incoming(40, "fork"))
        ckpt.create(fork, signer, ORIGIN)  # same operator key, same size, other content
        assert verify_store(fork).ok
    (tmp_path / "cp.txt").write_text(notes[1])
    (tmp_path / "key.vkey").write_text(signer.verifier.text + "\n")
    args = ["verify", "--db", str(fork_path), "--checkpoint", str(tmp_path / "cp.txt")]
    result = CliRunner().invoke(cli, [*args, "--public-key", str(tmp_path / "key.vkey")])
    assert result.exit_code == 1
    assert "forked from the given checkpoint" in result.output
    assert "root at size 40 differs" in result.output


def test_forged_signatures(ledger: tuple[Store, list[str]], signer: Signer) -> None:
    store, notes = ledger
    con = store.con
    forged = notes[0].replace("\n20\n", "\n21\n")
    con.execute("UPDATE checkpoints SET note = ? WHERE n = 1", [forged])
    failed(verify_store(store), None, "checkpoint #1 (size 20)", "signature by", "is invalid")
    # the attacker re-signs with a key of their own and swaps the stored verifier key too
    mallory = Signer.generate(signer.name)
    body = notes[0][: notes[0].index("\n\n") + 1]
    con.execute(
        "UPDATE checkpoints SET note = ?, vkey = ? WHERE n = 1",
        [signed_note.sign_note(body, mallory), mallory.verifier.text],
    )
    assert verify_store(store).ok  # self-consistent without a pinned key...
    report = verify_store(store, public_key=signer.verifier.text)  # ...not with one
    failed(
        report,
        None,
        f"checkpoint #1 (size 20) is signed only by {mallory.verifier.id}: not a trusted key",
    )
    report = verify_store(
        store, checkpoint=signed_note.sign_note(body, mallory), public_key=signer.verifier.text
    )
    failed(report, None, "the given checkpoint does not verify", "not signed by example.org/keys")


def test_old_checkpoint_replayed_as_new(ledger: tuple[Store, list[str]], signer: Signer) -> None:
    store, _ = ledger
    store.con.execute(
        "INSERT INTO checkpoints SELECT 3, size, root, origin, note, vkey, now() "
        "FROM checkpoints WHERE n = 1"
    )
    failed(
        verify_store(store),
        20,
        "checkpoint #3 (size 20) is smaller than the earlier checkpoint #2 (size 40)",
        "replayed",
    )
    store.con.execute("DELETE FROM checkpoints WHERE n = 3")
    bundle = proofs.consistency_bundle(store, 20, 40)
    swapped = dict(bundle)
    for a, b in (("old_size", "new_size"), ("old_root", "new_root")):
        swapped[a], swapped[b] = bundle[b], bundle[a]
    swapped["old_checkpoint"], swapped["new_checkpoint"] = (
        bundle["new_checkpoint"], bundle["old_checkpoint"]
    )  # fmt: skip
    with pytest.raises(ProofCheckError, match="new_size 20 is smaller than old_size 40"):
        check_bundle(swapped, signer.verifier.text)


def flips(value: Any) -> Iterator[Any]:
    """Every variant of a JSON value with one character (or the integer) changed."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        yield value ^ 1
        yield value + 1
    elif isinstance(value, str):
        for i, ch in enumerate(value):
            yield value[:i] + chr(ord(ch) ^ 1) + value[i + 1 :]
    elif isinstance(value, list):
        for i, item in enumerate(value):
            for v in flips(item):
                yield [*value[:i], v, *value[i + 1 :]]


def test_a_flipped_byte_in_any_field_of_a_bundle(
    ledger: tuple[Store, list[str]], signer: Signer
) -> None:
    store, _ = ledger
    event_id = store.con.execute("SELECT event_id FROM entries WHERE seq = 13").fetchall()[0][0]
    bundles = [
        proofs.inclusion_bundle(store, event_id),
        proofs.consistency_bundle(store, 20, 40),
    ]
    pinned = signer.verifier.text
    for bundle in bundles:
        check_bundle(bundle, pinned)
        for field, value in bundle.items():
            variants = 0
            for changed in flips(value):
                tampered = copy.deepcopy(bundle)
                tampered[field] = changed
                for key in (pinned, None):
                    with pytest.raises(ProofCheckError):
                        check_bundle(tampered, key)
                variants += 1
            assert variants > 0, field


def test_verify_proof_cli_names_the_tampered_field(
    ledger: tuple[Store, list[str]], signer: Signer, tmp_path: Path
) -> None:
    store, _ = ledger
    event_id = store.con.execute("SELECT event_id FROM entries WHERE seq = 3").fetchall()[0][0]
    bundle = proofs.inclusion_bundle(store, event_id)
    bundle["audit_path"][2] = bundle["audit_path"][2][:-1] + (
        "0" if bundle["audit_path"][2][-1] != "0" else "1"
    )
    path = tmp_path / "p.json"
    path.write_text(json.dumps(bundle))
    result = CliRunner().invoke(
        cli, ["verify-proof", str(path), "--public-key", signer.verifier.text]
    )
    assert result.exit_code == 1
    assert "FAILED: audit_path from seq 3 does not lead to root_hash" in result.output


def _rechain_only(store: Store) -> None:
    """Recompute every link and hash after an edit, and nothing else (head, Merkle untouched)."""
    con = store.con
    prev = chain.GENESIS
    for seq, payload in con.execute("SELECT seq, payload FROM entries ORDER BY seq").fetchall():
        h = chain.entry_hash(seq, prev, bytes(payload))
        con.execute(
            "UPDATE entries SET prev_hash = ?, entry_hash = ? WHERE seq = ?", [prev, h, seq]
        )
        prev = h


@pytest.mark.parametrize("fix_head", [False, True], ids=["head kept", "head fixed too"])
def test_rechained_edit_is_localized_to_its_merkle_range(
    ledger: tuple[Store, list[str]], fix_head: bool
) -> None:
    store, _ = ledger
    store.con.execute("DELETE FROM checkpoints")  # no signed root to compare: only stored state
    store.con.execute("UPDATE entries SET payload = payload || '\\x00'::BLOB WHERE seq = 21")
    _rechain_only(store)
    if fix_head:
        head = store.con.execute("SELECT entry_hash FROM entries WHERE seq = 39").fetchall()
        store.con.execute(
            "UPDATE ledger_meta SET value = ? WHERE key = 'head_hash'", [bytes(head[0][0]).hex()]
        )
    report = verify_store(store)
    # the chain itself is consistent again; the stored Merkle node over seq 16..31 is not
    failed(report, 16, "Merkle node", "16..31")


# -- the checkpoint chain: numbering, and size-0 heads ------------------------------------------


@pytest.fixture
def three(ledger: tuple[Store, list[str]], signer: Signer) -> tuple[Store, list[str]]:
    """The ledger with a third checkpoint: #1 (20), #2 (40), #3 (45)."""
    store, notes = ledger
    store.append(incoming(45)[40:])
    notes.append(ckpt.create(store, signer).note)
    assert verify_store(store).ok
    return store, notes


def test_a_checkpoint_deleted_from_the_middle(three: tuple[Store, list[str]]) -> None:
    store, _ = three
    store.con.execute("DELETE FROM checkpoints WHERE n = 2")
    report = verify_store(store)
    failed(report, None, "checkpoint #2 is missing", "jumps from #1 to #3", "deleted")
    store.close()
    result = CliRunner().invoke(cli, ["verify", "--db", store.path])
    assert result.exit_code == 1
    assert result.stderr == (
        "FAILED: checkpoint #2 is missing from the checkpoints table (the numbering jumps "
        "from #1 to #3): a signed checkpoint was deleted\n"
    )


def test_the_first_or_the_last_checkpoint_deleted(three: tuple[Store, list[str]]) -> None:
    store, _ = three
    store.con.execute("DELETE FROM checkpoints WHERE n = 1")
    failed(verify_store(store), None, "checkpoint #1 is missing", "the first is #2")
    store.con.execute("DELETE FROM checkpoints")
    assert verify_store(store).ok  # all gone: nothing to number (a kept copy shows it, below)


def test_a_deleted_and_renumbered_checkpoint_needs_the_auditors_copy(
    three: tuple[Store, list[str]], signer: Signer
) -> None:
    """Deleting #2 and renumbering #3 leaves #1, #2 with no gap and nothing signed carries
    the number: the file alone cannot tell. A checkpoint the auditor kept can."""
    store, notes = three
    store.con.execute("DELETE FROM checkpoints WHERE n = 2")
    store.con.execute("UPDATE checkpoints SET n = 2 WHERE n = 3")
    assert verify_store(store).ok
    report = verify_store(store, checkpoint=notes[1], public_key=signer.verifier.text)
    failed(report, None, "given checkpoint (size 40) is not among the ledger's stored")
    assert verify_store(store, checkpoint=notes[2], public_key=signer.verifier.text).ok


def test_a_repeated_or_misnumbered_checkpoint(three: tuple[Store, list[str]]) -> None:
    store, _ = three
    store.con.execute("UPDATE checkpoints SET n = 2 WHERE n = 3")
    failed(verify_store(store), None, "checkpoint #2 appears more than once")
    store.con.execute("UPDATE checkpoints SET n = n - 1")  # now 0, 1, 1
    failed(verify_store(store), None, "must count #1, #2", "found #0")


def _size0_note(signer: Signer, root: bytes) -> str:
    """A signed size-0 checkpoint with any root: what a careless or hostile signer makes."""
    body = f"{ORIGIN}\n0\n{base64.b64encode(root).decode()}\n"
    return signed_note.sign_note(body, signer)


def test_a_stored_size_0_checkpoint_must_carry_the_empty_root(
    db_path: Path, signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_ORIGIN", ORIGIN)
    with Store.open(db_path) as store:
        cp = ckpt.create(store, signer)  # an empty ledger signs the empty root
        assert (cp.size, cp.root) == (0, merkle.EMPTY_ROOT)
        assert verify_store(store).ok
        store.append(incoming(3))
        wrong = bytes(32)
        store.con.execute(
            "UPDATE checkpoints SET root = ?, note = ? WHERE n = 1",
            [wrong, _size0_note(signer, wrong)],
        )
        failed(verify_store(store), None, "checkpoint #1 (size 0)", 'SHA-256("")')


def test_a_given_size_0_checkpoint_must_carry_the_empty_root(
    ledger: tuple[Store, list[str]], signer: Signer, tmp_path: Path
) -> None:
    store, _ = ledger
    note = _size0_note(signer, b"\x01" * 32)
    report = verify_store(store, checkpoint=note, public_key=signer.verifier.text)
    failed(report, None, "the given checkpoint does not verify", "size 0")
    good = _size0_note(signer, merkle.EMPTY_ROOT)
    report = verify_store(store, checkpoint=good, public_key=signer.verifier.text)
    failed(report, None, "(size 0) is not among the ledger's stored checkpoints")
    (tmp_path / "cp0.txt").write_text(note)
    store.close()
    args = ["verify", "--db", store.path, "--checkpoint", str(tmp_path / "cp0.txt")]
    result = CliRunner().invoke(cli, [*args, "--public-key", signer.verifier.text])
    assert result.exit_code == 1 and "size 0" in result.output


def test_a_checkpoint_of_another_origin(ledger: tuple[Store, list[str]], signer: Signer) -> None:
    store, notes = ledger
    other = notes[1].split("\n\n")[0].replace(ORIGIN, "example.org/other", 1) + "\n"
    forged = signed_note.sign_note(other, signer)  # the same key, another log
    report = verify_store(store, checkpoint=forged, public_key=signer.verifier.text)
    failed(report, None, "given checkpoint is for the log 'example.org/other'")
    store.con.execute(
        "UPDATE checkpoints SET origin = 'example.org/other', note = ? WHERE n = 2", [forged]
    )
    failed(verify_store(store), None, "checkpoint #2 (size 40) is for the log")
    failed(verify_store(store, origin="example.org/x"), None, "not the expected 'example.org/x'")
