"""Plain aiokafka helpers for tests: produce raw bytes, read a topic back, run the consumer."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ledger.config import load
from ledger.store import Store
from ledger.stream.consumer import Checkpointer, ConsumeStats, LedgerConsumer

Value = bytes | tuple[bytes | None, bytes]


def produce(
    bootstrap: str, topic: str, values: Sequence[Value], partition: int | None = None
) -> None:
    """Send each value (or (key, value)) in order and wait for every acknowledgement."""

    async def run() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=False
        )
        await producer.start()
        try:
            futures = []
            for item in values:
                key, value = item if isinstance(item, tuple) else (None, item)
                futures.append(
                    await producer.send(topic, value=value, key=key, partition=partition)
                )
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(run())


def read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of every partition, from the beginning to the current end."""

    async def run() -> list[Any]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            ends = await consumer.end_offsets(parts)
            out: list[Any] = []
            while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    out.extend(records)
            return out
        finally:
            await consumer.stop()

    return asyncio.run(run())


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return set(parts)
        await consumer.topics()
        await asyncio.sleep(0.1)
    raise AssertionError(f"topic {topic} has no partitions")


def consume_into(
    db: Path,
    bootstrap: str,
    topic: str,
    group: str | None = None,
    until_idle: float = 0.5,
    checkpointer: Checkpointer | None = None,
    decode_workers: int | None = None,
    reset_offsets: Literal["earliest", "stored"] | None = None,
    **overrides: Any,
) -> ConsumeStats:
    """Run the ledger consumer in-process until it is idle and caught up; `overrides` are
    more settings (`schema_dir=...`)."""
    settings = load(
        bootstrap_servers=bootstrap,
        topic=topic,
        group=group or f"g-{uuid.uuid4().hex[:8]}",
        **overrides,
    )
    with Store.open(db) as store:
        consumer = LedgerConsumer(
            store,
            settings,
            until_idle=until_idle,
            checkpointer=checkpointer,
            decode_workers=decode_workers,
            reset_offsets=reset_offsets,
        )
        return asyncio.run(consumer.run())


class Stderr:
    """Collects a child's stderr lines in the background, so tests can wait for one."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stderr is not None
        stream = proc.stderr
        self._thread = threading.Thread(target=lambda: self.lines.extend(stream), daemon=True)
        self._thread.start()

    def wait_for(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged; got {self.lines}")


def wire(ev: dict[str, Any]) -> bytes:
    """A JSON-form event as the Emitter would put it on Kafka (validated, single-object Avro)."""
    from ledger.contract import events
    from ledger.contract.codec import default_codec

    return default_codec().encode(events.to_record(events.parse_event(ev)))
