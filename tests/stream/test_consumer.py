"""The Kafka consumer against the real embedded broker: quarantine, dedupe, resume, hooks."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import fastavro
import pytest
from aiokafka import AIOKafkaConsumer
from click.testing import CliRunner
from fastavro.schema import fingerprint, to_parsing_canonical_form

from ledger.cli import cli
from ledger.contract import events
from ledger.contract.codec import Codec
from ledger.integrity.verify import verify_store
from ledger.store import Store
from ledger.stream.broker import EmbeddedBroker
from ledger.stream.consumer import ConsumeStats
from ledger.stream.kafka_errors import TopicChangedError
from tests import factories as f
from tests.kafkautil import consume_into, produce, wire


def _entries(db: Path) -> list[tuple[Any, ...]]:
    with Store.open(db, read_only=True) as store:
        return store.con.execute(
            "SELECT seq, event_id, payload, source FROM entries ORDER BY seq"
        ).fetchall()


def _quarantine(db: Path) -> list[tuple[Any, ...]]:
    with Store.open(db, read_only=True) as store:
        return store.con.execute(
            "SELECT source, raw, reason FROM quarantine ORDER BY received_at, source"
        ).fetchall()


@pytest.mark.integration
@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "decode-worker"])
def test_bad_messages_are_quarantined_with_reason_and_coordinates(
    broker: EmbeddedBroker,
    topic: str,
    codec: Codec,
    db_path: Path,
    workers: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good1, good2 = f.principal("agent:a"), f.action("act-1", "agent:a")
    valid = wire(good1)
    empty_id = codec.encode(
        events.to_record(events.parse_event(f.principal("agent:b"))) | {"event_id": ""}
    )
    mismatch = dict(events.to_record(events.parse_event(f.granted("d-1", "user:a", "agent:a"))))
    mismatch["type"] = "action.performed"
    mismatch["data"] = ("ledger.v1.DelegationGranted", mismatch["data"])
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(codec.schema), mismatch)
    bad = [
        (b"\x01garbage" + bytes(range(40)), "not Avro single-object encoding"),
        (b"\x00garbage" + bytes(range(40)), f"unknown schema id {int.from_bytes(b'garb')}"),
        (b"\xc3\x01" + b"\xab" * 8 + valid[10:], "unknown schema fingerprint abab"),
        (valid[:-25], "truncated"),
        (empty_id, "event_id: String should have at least 1 character"),
        (codec.header + body.getvalue(), "does not match data record DelegationGranted"),
        (valid + b"\x00\x01", "trailing bytes"),
        (b"", "empty message"),
    ]
    produce(
        broker.bootstrap_servers,
        topic,
        [valid] + [raw for raw, _ in bad] + [wire(good2)],
        partition=0,
    )

    with caplog.at_level(logging.WARNING, logger="ledger.consume"):
        stats = consume_into(db_path, broker.bootstrap_servers, topic, decode_workers=workers)

    assert (stats.appended, stats.quarantined) == (2, len(bad))
    said = [r.getMessage() for r in caplog.records if "quarantined (first: " in r.getMessage()]
    assert sum(int(m.split()[0]) for m in said) == len(bad)  # never silent, even at exit 0
    assert f"kafka:{topic}/0/1" in said[0]
    entries = _entries(db_path)
    assert [e[1] for e in entries] == [good1["event_id"], good2["event_id"]]
    assert entries[1][3] == f"kafka:{topic}/0/{len(bad) + 1}"
    rows = {source: (raw, reason) for source, raw, reason in _quarantine(db_path)}
    for offset, (raw, why) in enumerate(bad, start=1):
        got_raw, reason = rows[f"kafka:{topic}/0/{offset}"]
        assert (got_raw or b"") == raw
        assert why in reason, (offset, reason)
    with Store.open(db_path, read_only=True) as store:
        assert verify_store(store).ok
        assert store.offsets(topic)[0] == len(bad) + 2


@pytest.mark.integration
def test_same_event_sent_twice_is_one_entry(
    broker: EmbeddedBroker, topic: str, codec: Codec, db_path: Path
) -> None:
    ev = [f.principal(f"agent:{i}") for i in range(5)]
    payloads = [wire(e) for e in ev]
    produce(broker.bootstrap_servers, topic, [*payloads, payloads[2], payloads[0]])
    first = consume_into(db_path, broker.bootstrap_servers, topic)
    produce(broker.bootstrap_servers, topic, [payloads[1]])
    second = consume_into(db_path, broker.bootstrap_servers, topic)

    assert (first.appended, first.duplicates) == (5, 2)
    assert (second.received, second.appended, second.duplicates) == (1, 0, 1)
    assert sorted(e[1] for e in _entries(db_path)) == sorted(e["event_id"] for e in ev)


@pytest.mark.integration
def test_resumes_from_ledger_offsets_not_kafka_group_offsets(
    broker: EmbeddedBroker, topic: str, codec: Codec, db_path: Path
) -> None:
    first = [f.principal(f"agent:{i}") for i in range(30)]
    more = [f.principal(f"agent:m{i}") for i in range(12)]
    produce(broker.bootstrap_servers, topic, [wire(e) for e in first])
    consume_into(db_path, broker.bootstrap_servers, topic, group="ledger-a")
    produce(broker.bootstrap_servers, topic, [wire(e) for e in more])

    # A brand-new group has no Kafka offsets at all: only the ledger knows where to resume.
    stats = consume_into(db_path, broker.bootstrap_servers, topic, group="ledger-b")

    assert (stats.received, stats.appended, stats.duplicates) == (12, 12, 0)
    assert len(_entries(db_path)) == 42
    assert sum(int(o) for o in stats.offsets.values()) == 42


@pytest.mark.integration
def test_checkpointer_is_called_after_batches_and_when_idle(
    broker: EmbeddedBroker, topic: str, codec: Codec, db_path: Path
) -> None:
    calls: list[tuple[bool, int]] = []

    class Recorder:
        def maybe_checkpoint(self, store: Store, idle: bool) -> None:
            calls.append((idle, store.size()))

    produce(broker.bootstrap_servers, topic, [wire(f.principal("agent:x"))])
    consume_into(db_path, broker.bootstrap_servers, topic, checkpointer=Recorder())

    assert (False, 1) in calls
    assert (True, 1) in calls
    assert calls.index((False, 1)) < len(calls) - 1


@pytest.mark.integration
def test_external_fastavro_producer_is_consumed_like_the_emitter(
    broker: EmbeddedBroker, topic: str, codec: Codec, db_path: Path
) -> None:
    """A producer that knows only `ledger schema show`: its own fingerprint and encoder."""
    shown = CliRunner().invoke(cli, ["schema", "show"])
    assert shown.exit_code == 0
    schema = fastavro.parse_schema(json.loads(shown.output))
    header = b"\xc3\x01" + bytes.fromhex(
        fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")
    )
    sent = [
        f.principal("agent:ext"),
        f.granted("d-ext", "user:alice", "agent:ext", purpose="p"),
        f.credential("c-ext", "agent:ext", delegation="d-ext", expires=None),
        f.decided("dec-ext", "agent:ext", delegation="d-ext"),
        f.action("a-ext", "agent:ext", delegation="d-ext", tool="sql"),
        f.revoked("d-ext"),
    ]
    names = {t: spec[2] for t, spec in events.EVENT_TYPES.items()}
    values = []
    for ev in sent:
        parsed = events.parse_event(ev)  # datetimes, as an external producer would hold them
        datum = {
            **{k: getattr(parsed, k) for k in ("event_id", "type", "occurred_at", "producer")},
            "trace_id": None,
            "span_id": None,
            "data": (names[ev["type"]], dict(parsed.data.__dict__)),
        }
        out = io.BytesIO()
        fastavro.schemaless_writer(out, schema, datum)
        values.append(header + out.getvalue())
    produce(broker.bootstrap_servers, topic, values, partition=1)

    stats = consume_into(db_path, broker.bootstrap_servers, topic)

    assert (stats.appended, stats.quarantined) == (len(sent), 0)
    entries = _entries(db_path)
    assert [e[2] for e in entries] == values
    assert values == [wire(ev) for ev in sent]
    for (_, _, payload, _), ev in zip(entries, sent, strict=True):
        record, _name = codec.decode(payload)
        assert events.to_json_dict(record) == ev


def _lost_data(db: Path, first: list[bytes], refill: list[bytes], **kw: Any) -> ConsumeStats:
    """`first` consumed from one broker; then a broker that lost it all, refilled with
    `refill` under the same topic name, is consumed with `kw`."""
    with EmbeddedBroker() as old:
        old.create_topic("lost", 1)
        produce(old.bootstrap_servers, "lost", first)
        consume_into(db, old.bootstrap_servers, "lost")
    with EmbeddedBroker() as new:  # memory-only: the topic starts again at offset 0
        new.create_topic("lost", 1)
        produce(new.bootstrap_servers, "lost", refill)
        return consume_into(db, new.bootstrap_servers, "lost", **kw)


@pytest.mark.integration
@pytest.mark.parametrize("refill", [5, 30], ids=["shorter", "refilled-past-the-offsets"])
def test_a_broker_that_lost_its_data_stops_the_consumer_instead_of_skipping(
    db_path: Path, refill: int
) -> None:
    """The quoted case: refilled past the stored offsets, the consumer resumed there and
    skipped every record before them, exit 0, no warning."""
    first = [wire(f.principal(f"agent:{i}")) for i in range(20)]
    after = [wire(f.principal(f"agent:new{i}")) for i in range(refill)]
    with pytest.raises(TopicChangedError, match="lost/0: ") as caught:
        _lost_data(db_path, first, after)
    assert caught.value.exit_code == 5 and "--reset-offsets" in str(caught.value)
    assert len(_entries(db_path)) == 20  # nothing of the new topic was appended


@pytest.mark.integration
def test_reset_offsets_earliest_reads_a_recreated_topic_from_the_start(db_path: Path) -> None:
    first = [wire(f.principal(f"agent:{i}")) for i in range(20)]
    after = [wire(f.principal(f"agent:new{i}")) for i in range(30)]
    stats = _lost_data(db_path, first, [*after, first[0]], reset_offsets="earliest")
    assert (stats.appended, stats.duplicates) == (30, 1)
    assert len(_entries(db_path)) == 50


@pytest.mark.integration
def test_reset_offsets_stored_resumes_at_the_stored_offsets_as_told(db_path: Path) -> None:
    first = [wire(f.principal(f"agent:{i}")) for i in range(20)]
    after = [wire(f.principal(f"agent:new{i}")) for i in range(30)]
    stats = _lost_data(db_path, first, after, reset_offsets="stored")
    assert stats.appended == 10  # offsets 20..29 only: what the operator chose


@pytest.mark.integration
def test_resuming_on_the_same_topic_checks_the_mark_and_appends_nothing_twice(
    broker: EmbeddedBroker, topic: str, db_path: Path
) -> None:
    produce(broker.bootstrap_servers, topic, [wire(f.principal(f"agent:{i}")) for i in range(40)])
    consume_into(db_path, broker.bootstrap_servers, topic)
    with Store.open(db_path, read_only=True) as store:
        marks = store.marks(topic)
        offsets = store.offsets(topic)
    assert marks and all(marks[p][0] == offsets[p] - 1 for p in marks)
    produce(broker.bootstrap_servers, topic, [wire(f.principal(f"agent:b{i}")) for i in range(9)])
    stats = consume_into(db_path, broker.bootstrap_servers, topic)
    assert (stats.received, stats.appended, stats.duplicates) == (9, 9, 0)


@pytest.mark.integration
def test_rebalance_mid_stream_keeps_every_event_exactly_once(
    broker: EmbeddedBroker, topic: str, codec: Codec, db_path: Path
) -> None:
    """Another member joins the group, takes partitions for a while, leaves: nothing is lost."""
    group = "rebalanced"
    bursts = [[wire(f.principal(f"agent:{b}-{i}")) for i in range(300)] for b in range(3)]
    produce(broker.bootstrap_servers, topic, bursts[0])
    result: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: result.update(
            stats=consume_into(db_path, broker.bootstrap_servers, topic, group, until_idle=4)
        )
    )
    runner.start()

    async def intruder() -> int:
        other = AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap_servers,
            group_id=group,
            session_timeout_ms=1000,
            heartbeat_interval_ms=100,
            enable_auto_commit=False,
        )
        await other.start()
        try:
            seen = 0
            deadline = asyncio.get_running_loop().time() + 3
            while asyncio.get_running_loop().time() < deadline:
                batch = await other.getmany(timeout_ms=200)
                seen += sum(len(v) for v in batch.values())
                if other.assignment() and seen == 0:
                    await asyncio.to_thread(produce, broker.bootstrap_servers, topic, bursts[1])
                    seen = -1
            return len(other.assignment())
        finally:
            await other.stop()

    time.sleep(1.5)
    held = asyncio.run(intruder())
    produce(broker.bootstrap_servers, topic, bursts[2])
    runner.join(60)

    assert held > 0  # the intruder really took partitions away for a while
    stats = result["stats"]
    assert stats.duplicates == 0
    ids = [e[1] for e in _entries(db_path)]
    assert len(ids) == len(set(ids)) == 900
    with Store.open(db_path, read_only=True) as store:
        assert sum(store.offsets(topic).values()) == 900
        assert verify_store(store).ok


@pytest.mark.integration
def test_the_consumer_runs_duckdb_under_its_memory_limit(
    broker: EmbeddedBroker, topic: str, db_path: Path
) -> None:
    from ledger.config import load
    from ledger.stream.consumer import consume

    produce(broker.bootstrap_servers, topic, [wire(f.principal("agent:m"))])
    settings = load(
        bootstrap_servers=broker.bootstrap_servers, topic=topic, group="mem", memory_limit="300MB"
    )
    with Store.open(db_path) as store:
        stats = consume(settings, until_idle=0.5, store=store)
        limit = store.con.execute("SELECT current_setting('memory_limit')").fetchone()
    assert stats.appended == 1
    assert limit is not None and limit[0] in ("286.1 MiB", "300.0 MB")
