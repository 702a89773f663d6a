"""verify: recompute the chain from the bytes; any tampering fails at the right seq."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ledger.integrity.verify as verify_module
from bench.generate import generate
from ledger.contract import events
from ledger.contract.codec import Codec, default_codec
from ledger.integrity import checkpoint as ckpt
from ledger.integrity.verify import verify_store
from ledger.store import Incoming, Store
from ledger.stream.ingest import ingest
from ledger.tlog import merkle
from ledger.tlog import note as signed_note
from ledger.tlog.note import Signer
from tests import factories as f
from tests.contract.test_codec import OLD_DATUM, older_schema, write_with
from tests.store.test_treestore import incoming, leaves

N = 13
BATCHES = [3, 5, 32_768]  # the verify batch size: tampering at and across batch boundaries


def lines(evs: list[dict[str, Any]], name: str = "gen.jsonl") -> Iterator[tuple[str, bytes]]:
    import json

    for i, ev in enumerate(evs, 1):
        yield f"file:{name}:{i}", json.dumps(ev).encode()


@pytest.fixture(scope="module")
def base_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger of N entries appended in three transactions, with long and non-ASCII ids."""
    path = tmp_path_factory.mktemp("base") / "ledger.duckdb"
    evs = list(generate(N - 2, seed=5))
    evs.append(f.principal("agent:" + "ü" * 40, event_id="é" * 70))  # >= 64 bytes: exact path
    evs.append(f.action("a-long", "agent:x", event_id="x" * 64, minutes=-(10**6)))
    with Store.open(path) as store:
        ingest(store, lines(evs), batch_size=5)
    return path


def tampered(base: Path, tmp: Path, change: Callable[[duckdb.DuckDBPyConnection], None]) -> Path:
    path = tmp / f"copy-{next(_copies)}.duckdb"
    shutil.copy(base, path)
    con = duckdb.connect(str(path))
    change(con)
    con.close()
    return path


_copies = iter(range(10**9))


def run_verify(path: Path, batch_rows: int = 32_768, codec: Codec | None = None) -> Any:
    with (
        mock.patch.object(verify_module, "BATCH_ROWS", batch_rows),
        Store.open(path, read_only=True) as store,
    ):
        return verify_store(store, codec=codec)


def row(con: duckdb.DuckDBPyConnection, seq: int) -> dict[str, Any]:
    cur = con.execute("SELECT * FROM entries WHERE seq = ?", [seq])
    names = [d[0] for d in cur.description]
    return dict(zip(names, cur.fetchall()[0], strict=True))


def set_row(con: duckdb.DuckDBPyConnection, seq: int, values: dict[str, Any]) -> None:
    cols = [c for c in values if c != "seq"]
    con.execute(
        f"UPDATE entries SET {', '.join(f'{c} = ?' for c in cols)} WHERE seq = ?",
        [values[c] for c in cols] + [seq],
    )


def test_intact_ledger_verifies(base_ledger: Path) -> None:
    for batch in BATCHES:
        report = run_verify(base_ledger, batch)
        assert report.ok, report.reason
        assert report.size == N
        assert report.bad_seq is None
        with Store.open(base_ledger, read_only=True) as store:
            assert report.head_hash == store.head()[1].hex()


def test_empty_ledger_verifies_as_empty(db_path: Path) -> None:
    Store.open(db_path).close()
    report = run_verify(db_path)
    assert report.ok and report.empty and report.size == 0
    assert report.head_hash == bytes(32).hex()


def test_independent_reimplementation_agrees_on_every_row(tmp_path: Path) -> None:
    """An auditor's own code, reading `entries` with plain DuckDB, gets the stored hashes."""
    path = tmp_path / "ledger.duckdb"
    with Store.open(path) as store:
        ingest(store, lines(list(generate(400, seed=9))), batch_size=150)
    con = duckdb.connect(str(path), read_only=True)
    rows = con.execute(
        "SELECT seq, payload, prev_hash, entry_hash FROM entries ORDER BY seq"
    ).fetchall()
    con.close()
    assert [r[0] for r in rows] == list(range(400))
    prev = b"\x00" * 32
    for seq, payload, prev_hash, entry_hash in rows:
        assert prev_hash == prev
        assert (
            entry_hash
            == hashlib.sha256(bytes([0]) + seq.to_bytes(8, "big") + prev + payload).digest()
        )
        prev = entry_hash
    assert run_verify(path).ok


_SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_SETTINGS
@given(
    column=st.sampled_from(["payload", "prev_hash", "entry_hash"]),
    seq=st.integers(0, N - 1),
    where=st.integers(0, 10**6),
    bit=st.integers(0, 7),
    batch=st.sampled_from(BATCHES),
)
def test_flipping_any_byte_fails_at_that_seq(
    base_ledger: Path, tmp_path: Path, column: str, seq: int, where: int, bit: int, batch: int
) -> None:
    def change(con: duckdb.DuckDBPyConnection) -> None:
        value = bytearray(row(con, seq)[column])
        value[where % len(value)] ^= 1 << bit
        set_row(con, seq, {column: bytes(value)})

    report = run_verify(tampered(base_ledger, tmp_path, change), batch)
    assert not report.ok
    assert report.bad_seq == seq, report.reason


@_SETTINGS
@given(seq=st.integers(0, N - 1), batch=st.sampled_from(BATCHES))
def test_deleting_any_row_fails_at_that_seq(
    base_ledger: Path, tmp_path: Path, seq: int, batch: int
) -> None:
    path = tampered(
        base_ledger, tmp_path, lambda con: con.execute(f"DELETE FROM entries WHERE seq = {seq}")
    )
    report = run_verify(path, batch)
    assert not report.ok
    assert report.bad_seq == seq, report.reason
    assert "missing" in str(report.reason)


@_SETTINGS
@given(seq=st.integers(0, N - 2), batch=st.sampled_from(BATCHES))
def test_a_row_rewritten_unchanged_out_of_place_still_verifies(
    base_ledger: Path, tmp_path: Path, seq: int, batch: int
) -> None:
    """Verify reads rows in stored order for speed; a table whose rows are stored out of seq
    order, but are all intact, must still verify (the sorted walk has the last word)."""

    def change(con: duckdb.DuckDBPyConnection) -> None:
        con.execute(f"CREATE TEMP TABLE moved AS SELECT * FROM entries WHERE seq = {seq}")
        con.execute(f"DELETE FROM entries WHERE seq = {seq}")
        con.execute("INSERT INTO entries SELECT * FROM moved")

    path = tampered(base_ledger, tmp_path, change)
    with duckdb.connect(str(path), read_only=True) as con:
        stored = [r[0] for r in con.execute("SELECT seq FROM entries").fetchall()]
    assert stored != sorted(stored)  # really out of order on disk
    report = run_verify(path, batch)
    assert report.ok, report.reason
    assert report.size == N


@_SETTINGS
@given(
    pair=st.lists(st.integers(0, N - 1), min_size=2, max_size=2, unique=True),
    batch=st.sampled_from(BATCHES),
)
def test_swapping_two_rows_fails_at_the_first(
    base_ledger: Path, tmp_path: Path, pair: list[int], batch: int
) -> None:
    i, j = sorted(pair)

    def change(con: duckdb.DuckDBPyConnection) -> None:
        a, b = row(con, i), row(con, j)
        set_row(con, i, b)
        set_row(con, j, a)

    report = run_verify(tampered(base_ledger, tmp_path, change), batch)
    assert not report.ok
    assert report.bad_seq == i, report.reason


@_SETTINGS
@given(
    column=st.sampled_from(["event_id", "type", "occurred_at"]),
    seq=st.integers(0, N - 1),
    batch=st.sampled_from(BATCHES),
)
def test_row_columns_must_agree_with_the_payload(
    base_ledger: Path, tmp_path: Path, column: str, seq: int, batch: int
) -> None:
    """event_id, type and occurred_at are not hashed: they are checked against the payload."""
    expr = {
        "event_id": "event_id || 'x'",
        "type": "CASE WHEN type = 'action.performed' THEN 'policy.decided' "
        "ELSE 'action.performed' END",
        "occurred_at": "occurred_at + INTERVAL 1 MICROSECOND",
    }[column]
    path = tampered(
        base_ledger,
        tmp_path,
        lambda con: con.execute(f"UPDATE entries SET {column} = {expr} WHERE seq = {seq}"),
    )
    report = run_verify(path, batch)
    assert not report.ok
    assert report.bad_seq == seq
    assert "disagrees with payload" in str(report.reason)


def _append_raw(con: duckdb.DuckDBPyConnection, payload: bytes, event_id: str) -> int:
    """Append a correctly chained row behind the ledger's back, as a forger would."""
    size, head = con.execute(
        "SELECT count(*), (SELECT entry_hash FROM entries ORDER BY seq DESC LIMIT 1) FROM entries"
    ).fetchall()[0]
    ehash = hashlib.sha256(b"\0" + size.to_bytes(8, "big") + head + payload).digest()
    con.execute(
        "INSERT INTO entries SELECT ?, ?, type, occurred_at, now(), ?, ?, ?, 'forged' "
        "FROM entries WHERE seq = 0",
        [size, event_id, payload, head, ehash],
    )
    con.execute("UPDATE ledger_meta SET value = ? WHERE key = 'head_size'", [str(size + 1)])
    con.execute("UPDATE ledger_meta SET value = ? WHERE key = 'head_hash'", [ehash.hex()])
    return int(size)


def test_a_repeated_event_id_fails_at_the_repeat(base_ledger: Path, tmp_path: Path) -> None:
    forged: list[int] = []

    def change(con: duckdb.DuckDBPyConnection) -> None:
        first = row(con, 0)
        forged.append(_append_raw(con, first["payload"], first["event_id"]))

    report = run_verify(tampered(base_ledger, tmp_path, change), 3)
    assert not report.ok
    assert report.bad_seq == forged[0] == N
    assert "recorded twice" in str(report.reason)


def test_rows_the_ledger_did_not_write(base_ledger: Path, tmp_path: Path) -> None:
    """A well-formed, correctly chained row that the ledger's recorded head does not cover."""
    ev = f.action("a-forged", "agent:x", event_id="forged-1")
    record = events.to_record(events.parse_event(ev))
    payload = default_codec().encode(record)

    def change(con: duckdb.DuckDBPyConnection) -> None:
        size = _append_raw(con, payload, "forged-1")
        con.execute(
            "UPDATE entries SET type = ?, occurred_at = make_timestamptz(?) WHERE seq = ?",
            [record["type"], record["occurred_at"], size],
        )
        con.execute("UPDATE ledger_meta SET value = ? WHERE key = 'head_size'", [str(size)])

    report = run_verify(tampered(base_ledger, tmp_path, change))
    assert (report.ok, report.bad_seq) == (False, N)
    assert "not written by the ledger" in str(report.reason)


def test_null_column_is_reported(base_ledger: Path, tmp_path: Path) -> None:
    def change(con: duckdb.DuckDBPyConnection) -> None:
        con.execute("ALTER TABLE entries ALTER payload DROP NOT NULL")
        con.execute("UPDATE entries SET payload = NULL WHERE seq = 4")

    report = run_verify(tampered(base_ledger, tmp_path, change), 3)
    # a NULL needs the NOT NULL constraint gone first: the catalog check names that
    assert not report.ok
    assert "table entries is defined otherwise" in str(report.reason)
    assert any("entries" in p and "payload BLOB" in p for p in report.catalog)


def test_truncated_hash_column_is_reported(base_ledger: Path, tmp_path: Path) -> None:
    def change(con: duckdb.DuckDBPyConnection) -> None:
        con.execute("UPDATE entries SET prev_hash = prev_hash[:31] WHERE seq = 6")

    report = run_verify(tampered(base_ledger, tmp_path, change), 5)
    assert (report.ok, report.bad_seq) == (False, 6)
    assert "prev_hash" in str(report.reason)


def test_entries_written_with_an_older_schema(tmp_path: Path) -> None:
    """Rows whose payload has another registered fingerprint take the exact path and pass."""
    payload = write_with(older_schema(), OLD_DATUM)
    codec = Codec(extra_writer_schemas=[older_schema()])
    record, _ = codec.decode(payload)
    path = tmp_path / "ledger.duckdb"
    with Store.open(path) as store:
        store.append(
            [Incoming("old-1", record["type"], record["occurred_at"], payload, "s", record)]
        )
        ingest(store, lines([f.action("a-1", "agent:x")]))
    assert run_verify(path, codec=codec).ok
    report = run_verify(path, codec=default_codec())
    assert (report.ok, report.bad_seq) == (False, 0)
    assert "unknown schema fingerprint" in str(report.reason)


def test_progress_is_reported(base_ledger: Path) -> None:
    seen: list[tuple[int, int]] = []
    with (
        mock.patch.object(verify_module, "BATCH_ROWS", 5),
        Store.open(base_ledger, read_only=True) as store,
    ):
        assert verify_store(store, progress=lambda done, total: seen.append((done, total))).ok
    assert seen[-1] == (N, N)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_report_as_dict(base_ledger: Path) -> None:
    report = run_verify(base_ledger).to_dict()
    assert report["ok"] is True
    assert report["size"] == N
    assert "entry hashes" in report["checks"]


def _batches(path: Path, rows: int) -> list[Any]:
    with Store.open(path, read_only=True) as store:
        table = store.con.sql(
            "SELECT seq, event_id, type, epoch_us(occurred_at), payload, prev_hash, entry_hash "
            "FROM entries ORDER BY seq"
        ).to_arrow_table()
    return table.to_batches(max_chunksize=rows)


def test_read_ahead_hands_reader_errors_to_the_caller(base_ledger: Path) -> None:
    batches = _batches(base_ledger, 4)

    def failing() -> Iterator[Any]:
        yield batches[0]
        raise RuntimeError("disk gone")

    got = []
    with (
        pytest.raises(RuntimeError, match="disk gone"),
        verify_module._ReadAhead(failing(), default_codec().header) as items,
    ):
        for batch, joined, ok in items:
            got.append(batch.num_rows)
            assert joined is not None and ok is not None and ok.all()
    assert got == [4]


def test_read_ahead_stops_when_the_caller_stops(base_ledger: Path) -> None:
    batches = _batches(base_ledger, 1) * 50
    with verify_module._ReadAhead(iter(batches), default_codec().header) as items:
        first = next(items)
    assert first[0].num_rows == 1  # leaving the block did not wait for the other 649 batches


# -- trusted keys and rotation (see ledger/integrity/audit.py for what is proven) ---------------


OLD, NEW = Signer.generate("example.org/2025"), Signer.generate("example.org/2026")


@pytest.fixture
def rotated(db_path: Path) -> Iterator[Store]:
    """#1 (10) and #2 (20) by OLD; #3 (20) by OLD and NEW (the handover); #4 (30) by NEW."""
    events = incoming(30)
    store = Store.open(db_path)
    store.append(events[:10])
    ckpt.create(store, OLD)
    store.append(events[10:20])
    ckpt.create(store, OLD)
    ckpt.create(store, [OLD, NEW])
    store.append(events[20:])
    ckpt.create(store, NEW)
    yield store
    store.close()


def test_the_new_key_alone_accepts_history_through_the_handover(rotated: Store) -> None:
    report = verify_store(rotated, public_keys=[NEW.verifier.text])
    assert report.ok, report.reason
    assert report.trusted_keys == [NEW.verifier.id]
    assert "trusted keys" in report.checks
    accepted = [d["accepted"] for d in report.checkpoint_details]
    assert accepted[:2] == ["signed by a key that co-signed checkpoint #3 with a trusted key"] * 2
    assert accepted[2:] == ["signed by a trusted key"] * 2
    signed = [
        [(k["key_id"], k["trusted"]) for k in d["signed_by"]] for d in report.checkpoint_details
    ]
    assert signed == [
        [(OLD.verifier.id, False)],
        [(OLD.verifier.id, False)],
        [(OLD.verifier.id, False), (NEW.verifier.id, True)],
        [(NEW.verifier.id, True)],
    ]
    assert verify_store(rotated, public_keys=[OLD.verifier.text, NEW.verifier.text]).ok


def test_the_old_key_alone_stops_where_only_the_new_one_signed(rotated: Store) -> None:
    report = verify_store(rotated, public_key=OLD.verifier.text)
    assert not report.ok
    assert report.reason is not None
    assert report.reason.startswith(
        f"checkpoint #4 (size 30) is signed only by {NEW.verifier.id}: not a trusted key"
    )
    assert "add its verifier key with --public-key" in report.reason


def test_a_rotation_without_handover_needs_both_keys(db_path: Path) -> None:
    with Store.open(db_path) as store:
        store.append(incoming(5))
        ckpt.create(store, OLD)
        store.append(incoming(8)[5:])
        ckpt.create(store, NEW, rotate=True)
        report = verify_store(store, public_keys=[NEW.verifier.text])
        assert not report.ok and report.reason is not None
        assert f"checkpoint #1 (size 5) is signed only by {OLD.verifier.id}" in report.reason
        assert verify_store(store, public_keys=[NEW.verifier.text, OLD.verifier.text]).ok
        assert verify_store(store).ok  # unpinned: each by the key stored beside it


def test_a_retired_key_signing_after_the_handover_is_not_accepted(rotated: Store) -> None:
    """Whoever still holds the retired key cannot add checkpoints the new key accepts."""
    rotated.append(incoming(33)[30:])
    ckpt.create(rotated, OLD, rotate=True)
    report = verify_store(rotated, public_keys=[NEW.verifier.text])
    assert not report.ok and report.reason is not None
    assert report.reason.startswith(f"checkpoint #5 (size 33) is signed only by {OLD.verifier.id}")


def test_trusted_keys_with_nothing_signed_fail(db_path: Path) -> None:
    with Store.open(db_path) as store:
        report = verify_store(store, public_keys=[NEW.verifier.text])
        assert (report.ok, report.bad_seq) == (False, None)
        assert "no checkpoint is stored" in str(report.reason)
        store.append(incoming(2))
        assert "nothing is signed" in str(
            verify_store(store, public_keys=[NEW.verifier.text]).reason
        )
        assert verify_store(store).ok  # without keys: as before


# -- a failed verify still reports the root of what it verified ---------------------------------


def test_a_failed_verify_reports_the_root_of_the_verified_entries(
    base_ledger: Path, tmp_path: Path
) -> None:
    with Store.open(base_ledger, read_only=True) as store:
        hashes = leaves(store)
        origin = store.origin()
    path = tampered(
        base_ledger,
        tmp_path,
        lambda con: con.execute("UPDATE entries SET payload = payload || 'x'::BLOB WHERE seq = 5"),
    )
    report = run_verify(path)
    assert (report.ok, report.bad_seq) == (False, 5)
    assert report.merkle_root == merkle.root(hashes[:5]).hex()
    assert report.merkle_root_size == 5
    assert "seq 0..4" in report.merkle_root_basis
    assert report.origin == origin
    first = tampered(
        base_ledger,
        tmp_path,
        lambda con: con.execute("UPDATE entries SET payload = payload || 'x'::BLOB WHERE seq = 0"),
    )
    report = run_verify(first)
    assert (report.merkle_root, report.merkle_root_size) == (merkle.EMPTY_ROOT.hex(), 0)
    assert "no entry verified" in report.merkle_root_basis


def test_a_failed_checkpoint_check_reports_the_whole_root_not_the_empty_one(
    base_ledger: Path,
) -> None:
    stranger = Signer.generate("example.org/stranger")
    note = signed_note.sign_note(
        signed_note.checkpoint_body("agent-ledger/ledger", 1, bytes(32)), stranger
    )
    with Store.open(base_ledger, read_only=True) as store:
        report = verify_store(store, checkpoint=note, public_keys=[OLD.verifier.text])
        hashes = leaves(store)
    assert not report.ok and "does not verify" in str(report.reason)
    assert report.merkle_root == merkle.root(hashes).hex() != merkle.EMPTY_ROOT.hex()
    assert report.merkle_root_size == N
    assert report.to_dict()["merkle_root_basis"].startswith("recomputed from the entry hashes")


# -- entries in the Confluent wire format: verified offline with the schemas the file keeps ----


@pytest.fixture
def confluent_db(tmp_path: Path) -> Path:
    """Single-object entries, entries naming id 7 (the current schema) and one naming id 3 (an
    older writer schema, read through fastavro), each id's schema stored with them."""
    import json

    from ledger.store.schemas import StoredSchema
    from tests.contract.test_codec import confluent
    from tests.store.test_schemas import STORED, confluent_incoming
    from tests.store.test_store import incoming as single_object

    path = tmp_path / "confluent.duckdb"
    codec = default_codec()
    old = confluent(3, older_schema(), OLD_DATUM)
    record, _ = Codec(schema_ids={3: older_schema()}).decode(old)
    older = Incoming("old-1", "principal.registered", OLD_DATUM["occurred_at"], old, "t", record)
    schemas = {7: STORED, 3: StoredSchema(3, json.dumps(older_schema()), "file:3.avsc")}
    with Store.open(path) as store:
        store.append([single_object(codec, f.principal("agent:p")), older], schemas=schemas)
        store.append(
            [confluent_incoming(f.action(f"a-{i}", "agent:p", minutes=i)) for i in range(20)],
            schemas=schemas,
        )
    return path


def test_confluent_entries_verify_offline_with_the_stored_schemas(confluent_db: Path) -> None:
    with Store.open(confluent_db, read_only=True) as store:
        report = verify_store(store)
    assert report.ok, report.reason
    assert report.size == 22 and "writer schemas kept by schema id" in report.checks


def test_the_bulk_screen_takes_the_current_schemas_ids(confluent_db: Path) -> None:
    from ledger.contract.framing import confluent_header

    with Store.open(confluent_db, read_only=True) as store:
        batch = store.con.sql(
            "SELECT seq, event_id, type, epoch_us(occurred_at), payload, prev_hash, entry_hash "
            "FROM entries ORDER BY seq"
        ).to_arrow_table()
    batch = batch.combine_chunks().to_batches()[0]
    header = default_codec().header
    ok = verify_module._envelope_matches(batch, header, frozenset({confluent_header(7)}))
    # single-object and id 7 in bulk; id 3 (another schema) is left to the exact check
    assert ok.tolist() == [True, False] + [True] * 20
    assert verify_module._envelope_matches(batch, header).tolist() == [True] + [False] * 21


def _swap_fields(text: str) -> str:
    """The stored schema with ActionPerformed's `operation` and `resource` renamed into each
    other: still a schema the reader resolves, and every action now reads the other way."""
    import json

    schema = json.loads(text)
    data = next(fl for fl in schema["fields"] if fl["name"] == "data")
    action = next(r for r in data["type"] if r["name"] == "ActionPerformed")
    for field in action["fields"]:
        field["name"] = {"operation": "resource", "resource": "operation"}.get(
            field["name"], field["name"]
        )
    return json.dumps(schema)


def test_an_edited_schema_row_fails_verify_naming_its_id(
    confluent_db: Path, tmp_path: Path
) -> None:
    def edit(con: duckdb.DuckDBPyConnection) -> None:
        (text,) = con.execute("SELECT schema FROM schema_ids WHERE schema_id = 7").fetchone()
        con.execute("UPDATE schema_ids SET schema = ? WHERE schema_id = 7", [_swap_fields(text)])

    path = tampered(confluent_db, tmp_path, edit)
    with Store.open(path, read_only=True) as store:
        report = verify_store(store)
        # the entries still hash and chain: only the stored schema tells them apart
        assert report.merkle_root and report.bad_seq is None
    assert not report.ok
    assert "schema_ids: the row of schema id 7 differs from the one the ledger stored" in str(
        report.reason
    )
    assert report.derived_total >= 20  # and the projections no longer match what entries say


def test_a_deleted_schema_row_fails_verify_at_the_first_entry_naming_it(
    confluent_db: Path, tmp_path: Path
) -> None:
    path = tampered(confluent_db, tmp_path, lambda con: con.execute("DELETE FROM schema_ids"))
    with Store.open(path, read_only=True) as store:
        report = verify_store(store)
    assert not report.ok and report.bad_seq == 1
    assert "payload does not decode: unknown schema id 3" in str(report.reason)


def test_verify_workers_read_the_stored_schemas_too(
    confluent_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ledger.integrity import derived

    monkeypatch.setattr(derived, "PARALLEL_FROM", 1)
    with Store.open(confluent_db, read_only=True) as store:
        check = derived.DerivedCheck.start(store)
        assert check._workers
        assert check.result() == ([], 0)
    assert check.redone == 0
