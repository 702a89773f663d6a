"""C2SP signed notes with several signatures (key sets), and the size-0 tree-head rule."""

from __future__ import annotations

import base64

import pytest

from ledger.errors import ConfigError, VerificationError
from ledger.integrity import proofcheck
from ledger.tlog import merkle
from ledger.tlog import note as signed_note
from ledger.tlog.note import Signer, Verifier

BODY = "example.org/log\n3\n" + base64.b64encode(bytes(range(32))).decode() + "\n"
EMPTY_B64 = base64.b64encode(merkle.EMPTY_ROOT).decode()


def test_a_note_signed_by_two_keys_opens_with_either_or_both() -> None:
    old, new = Signer.generate("example.org/log"), Signer.generate("example.org/log-2")
    note = signed_note.sign_note(BODY, [old, new])
    assert note.count("\n\u2014 ") == 2
    for known, want in (
        ([old.verifier], [old.verifier]),
        ([new.verifier], [new.verifier]),
        ([old.verifier, new.verifier], [old.verifier, new.verifier]),
    ):
        body, signers = signed_note.verify_note(note, known)
        assert body == BODY and list(signers) == want
    cp = signed_note.open_checkpoint(note, [new.verifier])
    assert cp.signers == (new.verifier,) and cp.size == 3
    with pytest.raises(VerificationError, match=r"not signed by .*\(signed by example.org/log\+"):
        signed_note.verify_note(note, [Signer.generate("x").verifier])


def test_unknown_signatures_are_ignored_and_a_bad_known_one_rejects_the_note() -> None:
    """C2SP signed-note, "Signatures": unknown keys ignored, a known key must verify."""
    good, other = Signer.generate("a"), Signer.generate("b")
    note = signed_note.sign_note(BODY, [good, other])
    # the same name with another key ID is an unknown key: ignored
    impostor = Signer.generate("b")
    assert signed_note.open_note(note, [good.verifier, impostor.verifier]) == BODY
    # b's line carries a's signature bytes: b is known, its signature fails: rejected
    lines = note.splitlines(keepends=True)
    a_sig = base64.b64decode(lines[-2].split(" ")[2])[4:]
    forged_b = base64.b64encode(other.verifier.hash + a_sig).decode()
    forged = "".join(lines[:-1]) + f"\u2014 b {forged_b}\n"
    with pytest.raises(VerificationError, match=r"signature by b\+.* is invalid"):
        signed_note.open_note(forged, [good.verifier, other.verifier])
    assert signed_note.open_note(forged, [good.verifier]) == BODY  # b unknown here


def test_signing_twice_with_one_key_and_too_many_signatures() -> None:
    key = Signer.generate("a")
    with pytest.raises(ConfigError, match="given twice"):
        signed_note.sign_note(BODY, [key, key])
    with pytest.raises(ConfigError, match="at least one"):
        signed_note.sign_note(BODY, [])
    many = [Signer.generate(f"k{i}") for i in range(signed_note.MAX_SIGNATURES + 1)]
    with pytest.raises(VerificationError, match="at most"):
        signed_note.open_note(signed_note.sign_note(BODY, many), [many[0].verifier])
    assert signed_note.open_note(signed_note.sign_note(BODY, many[:16]), [many[15].verifier])


def test_key_ids_name_keys() -> None:
    v = Signer.generate("example.org/log").verifier
    assert v.id == f"example.org/log+{v.hash.hex()}" == signed_note.key_id(v.name, v.hash)
    assert v.text.startswith(v.id + "+")
    assert Verifier.parse(v.text).id == v.id


# -- a tree of size 0 has the root SHA-256("") (RFC 6962 section 2.1), in every reader ----------


WRONG_ROOTS = [bytes(32), merkle.leaf_hash(b""), b"\xff" * 32]


@pytest.mark.parametrize("root", WRONG_ROOTS)
def test_size_0_with_another_root_is_refused_by_every_reader(root: bytes) -> None:
    signer = Signer.generate("example.org/log")
    body = f"example.org/log\n0\n{base64.b64encode(root).decode()}\n"
    note = signed_note.sign_note(body, signer)  # a (careless or forged) signed note
    assert merkle.empty_root_error(0, root) is not None
    with pytest.raises(VerificationError, match=r'size 0 has the root SHA-256\(""\)'):
        signed_note.parse_body(body)
    with pytest.raises(VerificationError, match="size 0"):
        signed_note.open_checkpoint(note, signer.verifier)
    with pytest.raises(VerificationError, match="refusing to sign"):
        signed_note.checkpoint_body("example.org/log", 0, root)
    with pytest.raises(merkle.ProofError, match="old root: a tree of size 0"):
        merkle.verify_consistency(0, 1, root, merkle.leaf_hash(b"x"), [])
    with pytest.raises(merkle.ProofError, match="a tree of size 0"):
        merkle.verify_consistency(0, 0, root, root, [])
    with pytest.raises(proofcheck.ProofCheckError, match="size 0"):
        proofcheck.open_checkpoint(note, signer.verifier.text, "checkpoint")
    with pytest.raises(proofcheck.ProofCheckError, match="old_root: a tree of size 0"):
        proofcheck.check_consistency(0, 1, root, merkle.leaf_hash(b"x"), [])


def test_size_0_with_the_empty_root_is_fine_everywhere() -> None:
    signer = Signer.generate("example.org/log")
    body = signed_note.checkpoint_body("example.org/log", 0, merkle.EMPTY_ROOT)
    assert body == f"example.org/log\n0\n{EMPTY_B64}\n"
    note = signed_note.sign_note(body, signer)
    assert signed_note.open_checkpoint(note, signer.verifier).root == merkle.EMPTY_ROOT
    assert proofcheck.open_checkpoint(note, signer.verifier.text, "c")[1:3] == (
        0,
        merkle.EMPTY_ROOT,
    )
    merkle.verify_consistency(0, 1, merkle.EMPTY_ROOT, merkle.leaf_hash(b"x"), [])
    proofcheck.check_consistency(0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])


def test_the_offline_verifier_repeats_the_same_rule() -> None:
    """proofcheck imports nothing of the package, so it has its own copy: same answers."""
    for size in (0, 1, 7):
        for root in [merkle.EMPTY_ROOT, *WRONG_ROOTS]:
            ours = merkle.empty_root_error(size, root)
            theirs = proofcheck.empty_root_error(size, root)
            assert (ours is None) == (theirs is None), (size, root)
    assert proofcheck.EMPTY_ROOT == merkle.EMPTY_ROOT
