"""The DuckDB ledger file: chained appends, dedupe, quarantine, offsets, one transaction each."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import duckdb
import pytest

import ledger.store as store_module
from ledger.contract import events
from ledger.contract.codec import Codec
from ledger.errors import StoreError
from ledger.store import Appended, Incoming, Rejected, Store
from ledger.store.quarantine import conflict_reason
from ledger.tlog import chain
from tests import factories as f


def incoming(codec: Codec, ev: dict[str, Any], source: str = "test") -> Incoming:
    record = events.to_record(events.parse_event(ev))
    return Incoming(
        ev["event_id"], ev["type"], record["occurred_at"], codec.encode(record), source, record
    )


def sample(codec: Codec, n: int) -> list[Incoming]:
    return [
        incoming(codec, f.action(f"a-{i}", "agent:p", minutes=i), f"file:x.jsonl:{i + 1}")
        for i in range(n)
    ]


def test_open_creates_the_documented_tables(db_path: Path) -> None:
    with Store.open(db_path) as store:
        columns = store.con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_name IN ('entries', 'quarantine', 'consumer_offsets', 'ledger_meta')"
        ).fetchall()
    got = {(t, c): d for t, c, d in columns}
    assert got[("entries", "seq")] == "BIGINT"
    assert got[("entries", "event_id")] == "VARCHAR"
    assert got[("entries", "occurred_at")] == "TIMESTAMP WITH TIME ZONE"
    assert got[("entries", "recorded_at")] == "TIMESTAMP WITH TIME ZONE"
    for blob in ("payload", "prev_hash", "entry_hash"):
        assert got[("entries", blob)] == "BLOB"
    assert got[("entries", "source")] == "VARCHAR"
    assert {c for t, c in got if t == "quarantine"} == {"received_at", "source", "raw", "reason"}
    assert ("consumer_offsets", "next_offset") in got


def test_append_chains_entries_from_genesis(db_path: Path, codec: Codec) -> None:
    batch = sample(codec, 5)
    with Store.open(db_path) as store:
        result = store.append(batch[:2])
        result2 = store.append(batch[2:])
        rows = store.con.execute(
            "SELECT seq, event_id, type, epoch_us(occurred_at), payload, prev_hash, entry_hash, "
            "source FROM entries ORDER BY seq"
        ).fetchall()
        head = store.head()
        recorded = store.recorded_head()
    assert (result.appended, result2.appended, result2.size) == (2, 3, 5)
    prev = bytes(32)
    for i, (seq, eid, etype, occ, payload, prev_hash, ehash, source) in enumerate(rows):
        assert seq == i
        assert (eid, etype, occ, source) == (
            batch[i].event_id,
            "action.performed",
            batch[i].occurred_at,
            batch[i].source,
        )
        assert payload == batch[i].payload
        assert prev_hash == prev
        assert ehash == hashlib.sha256(b"\0" + i.to_bytes(8, "big") + prev + payload).digest()
        prev = ehash
    assert head == (5, prev) == recorded
    assert result2.head_hash == prev


def test_duplicates_are_counted_not_appended(db_path: Path, codec: Codec) -> None:
    batch = sample(codec, 3)
    with Store.open(db_path) as store:
        first = store.append([batch[0], batch[1], batch[0]])
        second = store.append([batch[1], batch[2]])
    assert (first.appended, first.duplicates) == (2, 1)
    assert (second.appended, second.duplicates) == (1, 1)
    with Store.open(db_path) as store:  # ids are reloaded from the file
        third = store.append(batch)
        assert (third.appended, third.duplicates, third.size) == (0, 3, 3)
        assert store.counts() == {"entries": 3, "quarantined": 0}


# -- conflicting duplicates: an id collision with other bytes is evidence, never dropped -------


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dup2(codec: Codec) -> list[Incoming]:
    """The reported case: one event_id, three different events."""
    return [
        incoming(codec, f.action("a-1", "agent:p", event_id="dup-2"), "kafka:t/0/5"),
        incoming(
            codec,
            f.action("a-2", "agent:p", operation="hr:delete", resource="hr/all", event_id="dup-2"),
            "kafka:t/0/6",
        ),
        incoming(codec, f.retired("agent:p", event_id="dup-2"), "kafka:t/1/9"),
    ]


def one_byte_off(item: Incoming) -> Incoming:
    payload = item.payload[:-1] + bytes([item.payload[-1] ^ 1])
    return item._replace(payload=payload, source=item.source + "'")


def quarantine_rows(store: Store) -> list[tuple[str, bytes | None, str]]:
    return [
        (source, None if raw is None else bytes(raw), reason)
        for source, raw, reason in store.con.execute(
            "SELECT source, raw, reason FROM quarantine ORDER BY rowid"
        ).fetchall()
    ]


def test_conflict_reason_names_the_seq_and_both_hashes() -> None:
    assert conflict_reason(12, b"old", b"new") == (
        f"conflicting duplicate of seq 12: stored payload sha256 {sha(b'old')}, "
        f"received sha256 {sha(b'new')}"
    )


@pytest.mark.parametrize("reopen", [False, True], ids=["recent id", "id from the file"])
def test_a_conflicting_duplicate_of_a_stored_entry_is_quarantined(
    db_path: Path, codec: Codec, reopen: bool
) -> None:
    first, second, third = dup2(codec)
    store = Store.open(db_path)
    try:
        store.append(sample(codec, 3))
        assert store.append([first]).appended == 1  # seq 3
        if reopen:  # the id is then found by its hash in the sorted base, confirmed by seq
            store.close()
            store = Store.open(db_path)
        result = store.append([second])
        assert (result.appended, result.duplicates, result.quarantined) == (0, 0, 1)
        assert quarantine_rows(store) == [
            (
                "kafka:t/0/6",
                second.payload,
                f"conflicting duplicate of seq 3: stored payload sha256 {sha(first.payload)}, "
                f"received sha256 {sha(second.payload)}",
            )
        ]
        assert store.con.execute(
            "SELECT seq, payload FROM entries WHERE event_id = 'dup-2'"
        ).fetchall() == [(3, first.payload)]
        assert store.counts() == {"entries": 4, "quarantined": 1}
        assert store.append([third]).quarantined == 1
    finally:
        store.close()


def test_the_reported_dup_2_case_in_one_batch(db_path: Path, codec: Codec) -> None:
    """dup-2 three times (crm:read, then hr:delete hr/all, then principal.retired)."""
    first, second, third = dup2(codec)
    with Store.open(db_path) as store:
        store.append(sample(codec, 2))
        result = store.append([first, second, third])
        assert (result.appended, result.duplicates, result.quarantined) == (1, 0, 2)
        rows = quarantine_rows(store)
        assert [(source, raw) for source, raw, _ in rows] == [
            ("kafka:t/0/6", second.payload),
            ("kafka:t/1/9", third.payload),
        ]
        for (_, raw, reason), item in zip(rows, (second, third), strict=True):
            assert raw is not None
            assert reason == conflict_reason(2, first.payload, item.payload)
            assert reason.startswith("conflicting duplicate of seq 2: ")
            assert sha(first.payload) in reason and sha(raw) in reason


def test_an_in_batch_conflict_cites_the_seq_its_first_copy_gets(
    db_path: Path, codec: Codec
) -> None:
    new = sample(codec, 4)
    first, second, _ = dup2(codec)
    with Store.open(db_path) as store:
        store.append(new[:2])  # seqs 0, 1
        result = store.append([new[2], first, new[3], second, new[2]])
        assert (result.appended, result.duplicates, result.quarantined) == (3, 1, 1)
        assert store.con.execute("SELECT seq FROM entries WHERE event_id = 'dup-2'").fetchall() == [
            (3,)
        ]
        ((source, raw, reason),) = quarantine_rows(store)
        assert (source, raw) == ("kafka:t/0/6", second.payload)
        assert reason == conflict_reason(3, first.payload, second.payload)


def test_every_later_copy_is_compared_with_the_first(db_path: Path, codec: Codec) -> None:
    first, second, third = dup2(codec)
    with Store.open(db_path) as store:
        # exact repeat of the first, a conflict, a repeat of the conflict, another conflict
        result = store.append([first, first, second, second, third])
        assert (result.appended, result.duplicates, result.quarantined) == (1, 1, 3)
        reasons = [reason for _, _, reason in quarantine_rows(store)]
        assert reasons == [
            conflict_reason(0, first.payload, second.payload),
            conflict_reason(0, first.payload, second.payload),
            conflict_reason(0, first.payload, third.payload),
        ]
        again = store.append([third, first, second])
        assert (again.appended, again.duplicates, again.quarantined) == (0, 1, 2)


def test_one_differing_byte_is_a_conflict(db_path: Path, codec: Codec) -> None:
    item = sample(codec, 1)[0]
    changed = one_byte_off(item)
    with Store.open(db_path) as store:
        in_batch = store.append([item, changed])
        in_ledger = store.append([changed])
        assert (in_batch.appended, in_batch.quarantined, in_ledger.quarantined) == (1, 1, 1)
        assert [raw for _, raw, _ in quarantine_rows(store)] == [changed.payload] * 2


def test_exact_repeats_stay_silent_duplicates(db_path: Path, codec: Codec) -> None:
    batch = sample(codec, 3)
    with Store.open(db_path) as store:
        store.append(batch)
        result = store.append([*batch, *batch], [Rejected("file:x:9", b"{", "not valid JSON")])
        assert (result.appended, result.duplicates, result.quarantined) == (0, 6, 1)
        assert [reason for _, _, reason in quarantine_rows(store)] == ["not valid JSON"]


def test_conflicts_commit_with_the_batch_or_not_at_all(db_path: Path, codec: Codec) -> None:
    first, second, _ = dup2(codec)
    ext = RecordingExtension(fail=True)
    with Store.open(db_path, extensions=[ext]) as store:
        with pytest.raises(RuntimeError, match="projection bug"):
            store.append([first, second], [Rejected("s", b"x", "r")])
        assert store.counts() == {"entries": 0, "quarantined": 0}
        ext.fail = False
        result = store.append([first, second], [Rejected("s", b"x", "r")])
        assert (result.appended, result.quarantined) == (1, 2)
        assert [s for s, _, _ in quarantine_rows(store)] == ["s", "kafka:t/0/6"]


def test_quarantine_and_offsets_are_stored(db_path: Path, codec: Codec) -> None:
    with Store.open(db_path) as store:
        store.append(
            sample(codec, 1),
            [Rejected("file:x.jsonl:2", b"{bad", "not valid JSON"), Rejected("k:t/0/1", None, "?")],
            {("topic", 0): 10, ("topic", 1): 4},
        )
        store.append([], [], {("topic", 0): 12})
        rows = store.con.execute(
            "SELECT source, raw, reason FROM quarantine ORDER BY source"
        ).fetchall()
        assert rows == [("file:x.jsonl:2", b"{bad", "not valid JSON"), ("k:t/0/1", None, "?")]
        assert store.offsets("topic") == {0: 12, 1: 4}
        assert store.offsets("other") == {}
        assert store.counts() == {"entries": 1, "quarantined": 2}


class RecordingExtension:
    name = "recording"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.seen: list[Appended] = []

    def create_schema(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute("CREATE TABLE IF NOT EXISTS derived (seq BIGINT)")

    def on_append(self, con: duckdb.DuckDBPyConnection, appended: Appended) -> None:
        seqs = list(range(appended.first_seq, appended.first_seq + len(appended.batch)))
        con.execute("INSERT INTO derived SELECT unnest(?)", [seqs])
        if self.fail:
            raise RuntimeError("projection bug")
        self.seen.append(appended)


def test_extensions_run_inside_the_append_transaction(
    db_path: Path, codec: Codec, monkeypatch: pytest.MonkeyPatch
) -> None:
    ext = RecordingExtension()
    batch = sample(codec, 4)
    with Store.open(db_path, extensions=[ext]) as store:
        store.append(batch[:2])
        (seen,) = ext.seen
        assert seen.first_seq == 0
        assert seen.batch.event_id == [batch[0].event_id, batch[1].event_id]
        assert seen.batch.payload == [batch[0].payload, batch[1].payload]
        assert seen.prev_hash == chain.GENESIS
        assert seen.hashes[1] == chain.entry_hash(1, seen.hashes[0], batch[1].payload)
        ext.fail = True
        with pytest.raises(RuntimeError, match="projection bug"):
            store.append(batch[2:], [Rejected("s", b"x", "r")], {("t", 0): 5})
        # nothing of the failed batch is visible: entries, quarantine, offsets, derived rows
        assert store.counts() == {"entries": 2, "quarantined": 0}
        assert store.offsets("t") == {}
        assert store.con.execute("SELECT count(*) FROM derived").fetchall() == [(2,)]
        assert store.recorded_head() == store.head()
        ext.fail = False
        result = store.append(batch[2:])
        assert (result.appended, result.size) == (2, 4)
        assert [a.first_seq for a in ext.seen] == [0, 2]


def test_a_failed_append_leaves_the_chain_consistent(
    db_path: Path, codec: Codec, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = [RecordingExtension(fail=True)]
    with Store.open(db_path, extensions=failing) as store, pytest.raises(RuntimeError):
        store.append(sample(codec, 2))
    with Store.open(db_path, extensions=[]) as store:
        result = store.append(sample(codec, 2))
        assert (result.appended, result.size) == (2, 2)
        assert store.con.execute("SELECT min(seq) FROM entries").fetchall() == [(0,)]


def test_read_only_store(db_path: Path, codec: Codec) -> None:
    with pytest.raises(StoreError, match="no ledger at"):
        Store.open(db_path, read_only=True)
    with Store.open(db_path) as store:
        store.append(sample(codec, 1))
    with Store.open(db_path, read_only=True) as store:
        assert store.head()[0] == 1
        with pytest.raises(StoreError, match="read-only"):
            store.append(sample(codec, 1))


def test_a_duckdb_file_that_is_not_a_ledger(tmp_path: Path) -> None:
    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE t (x INT)")
    con.close()
    with pytest.raises(StoreError, match="not an agent-ledger"):
        Store.open(path, read_only=True)


def test_not_a_duckdb_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.duckdb"
    path.write_text("hello, I am a text file" * 100)
    with pytest.raises(StoreError, match="cannot open ledger"):
        Store.open(path)


def test_entries_are_immutable(codec: Codec) -> None:
    item = sample(codec, 1)[0]
    with pytest.raises(AttributeError):
        item.payload = b"x"  # type: ignore[misc]


def test_default_db_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEDGER_DB", raising=False)
    assert store_module.default_db_path() == "ledger.duckdb"
    monkeypatch.setenv("LEDGER_DB", "/tmp/x.duckdb")
    assert store_module.default_db_path() == "/tmp/x.duckdb"


def test_closing_folds_a_crashed_runs_wal_into_the_file(tmp_path: Path) -> None:
    """A process killed after appending leaves entries only in FILE.wal; the next writable
    open and close (even with nothing appended) puts them in the file itself, so a copy of
    the file alone holds every entry."""
    import shutil
    import subprocess
    import sys

    db = tmp_path / "l.duckdb"
    script = (
        "import os, sys\n"
        "from ledger.contract.codec import default_codec\n"
        "from ledger.store import Store\n"
        "from tests.store.test_store import sample\n"
        "store = Store.open(sys.argv[1])\n"
        "store.append(sample(default_codec(), 40))\n"
        "os._exit(0)  # as a kill -9 would: no close, no checkpoint\n"
    )
    subprocess.run([sys.executable, "-c", script, str(db)], check=True, cwd=Path.cwd())
    with Store.open(db) as store:
        assert store.size() == 40
    wal = db.with_name(db.name + ".wal")
    assert not wal.exists() or wal.stat().st_size == 0
    copy = tmp_path / "copy.duckdb"
    shutil.copy(db, copy)
    with Store.open(copy, read_only=True) as store:
        assert store.size() == 40


def test_an_origin_given_at_open_is_the_new_ledgers_and_must_match_an_existing_one(
    tmp_path: Path,
) -> None:
    """`ledger consume --origin X` creates a ledger of origin X, and on an existing ledger of
    another origin it is refused (it names another log), with or without a signing key."""
    db = tmp_path / "l.duckdb"
    with Store.open(db, origin="example.com/prod") as store:
        assert store.origin() == "example.com/prod"
    with Store.open(db, origin="example.com/prod") as store:
        assert store.origin() == "example.com/prod"
    with Store.open(db) as store:  # no origin asked: the ledger's own
        assert store.origin() == "example.com/prod"
    with pytest.raises(
        StoreError, match=r"origin is 'example\.com/prod'.*not 'example\.com/stage'"
    ):
        Store.open(db, origin="example.com/stage")
