"""Producers this package did not write: librdkafka (confluent-kafka) with every codec.

Values are encoded here with fastavro from the published schema file (single-object
encoding: C3 01 + CRC-64-AVRO fingerprint + body), the way another team's service would,
never with the ledger's own codec.

kcat is not used: the one this machine's package registry has (1.7.1, librdkafka 2.0.2)
cannot parse the embedded broker's ApiVersions v3 response, so it would test Tansu, not us.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form

from ledger.integrity.verify import verify_store
from ledger.store import Store
from ledger.stream.broker import EmbeddedBroker
from tests import factories as f
from tests.kafkautil import consume_into

pytestmark = pytest.mark.integration

SCHEMA_FILE = Path(__file__).parents[2] / "ledger" / "schemas" / "audit_event.avsc"
CODECS = ["gzip", "snappy", "lz4", "zstd"]


class ForeignEncoder:
    """Single-object Avro from the .avsc file alone (Avro spec 1.11, "Single-object encoding")."""

    def __init__(self) -> None:
        raw = json.loads(SCHEMA_FILE.read_text())
        self.schema = fastavro.parse_schema(raw)
        canonical = to_parsing_canonical_form(self.schema)
        # fastavro gives the 8 fingerprint bytes in little-endian order, as the spec stores them
        self.header = b"\xc3\x01" + bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
        data = next(fl for fl in raw["fields"] if fl["name"] == "data")
        self.records = {r["name"]: r for r in data["type"]}

    def encode(self, event: dict[str, Any]) -> bytes:
        name = "".join(part.title() for part in event["type"].split("."))
        record = self.records[name]
        body = dict(event["data"])
        for fld in record["fields"]:
            value = body.get(fld["name"])
            if isinstance(value, str) and "timestamp-micros" in json.dumps(fld["type"]):
                body[fld["name"]] = _when(value)
        ns = json.loads(SCHEMA_FILE.read_text()).get("namespace", "")
        rec = {
            "event_id": event["event_id"],
            "type": event["type"],
            "occurred_at": _when(event["occurred_at"]),
            "producer": event.get("producer", "other-team"),
            "trace_id": event.get("trace_id"),
            "span_id": event.get("span_id"),
            "data": (f"{ns}.{name}" if ns else name, body),
        }
        out = BytesIO()
        fastavro.schemaless_writer(out, self.schema, rec)
        return self.header + out.getvalue()


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _events(n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [f.principal("user:alice", kind="human")]
    for i in range(n - 1):
        out.append(
            f.granted(f"d-{i}", "user:alice", f"agent:{i}")
            if i % 2 == 0
            else f.action(f"a-{i}", f"agent:{i - 1}", delegation=f"d-{i - 1}")
        )
    return out


def _librdkafka_produce(bootstrap: str, topic: str, values: list[bytes], codec: str) -> None:
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": codec,
            "linger.ms": 50,
            "acks": "all",
        }
    )
    failed: list[str] = []
    for value in values:
        producer.produce(
            topic, value=value, on_delivery=lambda err, _m: err and failed.append(str(err))
        )
        producer.poll(0)
    assert producer.flush(30) == 0
    assert not failed, failed


@pytest.mark.parametrize("codec", CODECS)
def test_librdkafka_batches_in_every_codec_enter_the_ledger(
    broker: EmbeddedBroker, topic: str, db_path: Path, codec: str
) -> None:
    events = _events(400)
    enc = ForeignEncoder()
    _librdkafka_produce(broker.bootstrap_servers, topic, [enc.encode(e) for e in events], codec)
    stats = consume_into(db_path, broker.bootstrap_servers, topic, until_idle=1.0)
    assert (stats.appended, stats.quarantined) == (len(events), 0), codec
    with Store.open(db_path, read_only=True) as store:
        ids = {r[0] for r in store.con.execute("SELECT event_id FROM entries").fetchall()}
        assert ids == {e["event_id"] for e in events}
        assert verify_store(store).ok


def test_the_foreign_encoder_writes_what_the_ledger_codec_writes() -> None:
    """The test's own encoder is a faithful second implementation, not a copy of ours."""
    from tests.kafkautil import wire

    enc = ForeignEncoder()
    for event in _events(6):
        assert enc.encode(event) == wire(event)


def test_a_transactional_producer_is_read_to_the_end_and_the_run_goes_idle(
    broker: EmbeddedBroker, topic: str, db_path: Path
) -> None:
    """Transaction markers take offsets but are never delivered: the consumer must not wait
    for them forever (`--until-idle` never fired before). Every committed record is read.

    Whether aborted records are skipped is the broker's part of read_committed (it lists
    them in each fetch response): the embedded Tansu broker does not, so librdkafka and
    aiokafka both see them there, and this test does not claim it. The consumer asks for
    read_committed (test below); Apache Kafka and Redpanda then leave them out."""
    from confluent_kafka import Producer

    enc = ForeignEncoder()
    aborted = [f.principal(f"agent:aborted{i}") for i in range(20)]
    committed = [f.principal(f"agent:committed{i}") for i in range(30)]
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "transactional.id": f"tx-{topic}"}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for event in aborted:
        producer.produce(topic, value=enc.encode(event), partition=0)
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    for event in committed:
        producer.produce(topic, value=enc.encode(event), partition=0)
    producer.commit_transaction(30)

    stats = consume_into(db_path, broker.bootstrap_servers, topic, until_idle=1.5)
    assert stats.stopped_by.startswith("idle") and stats.quarantined == 0
    with Store.open(db_path, read_only=True) as store:
        ids = {r[0] for r in store.con.execute("SELECT event_id FROM entries").fetchall()}
    assert {e["event_id"] for e in committed} <= ids


def test_the_consumer_asks_for_read_committed_by_default(db_path: Path) -> None:
    from ledger.config import load
    from ledger.stream.consumer import LedgerConsumer

    async def level(store: Store, chosen: str | None) -> str:
        settings = load(topic="t", isolation_level=chosen)
        client = LedgerConsumer(store, settings, decode_workers=0)._make_consumer()
        return str(client._isolation_level)

    with Store.open(db_path) as store:
        assert asyncio.run(level(store, None)) == "read_committed"
        assert asyncio.run(level(store, "read_uncommitted")) == "read_uncommitted"
