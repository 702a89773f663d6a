"""File ingest: JSON Lines -> validated, Avro-encoded, chained entries; bad lines quarantined."""

from __future__ import annotations

import gc
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.generate import EventGenerator, generate, write_jsonl
from ledger.contract import events
from ledger.contract.codec import Codec
from ledger.errors import LedgerError
from ledger.store import Incoming, Rejected, Store
from ledger.stream.ingest import IngestSummary, fewer_collections, ingest, prepare, read_lines
from tests import factories as f
from tests.conftest import write_jsonl as write_events


def test_prepare_encodes_exactly_what_the_codec_decodes(codec: Codec) -> None:
    ev = f.granted("d-1", "user:a", "agent:b", scopes=["crm:*"])
    item = prepare(json.dumps(ev).encode(), "file:x:1", codec)
    assert isinstance(item, Incoming)
    record, name = codec.decode(item.payload)
    assert record == item.record == events.to_record(events.parse_event(ev))
    assert (item.event_id, item.type, item.source) == (ev["event_id"], ev["type"], "file:x:1")
    assert item.occurred_at == record["occurred_at"]
    assert name == "ledger.v1.DelegationGranted"


def test_prepare_rejects_with_the_line_and_reason(codec: Codec) -> None:
    line = b'{"event_id": "", "type": "action.performed"}'
    item = prepare(line, "file:x:7", codec)
    assert isinstance(item, Rejected)
    assert item.source == "file:x:7"
    assert item.raw == line
    assert "event_id" in item.reason


def test_read_lines_numbers_lines_and_skips_blank_ones(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\n\n   \n{"b": 2}\r\n{"c": 3}')
    assert list(read_lines([str(path)])) == [
        (f"file:{path}:1", b'{"a": 1}'),
        (f"file:{path}:4", b'{"b": 2}'),
        (f"file:{path}:5", b'{"c": 3}'),
    ]


def test_read_lines_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = io.TextIOWrapper(io.BytesIO(b'{"x": 1}\n{"y": 2}\n'))
    monkeypatch.setattr(sys, "stdin", fake)
    assert [s for s, _ in read_lines(["-"])] == ["file:<stdin>:1", "file:<stdin>:2"]


def test_missing_file_is_a_ledger_error(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="cannot read"):
        list(read_lines([str(tmp_path / "nope.jsonl")]))


def test_ingest_appends_quarantines_and_counts(db_path: Path, tmp_path: Path) -> None:
    good = [f.principal("agent:p"), f.action("a-1", "agent:p")]
    path = write_events(
        tmp_path / "mixed.jsonl",
        [good[0], "{not json", good[1], json.dumps({**good[1], "event_id": ""}), good[0]],
    )
    seen: list[IngestSummary] = []
    with Store.open(db_path) as store:
        summary = ingest(store, read_lines([str(path)]), progress=seen.append)
        rows = store.con.execute(
            "SELECT source, reason, raw FROM quarantine ORDER BY source"
        ).fetchall()
        sources = store.con.execute("SELECT source FROM entries ORDER BY seq").fetchall()
    assert (summary.lines, summary.appended, summary.duplicates, summary.quarantined) == (
        5,
        2,
        1,
        2,
    )
    assert summary.size == 2 and len(summary.head_hash) == 64
    assert [s for s, _, _ in rows] == [f"file:{path}:2", f"file:{path}:4"]
    assert "not valid JSON" in rows[0][1]
    assert "event_id" in rows[1][1]
    assert rows[0][2] == b"{not json"
    assert sources == [(f"file:{path}:1",), (f"file:{path}:3",)]
    assert seen and seen[-1].appended == 2
    assert summary.to_dict()["quarantined"] == 2


def test_batch_size_does_not_change_the_chain(tmp_path: Path) -> None:
    evs = list(generate(60, seed=3))
    heads = []
    for batch_size in (1, 7, 1000):
        path = tmp_path / f"b{batch_size}.duckdb"
        with Store.open(path) as store:
            source = [(f"file:g:{i}", json.dumps(ev).encode()) for i, ev in enumerate(evs)]
            summary = ingest(store, source, batch_size=batch_size)
            assert summary.appended == 60
            heads.append(store.head())
    assert heads[0] == heads[1] == heads[2]


def test_fewer_collections_restores_the_threshold() -> None:
    before = gc.get_threshold()
    with fewer_collections(123_456):
        assert gc.get_threshold()[0] == 123_456
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError
    assert gc.get_threshold() == before


# -- the benchmark's generator: realistic, valid, deterministic -----------------------------


def test_generator_is_deterministic_and_every_event_is_valid() -> None:
    first = list(generate(3000, seed=42))
    assert first == list(generate(3000, seed=42))
    assert first != list(generate(3000, seed=43))
    assert len({e["event_id"] for e in first}) == 3000
    for ev in first:
        events.parse_event(ev)
    kinds = {e["type"] for e in first}
    assert kinds >= {
        "principal.registered",
        "delegation.granted",
        "credential.issued",
        "policy.decided",
        "action.performed",
        "delegation.revoked",
    }


def test_generator_builds_deep_forests_and_injects_misconduct() -> None:
    gen = EventGenerator(seed=1)
    stream = gen.events()
    evs = [next(stream) for _ in range(20_000)]
    parents: dict[str, str | None] = {}
    for ev in evs:
        if ev["type"] == "delegation.granted":
            parents[ev["data"]["delegation_id"]] = ev["data"]["parent_delegation_id"]

    def depth(d: str | None) -> int:
        return 0 if d is None else 1 + depth(parents.get(d))

    assert max(depth(d) for d in parents) == 8
    acted_at: set[int] = set()
    for ev in evs:
        if ev["type"] == "action.performed" and ev["data"]["delegation_id"] in parents:
            acted_at.add(depth(ev["data"]["delegation_id"]))
    assert acted_at == set(range(1, 9))  # actions at every level of the trees
    assert len(gen.injected) >= 6
    unowned = [
        e
        for e in evs
        if e["type"] == "principal.registered"
        and e["data"]["kind"] == "agent"
        and e["data"]["owner_id"] is None
    ]
    assert len(unowned) == gen.injected["UNOWNED_AGENT"]


def test_write_jsonl_round_trips(tmp_path: Path, db_path: Path) -> None:
    path = write_jsonl(tmp_path / "sub" / "g.jsonl", 500, seed=2)
    rows: list[dict[str, Any]] = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == list(generate(500, seed=2))
    with Store.open(db_path) as store:
        summary = ingest(store, read_lines([str(path)]))
    assert (summary.appended, summary.quarantined) == (500, 0)


# -- batching does not change the ledger, byte for byte ------------------------------------


def _mixed_lines(n: int) -> list[tuple[str, bytes]]:
    out = []
    for i, ev in enumerate(generate(n, seed=8)):
        out.append((f"file:m:{2 * i + 1}", json.dumps(ev).encode()))
        if i % 97 == 0:
            out.append((f"file:m:{2 * i + 2}", b'{"broken": '))
    out.append(out[5])  # a duplicate
    return out


def _ledger_state(path: Path) -> tuple[Any, ...]:
    with Store.open(path, read_only=True) as store:
        entries = store.con.execute(
            "SELECT seq, source, entry_hash FROM entries ORDER BY seq"
        ).fetchall()
        quarantine = store.con.execute("SELECT source, reason FROM quarantine").fetchall()
    return entries, sorted(quarantine)


def test_batch_size_does_not_change_the_ledger(tmp_path: Path) -> None:
    lines = _mixed_lines(700)
    with Store.open(tmp_path / "big.duckdb") as store:
        whole = ingest(store, lines)
    with Store.open(tmp_path / "small.duckdb") as store:
        batched = ingest(store, lines, batch_size=37)
    assert (whole.appended, whole.duplicates, whole.quarantined) == (700, 1, 8)
    assert batched == whole
    assert _ledger_state(tmp_path / "big.duckdb") == _ledger_state(tmp_path / "small.duckdb")
