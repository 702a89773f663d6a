"""The offline verifier: self-contained, strict about encodings, and it pins keys."""

from __future__ import annotations

import ast
import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest

import ledger.integrity.proofcheck as pc
from ledger.integrity.proofcheck import ProofCheckError, check_bundle, check_file
from ledger.tlog import merkle
from ledger.tlog.note import Signer
from tests.tlog.test_merkle import CONSISTENCY, INCLUSION, LEAVES, ROOTS


def test_imports_nothing_from_the_ledger_package() -> None:
    tree = ast.parse(Path(pc.__file__).read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add((node.module or "").split(".")[0])
    assert modules <= {"__future__", "base64", "binascii", "collections", "json", "re",
                       "dataclasses", "hashlib", "typing", "cryptography"}  # fmt: skip


def test_rfc_vectors_through_its_own_verification_code() -> None:
    for index, size, path in INCLUSION:
        got = pc.root_from_inclusion(index, size, LEAVES[index], [bytes.fromhex(h) for h in path])
        assert got.hex() == ROOTS[size - 1]
    for old, new, proof in CONSISTENCY:
        r1, r2 = bytes.fromhex(ROOTS[old - 1]), bytes.fromhex(ROOTS[new - 1])
        pc.check_consistency(old, new, r1, r2, [bytes.fromhex(h) for h in proof])
    with pytest.raises(ProofCheckError, match="old_root"):
        pc.check_consistency(6, 8, bytes.fromhex(ROOTS[4]), bytes.fromhex(ROOTS[7]),
                             [bytes.fromhex(h) for h in CONSISTENCY[2][2]])  # fmt: skip


def make_bundle(signer: Signer, index: int = 5, size: int = 13) -> dict[str, Any]:
    """An inclusion bundle over synthetic entries, signed by `signer`."""
    from ledger.tlog import note as signed_note

    payloads = [
        b"\xc3\x01" + bytes(8) + bytes([2 * 4]) + f"id{i:02d}".encode() for i in range(size)
    ]
    prev, hashes, prevs = bytes(32), [], []
    for seq, p in enumerate(payloads):
        prevs.append(prev)
        prev = merkle.leaf_hash(seq.to_bytes(8, "big") + prev + p)
        hashes.append(prev)
    root = merkle.root(hashes)
    note = signed_note.sign_note(signed_note.checkpoint_body("example.org/log", size, root), signer)
    import base64

    return {
        "event_id": f"id{index:02d}",
        "seq": index,
        "payload_b64": base64.b64encode(payloads[index]).decode(),
        "prev_hash": prevs[index].hex(),
        "leaf_hash": hashes[index].hex(),
        "tree_size": size,
        "audit_path": [h.hex() for h in merkle.inclusion_proof(hashes, index, size)],
        "root_hash": root.hex(),
        "checkpoint": note,
        "public_key": signer.verifier.text,
    }


def test_a_good_bundle_pinned_and_unpinned() -> None:
    signer = Signer.generate("example.org/log")
    b = make_bundle(signer)
    assert check_bundle(b, signer.verifier.text + "\n").pinned
    assert not check_bundle(b).pinned
    assert "event id05 (seq 5) is in example.org/log at size 13" in check_bundle(b).summary


def test_pinning_rejects_another_key_even_with_a_consistent_bundle() -> None:
    mine, theirs = Signer.generate("example.org/log"), Signer.generate("example.org/log")
    forged = make_bundle(theirs)
    check_bundle(forged)  # self-consistent...
    with pytest.raises(ProofCheckError, match="not the pinned key"):
        check_bundle(forged, mine.verifier.text)  # ...but not signed by the key the auditor holds


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda b: b.pop("seq"), "missing \\['seq'\\]"),
        (lambda b: b.update(extra=1), "unexpected \\['extra'\\]"),
        (lambda b: b.update(seq=True), "seq is not a non-negative integer"),
        (lambda b: b.update(seq=-1), "seq is not a non-negative integer"),
        (lambda b: b.update(prev_hash=b["prev_hash"].upper()), "prev_hash is not 64 lowercase"),
        (lambda b: b.update(payload_b64=b["payload_b64"] + "="), "payload_b64 is not"),
        (lambda b: b.update(audit_path="x"), "audit_path is not a list"),
        (lambda b: b.update(audit_path=b["audit_path"][:-1]), "too short"),
        (lambda b: b.update(audit_path=[*b["audit_path"], b["root_hash"]]), "too long"),
        (lambda b: b.update(tree_size=5), "seq 5 is not inside a tree of size 5"),
        (lambda b: b.update(event_id="id06"), "event_id is not the event id inside the payload"),
        (lambda b: b.update(public_key="nope"), "public_key is not a verifier key"),
    ],
)
def test_malformed_bundles_are_named(change: Any, why: str) -> None:
    b = copy.deepcopy(make_bundle(Signer.generate("example.org/log")))
    change(b)
    with pytest.raises(ProofCheckError, match=why):
        check_bundle(b)


def test_check_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ProofCheckError, match="cannot read"):
        check_file(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ProofCheckError, match="is not JSON"):
        check_file(str(bad))
    bad.write_text(json.dumps([1]))
    with pytest.raises(ProofCheckError, match="not a JSON object"):
        check_file(str(bad))


# -- key sets, origin pinning, consistency bundles with one side unsigned ------------------------


def consistency(
    signers: list[Signer], old: int, new: int, signed: tuple[str, ...] = ("old", "new"),
    origin: str = "example.org/log",
) -> dict[str, Any]:  # fmt: skip
    """A consistency bundle over synthetic leaves; `signed` sides carry a checkpoint."""
    from ledger.tlog import note as signed_note

    hashes = [merkle.leaf_hash(bytes([i])) for i in range(new)]
    roots = {old: merkle.root(hashes[:old]), new: merkle.root(hashes)}

    def note(size: int) -> str:
        return signed_note.sign_note(
            signed_note.checkpoint_body(origin, size, roots[size]), signers
        )

    keys = [s.verifier.text for s in signers]
    return {
        "old_size": old,
        "new_size": new,
        "old_root": roots[old].hex(),
        "new_root": roots[new].hex(),
        "proof": [h.hex() for h in merkle.consistency_proof(hashes, old, new)],
        "old_checkpoint": note(old) if "old" in signed else None,
        "new_checkpoint": note(new) if "new" in signed else None,
        "public_key": keys[0] if len(keys) == 1 else keys,
    }


def test_a_pinned_key_set_and_a_bundle_signed_by_several_keys() -> None:
    old, new = Signer.generate("example.org/log"), Signer.generate("example.org/log-2")
    b = consistency([old, new], 3, 9)
    both = [old.verifier.text, new.verifier.text]
    for pinned in ([old.verifier.text], [new.verifier.text], both):
        result = check_bundle(b, pinned)
        assert result.pinned and result.origin == "example.org/log"
    assert check_bundle(b, [new.verifier.text]).signers == (new.verifier.id,)
    assert set(check_bundle(b).signers) == {old.verifier.id, new.verifier.id}
    stranger = Signer.generate("example.org/log")
    with pytest.raises(ProofCheckError, match="none of the bundle's public keys is among"):
        check_bundle(b, [stranger.verifier.text, Signer.generate("x").verifier.text])
    only_old = consistency([old], 3, 9)
    with pytest.raises(ProofCheckError, match="not the pinned key"):
        check_bundle(only_old, new.verifier.text)


def test_the_origin_can_be_pinned() -> None:
    key = Signer.generate("example.org/keys")
    other_log = consistency([key], 2, 5, origin="example.org/other")
    assert check_bundle(other_log, key.verifier.text).origin == "example.org/other"
    with pytest.raises(ProofCheckError, match=r"not the pinned origin 'example\.org/log'"):
        check_bundle(other_log, key.verifier.text, origin="example.org/log")
    inclusion = make_bundle(key)
    check_bundle(inclusion, key.verifier.text, origin="example.org/log")
    with pytest.raises(ProofCheckError, match=r"checkpoint is for the log 'example\.org/log'"):
        check_bundle(inclusion, key.verifier.text, origin="example.org/mine")


def test_one_side_may_be_unsigned_and_is_said_so_but_not_both() -> None:
    key = Signer.generate("example.org/log")
    result = check_bundle(consistency([key], 3, 9, signed=("new",)), key.verifier.text)
    assert "the old root" in result.summary and "at size 3 is not signed" in result.summary
    result = check_bundle(consistency([key], 3, 9, signed=("old",)), key.verifier.text)
    assert "the new root" in result.summary and "at size 9 is not signed" in result.summary
    with pytest.raises(ProofCheckError, match="nothing in the bundle is signed"):
        check_bundle(consistency([key], 3, 9, signed=()), key.verifier.text)
    forged = consistency([key], 3, 9, signed=("new",))
    forged["old_root"] = forged["new_root"]  # an unsigned root still has to fit the proof
    with pytest.raises(ProofCheckError):
        check_bundle(forged, key.verifier.text)


def test_a_size_0_side_must_carry_the_empty_root() -> None:
    """The reported case: a signed size-0 checkpoint with another root was accepted."""
    from ledger.tlog import note as signed_note

    key = Signer.generate("example.org/log")
    good = consistency([key], 0, 4)
    check_bundle(good, key.verifier.text)
    wrong = "00" * 32
    body = f"example.org/log\n0\n{base64.b64encode(bytes(32)).decode()}\n"
    signed_wrong = dict(good, old_root=wrong, old_checkpoint=signed_note.sign_note(body, key))
    with pytest.raises(ProofCheckError, match=r"old_checkpoint: a tree of size 0 has the root"):
        check_bundle(signed_wrong, key.verifier.text)
    unsigned_wrong = dict(good, old_root=wrong, old_checkpoint=None)
    with pytest.raises(ProofCheckError, match=r"old_root: a tree of size 0 has the root"):
        check_bundle(unsigned_wrong, key.verifier.text)
    zero = consistency([key], 0, 0, signed=("new",))
    assert check_bundle(zero, key.verifier.text).summary.startswith("example.org/log grew from 0")
