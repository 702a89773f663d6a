"""Emitter: events/s per durability mode against a bare aiokafka `send` loop, and the spool.

Measured in one run against the embedded broker (memory-only, loopback), topic of 4
partitions, generated events (seed 2028), interleaved rounds, medians:

* the ceiling: a bare aiokafka producer (`acks="all"`, the emitter's batch size and linger)
  awaiting `send()` for every pre-encoded message, then every acknowledgement;
* `Emitter`, durability "memory": `emit_encoded` of the same pre-encoded messages, and
  `emit(dict)` (validate + encode too), until every event is acknowledged;
* `Emitter`, durability "spool" (the default): 256 asyncio tasks emitting dicts together (group
  commit), 32 `SyncEmitter` threads, `emit_many` batches of 1,000, and one caller awaiting each
  `emit()` in turn (bound by the fsync latency);
* the spool alone: appends of 1,000 events with one fsync each, one event per fsync, and the
  replay (read with every check, advance) of a full file, plus opening it (the recovery scan).

Ratios are emitter rate / bare loop rate of the same round (pre-encoded input on both sides
unless said). Target on the 2-core reference machine: emit >= 20k events/s.
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from bench.generate import generate
from bench.results import environment, write_section
from ledger.stream.broker import EmbeddedBroker, create_topic
from ledger.stream.emitter import Emitter, SyncEmitter
from ledger.stream.spool import Message, Spool, frame_size

N = int(os.environ.get("BENCH_EMIT_EVENTS", "100000"))
N_SEQUENTIAL = int(os.environ.get("BENCH_EMIT_SEQUENTIAL", "3000"))
SEED = 2028
PARTITIONS = 4
ROUNDS = 3
TASKS = 256
THREADS = 32
BATCH = 1000
EMIT_TARGET = 20_000

_topics = iter(range(1 << 30))


def _topic(bootstrap: str) -> str:
    """A fresh topic per measurement, so none reads the backlog of another."""
    name = f"bench-emit-{next(_topics)}"
    asyncio.run(create_topic(bootstrap, name, PARTITIONS))
    return name


async def bare_send(bootstrap: str, topic: str, messages: list[Message]) -> float:
    """Seconds for a bare aiokafka producer to send every message and have it acknowledged."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=False, linger_ms=2,
                                max_batch_size=1 << 20)  # fmt: skip
    await producer.start()
    try:
        started = time.perf_counter()
        futures = [await producer.send(topic, value=v, key=k) for k, v in messages]
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def _timed_emitter(
    bootstrap: str, topic: str, spool: Path, durability: str,
    body: Callable[[Emitter], Coroutine[Any, Any, None]], n: int,
) -> float:  # fmt: skip
    async with Emitter(bootstrap, topic, spool_path=spool, durability=durability) as em:  # type: ignore[arg-type]
        started = time.perf_counter()
        await body(em)
        assert await em.flush(120), em.counters
        elapsed = time.perf_counter() - started
        counters = em.counters
    assert counters["sent"] == n and counters["unsent"] == 0, counters
    return elapsed


def emitter_rates(
    bootstrap: str, tmp: Path, items: list[dict[str, Any]], messages: list[Message]
) -> dict[str, float]:
    """events/s of each emitter way, one round."""

    async def encoded(em: Emitter) -> None:
        for k, v in messages:
            await em.emit_encoded(k, v)

    async def dicts(em: Emitter) -> None:
        for ev in items:
            await em.emit(ev)

    async def tasks(em: Emitter) -> None:
        share = len(items) // TASKS + 1

        async def one(part: list[dict[str, Any]]) -> None:
            for ev in part:
                await em.emit(ev)

        await asyncio.gather(*(one(items[i : i + share])
                               for i in range(0, len(items), share)))  # fmt: skip

    async def batches(em: Emitter) -> None:
        for i in range(0, len(messages), BATCH):
            await em.emit_encoded_many(messages[i : i + BATCH])

    async def sequential(em: Emitter) -> None:
        for ev in items[:N_SEQUENTIAL]:
            await em.emit(ev)

    n = len(messages)
    out: dict[str, float] = {}
    ways: list[tuple[str, str, Callable[[Emitter], Coroutine[Any, Any, None]], int]] = [
        ("memory encoded", "memory", encoded, n),
        ("memory dicts", "memory", dicts, n),
        ("spool tasks", "spool", tasks, n),
        ("spool batches", "spool", batches, n),
        ("spool sequential", "spool", sequential, N_SEQUENTIAL),
    ]
    for name, durability, body, count in ways:
        seconds = asyncio.run(_timed_emitter(bootstrap, _topic(bootstrap), tmp / "spools",
                                             durability, body, count))  # fmt: skip
        out[name] = count / seconds
    out["spool threads"] = n / sync_threads(bootstrap, _topic(bootstrap), tmp / "spools", items)
    return out


def sync_threads(bootstrap: str, topic: str, spool: Path, items: list[dict[str, Any]]) -> float:
    """Seconds for THREADS threads sharing one SyncEmitter (spool mode) to emit `items`."""
    with SyncEmitter(bootstrap, topic, spool_path=spool) as em:
        share = len(items) // THREADS + 1
        started = time.perf_counter()
        threads = [threading.Thread(target=lambda p: [em.emit(ev) for ev in p],
                                    args=(items[i : i + share],))
                   for i in range(0, len(items), share)]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert em.flush(120), em.counters
        elapsed = time.perf_counter() - started
    assert em.counters["sent"] == len(items), em.counters
    return elapsed


def spool_rates(tmp: Path, messages: list[Message]) -> dict[str, float]:
    """events/s of the spool alone: group appends with fsync, single fsyncs, replay, open."""
    path = tmp / "alone.spool"
    out: dict[str, float] = {}
    spool = Spool(path, 1 << 34, destination="bench/alone")
    started = time.perf_counter()
    for i in range(0, len(messages), BATCH):
        spool.sync(spool.append(messages[i : i + BATCH]))
    out["append 1,000 + fsync"] = len(messages) / (time.perf_counter() - started)
    single = messages[:N_SEQUENTIAL]
    started = time.perf_counter()
    for msg in single:
        spool.sync(spool.append([msg]))
    out["append 1 + fsync"] = len(single) / (time.perf_counter() - started)
    spool.close()
    total = len(messages) + len(single)
    started = time.perf_counter()
    spool = Spool(path, 1 << 34, destination="bench/alone")
    out["open (recovery scan)"] = total / (time.perf_counter() - started)
    started = time.perf_counter()
    replayed = 0
    while spool.unsent:
        batch = spool.read(5000)
        replayed += len(batch.messages)
        spool.advance(batch)
    out["replay (read + advance)"] = replayed / (time.perf_counter() - started)
    assert replayed == total
    spool.close()
    return out


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    items = list(generate(N, SEED))
    encoder = Emitter("127.0.0.1:9", "t")  # never started: it only encodes
    messages = [encoder.prepare(ev) for ev in items]
    mean_frame = statistics.mean(frame_size(k, v) for k, v in messages)
    bares: list[float] = []
    rounds: list[dict[str, float]] = []
    spools: list[dict[str, float]] = []
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        bootstrap = broker.bootstrap_servers
        for _ in range(ROUNDS):  # interleaved, so load changes hit every variant alike
            bares.append(N / asyncio.run(bare_send(bootstrap, _topic(bootstrap), messages)))
            rounds.append(emitter_rates(bootstrap, Path(tmp), items, messages))
            spools.append(spool_rates(Path(tmp), messages))
    bare = statistics.median(bares)

    def med(name: str) -> float:
        return statistics.median(r[name] for r in rounds)

    def ratio(name: str) -> float:
        return statistics.median(r[name] / b for r, b in zip(rounds, bares, strict=True))

    rows = [
        ("bare aiokafka `send` loop, pre-encoded (the ceiling)", bare, None, ""),
        ('`durability="memory"`, `emit_encoded` (pre-encoded)', med("memory encoded"),
         ratio("memory encoded"), ""),
        ('`durability="memory"`, `emit(dict)`: validate + encode + send', med("memory dicts"),
         ratio("memory dicts"), f">= {EMIT_TARGET:,}"),
        (f'`durability="spool"`, {TASKS} asyncio tasks, `emit(dict)`', med("spool tasks"),
         ratio("spool tasks"), f">= {EMIT_TARGET:,}"),
        (f'`durability="spool"`, {THREADS} `SyncEmitter` threads, `emit(dict)`',
         med("spool threads"), ratio("spool threads"), ""),
        (f'`durability="spool"`, `emit_encoded_many` of {BATCH:,}', med("spool batches"),
         ratio("spool batches"), ""),
        ('`durability="spool"`, one caller awaiting each `emit(dict)` '
         f"({N_SEQUENTIAL:,} events)", med("spool sequential"), ratio("spool sequential"), ""),
    ]  # fmt: skip
    table = "\n".join(
        f"| {what} | {rate:,.0f} | {'' if r is None else f'{r:.2f}'} | {target} |"
        for what, rate, r, target in rows
    )
    spool_table = "\n".join(
        f"| {what} | {statistics.median(s[what] for s in spools):,.0f} | "
        f"{statistics.median(s[what] for s in spools) * mean_frame / 1e6:,.1f} |"
        for what in spools[0]
    )
    md = f"""## emit (emitter SDK and spool)

{environment()}. Embedded Tansu broker (memory) on loopback, a fresh topic of {PARTITIONS}
partitions per measurement, {N:,} generated events (seed {SEED}), mean spool frame
{mean_frame:.0f} B. Medians of {ROUNDS} interleaved rounds; every rate runs until the last
event is acknowledged; ratios are medians of the per-round emitter / bare-loop ratios.
`python -m bench emit`.

| what | events/s | ratio to bare loop | target |
|---|---:|---:|---|
{table}

The spool alone (a local ext4 file; fsync is what the disk makes of it):

| spool | events/s | MB/s |
|---|---:|---:|
{spool_table}

Bare-loop rounds, events/s: {", ".join(f"{b:,.0f}" for b in bares)}. One caller awaiting each
`emit()` in spool mode waits for one fsync per event: that row is the disk's fsync rate, not the
emitter's; callers emitting together share each fsync. Asyncio tasks share it cheaply (one
wake-up of the loop per group); threads less so: each of them is woken and takes the GIL in turn
between two fsyncs, which on 2 busy cores costs more than the fsync itself.
"""
    write_section("emit", md)
    print(md)


if __name__ == "__main__":
    main()
