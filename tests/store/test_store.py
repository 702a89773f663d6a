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
