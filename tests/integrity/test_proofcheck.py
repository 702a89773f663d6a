"""The offline verifier: self-contained, strict about encodings, and it pins keys."""

from __future__ import annotations

import ast
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
    assert modules <= {"__future__", "base64", "binascii", "json", "re", "dataclasses",
                       "hashlib", "typing", "cryptography"}  # fmt: skip


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
