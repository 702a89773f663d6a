"""Producers this package did not write: librdkafka (confluent-kafka) and kcat, every codec.

Values are encoded here with fastavro from the published schema file (single-object
encoding: C3 01 + CRC-64-AVRO fingerprint + body), the way another team's service would,
never with the ledger's own codec.

kcat runs on the librdkafka of the confluent-kafka wheel (a dev dependency), through
LD_LIBRARY_PATH: Debian's kcat 1.7.1 links the system librdkafka 2.0.2, which misreads the
tagged fields that end the embedded broker's ApiVersions v3 response ("Read underflow ...
rd_kafka_handle_ApiVersion") and never connects; that would test Tansu against an old
librdkafka, not the ledger. kcat's own part (reading the values from files, -z) is the same.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import subprocess
import sys
from collections import Counter
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


#: the codec field (attributes & 7) of a Kafka RecordBatch
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def batch_codecs(bootstrap: str, topic: str) -> Counter[int]:
    """How many record batches of each codec the topic holds, read from the batch headers
    of raw Fetch responses (KIP-98 RecordBatch: baseOffset int64, batchLength int32,
    partitionLeaderEpoch int32, magic int8, crc int32, attributes int16, lastOffsetDelta
    int32), so that a test of compressed input cannot pass on uncompressed batches."""
    from aiokafka import AIOKafkaClient, TopicPartition
    from aiokafka.protocol.fetch import FetchRequest

    async def run() -> Counter[int]:
        client = AIOKafkaClient(bootstrap_servers=bootstrap)
        await client.bootstrap()
        found: Counter[int] = Counter()
        try:
            cluster = await client.fetch_all_metadata()
            for part in sorted(cluster.partitions_for_topic(topic) or ()):
                node = cluster.leader_for_partition(TopicPartition(topic, part))
                offset, high = 0, 1
                while offset < high:
                    request = FetchRequest(
                        100, 1, 64 << 20, 0, [(topic, [(part, offset, 64 << 20)])]
                    )
                    response = await client.send(node, request)
                    ((_, partitions),) = response.topics
                    ((_, error, high, *_, data),) = partitions
                    assert error == 0, error
                    pos, before = 0, offset
                    while pos + 12 <= len(data):
                        base, length = struct.unpack_from(">qi", data, pos)
                        if pos + 12 + length > len(data):
                            break  # a partial batch at the end of the response
                        (attributes,) = struct.unpack_from(">h", data, pos + 21)
                        (delta,) = struct.unpack_from(">i", data, pos + 23)
                        found[attributes & 7] += 1
                        offset, pos = base + delta + 1, pos + 12 + length
                    assert offset > before or offset >= high, "no progress"
        finally:
            await client.close()
        return found

    return asyncio.run(run())


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
    codecs = batch_codecs(broker.bootstrap_servers, topic)
    assert set(codecs) == {CODEC_IDS[codec]}, codecs  # every batch compressed as asked
    stats = consume_into(db_path, broker.bootstrap_servers, topic, until_idle=1.0)
    assert (stats.appended, stats.quarantined) == (len(events), 0), codec
    with Store.open(db_path, read_only=True) as store:
        ids = {r[0] for r in store.con.execute("SELECT event_id FROM entries").fetchall()}
        assert ids == {e["event_id"] for e in events}
        assert verify_store(store).ok


def _kcat(tmp: Path) -> tuple[str, dict[str, str]]:
    """kcat, and an environment that runs it on the confluent-kafka wheel's librdkafka (see
    the module docstring). Without kcat the test fails in CI (`.ci/run` installs it) and is
    skipped elsewhere."""
    found = shutil.which("kcat")
    if found is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(
                "kcat is not on PATH, and CI must run the kcat producer test: .ci/run installs "
                "it with `apt-get install -y kcat`; see why that failed in the CI log"
            )
        pytest.skip("kcat is not installed (`apt-get install kcat`); CI runs this test")
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).resolve().parent.with_name("confluent_kafka.libs")
    bundled = sorted(libs.glob("librdkafka*.so*"))
    if not bundled:
        pytest.fail(f"no librdkafka in the confluent-kafka wheel ({libs}) to run kcat on")
    (tmp / "lib").mkdir()
    (tmp / "lib" / "librdkafka.so.1").symlink_to(bundled[0])
    env = dict(os.environ, LD_LIBRARY_PATH=str(tmp / "lib"))
    version = subprocess.run([found, "-V"], env=env, capture_output=True, text=True, check=True)
    wanted = confluent_kafka.libversion()[0]
    assert f"librdkafka {wanted}" in version.stdout, (
        f"kcat does not run on the wheel's librdkafka {wanted}: {version.stdout}"
    )
    return found, env


#: -D for kcat's delimited input (-l): bytes no Avro value of the test contains (checked), no NUL
DELIMITER = b"\xff\xfe--ledger-kcat--\xfe\xff"


@pytest.mark.parametrize("codec", CODECS)
def test_kcat_batches_in_every_codec_enter_the_ledger_byte_for_byte(
    broker: EmbeddedBroker, topic: str, tmp_path: Path, codec: str
) -> None:
    """kcat writes single-object Avro values, compressed with `-z CODEC`, in both of its
    binary-safe input modes (one file per message, and one file cut at a `-D` delimiter that
    no value contains; kcat's default of one message per line is not: Avro bodies hold
    newline bytes). `ledger consume --until-idle` then appends every one, the exact bytes."""
    kcat, env = _kcat(tmp_path)
    events = _events(400)
    enc = ForeignEncoder()
    values = [enc.encode(e) for e in events]
    assert any(b"\n" in v for v in values)  # why one message per line would not do
    assert not any(DELIMITER in v for v in values)
    half = len(values) // 2
    files = []
    for i, value in enumerate(values[:half]):
        files.append(tmp_path / f"{i:04d}.avro")
        files[-1].write_bytes(value)
    joined = tmp_path / "rest.bin"
    joined.write_bytes(DELIMITER.join(values[half:]))
    delimiter = "".join(f"\\x{b:02x}" if b > 0x7E else chr(b) for b in DELIMITER)
    common = [kcat, "-P", "-b", broker.bootstrap_servers, "-t", topic, "-z", codec]
    common += ["-X", "linger.ms=50"]  # batches of many records, as services send them
    for args in ([*map(str, files)], ["-l", "-D", delimiter, str(joined)]):
        sent = subprocess.run(
            [*common, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert sent.returncode == 0 and "ERROR" not in sent.stderr, sent.stderr
    codecs = batch_codecs(broker.bootstrap_servers, topic)
    assert set(codecs) == {CODEC_IDS[codec]}, codecs  # every batch compressed as asked

    db = tmp_path / "ledger.duckdb"
    done = subprocess.run(
        [sys.executable, "-m", "ledger", "consume", "-b", broker.bootstrap_servers,
         "--topic", topic, "--db", str(db), "--until-idle", "1", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert (stats["appended"], stats["quarantined"]) == (len(values), 0), stats
    with Store.open(db, read_only=True) as store:
        payloads = [r[0] for r in store.con.execute("SELECT payload FROM entries").fetchall()]
        assert sorted(payloads) == sorted(values)
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
