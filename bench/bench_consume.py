"""Kafka pipeline: emit 200k generated events to the embedded broker, then consume them.

Measured in one run on the same topic: the emitter (validate + encode + send, one process),
a bare aiokafka `getmany` loop over the topic (the ceiling: no decode, no storage), and the
ledger consumer into a fresh ledger file (decode, dedupe, chain, projections, Merkle, offsets,
one transaction per batch). Then the same for lz4 and zstd input (the events emitted
compressed to a topic each: raw loop and ledger consumer on that topic). Rates are steady
state: first message fetched to last batch committed (group join and the idle wait are
reported apart). Targets on the 2-core reference
machine: consume >= 25k events/s (>= 0.12 of the ceiling; aim 0.25), emit >= 20k events/s.

`BENCH_CONSUME_MODE=rss python -m bench consume` measures memory instead (section
`consume-rss`): 2,000,000 generated events (`BENCH_CONSUME_RSS_EVENTS`) emitted to a topic of
their own, one `ledger consume --until-idle` process appending them into a fresh ledger, its
VmRSS and its decode worker's sampled from /proc every second beside the events appended so
far (the group's committed offsets: the consumer commits them to Kafka after each ledger
transaction), and whether RSS plateaus.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.generate import generate
from bench.results import MALLOC_TUNING, environment, write_section
from ledger.config import load
from ledger.store import Store
from ledger.stream.broker import EmbeddedBroker, create_topic
from ledger.stream.consumer import ConsumeStats, LedgerConsumer, tune_process
from ledger.stream.emitter import Emitter

N = int(os.environ.get("BENCH_CONSUME_EVENTS", "200000"))
SEED = 2027
PARTITIONS = 4
ROUNDS = 3
TOPIC = "bench-consume"
OUT = Path(__file__).with_name("out")
CONSUME_TARGET = 25_000
EMIT_TARGET = 20_000


async def emit_all(
    bootstrap: str,
    items: list[dict[str, Any]],
    spool: Path,
    topic: str = TOPIC,
    compression: str | None = None,
) -> float:
    """Seconds for the async emitter to validate, encode, send and have every event acked."""
    # memory durability: this bench feeds the consumer (the emit modes have bench_emit.py)
    async with Emitter(
        bootstrap, topic, spool_path=spool, compression=compression, durability="memory"
    ) as em:
        started = time.perf_counter()
        for ev in items:
            await em.emit(ev)
        assert await em.flush(120), em.counters
        elapsed = time.perf_counter() - started
        assert em.counters["sent"] == len(items) and em.counters["spooled"] == 0, em.counters
    return elapsed


async def raw_consume(bootstrap: str, group: str, topic: str = TOPIC, **fetch: int) -> float:
    """Seconds from the first to the last message for a bare aiokafka consumer (the ceiling)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=1000,
        heartbeat_interval_ms=100,
        **fetch,
    )
    await consumer.start()
    try:
        seen, first = 0, 0.0
        while seen < N:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if batch and not first:
                first = time.perf_counter()
            seen += sum(len(v) for v in batch.values())
        return time.perf_counter() - first
    finally:
        await consumer.stop()


def _cpu_ticks(pid: int) -> float:
    """CPU seconds (user + system) a live process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rusage_cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def ledger_consume(
    bootstrap: str,
    db: Path,
    group: str,
    workers: int,
    broker_pid: int | None,
    topic: str = TOPIC,
) -> tuple[ConsumeStats, dict[str, float]]:
    """One consumer run into a fresh ledger; also the CPU seconds of each process involved."""
    for p in (db, db.with_name(db.name + ".wal")):
        p.unlink(missing_ok=True)
    settings = load(bootstrap_servers=bootstrap, topic=topic, group=group, db=str(db))
    cpu0 = _rusage_cpu(resource.RUSAGE_SELF), _rusage_cpu(resource.RUSAGE_CHILDREN)
    broker0 = _cpu_ticks(broker_pid) if broker_pid else 0.0
    with Store.open(db) as store:
        consumer = LedgerConsumer(store, settings, until_idle=1.0, decode_workers=workers)
        stats = asyncio.run(consumer.run())
    cpu = {
        "consumer": _rusage_cpu(resource.RUSAGE_SELF) - cpu0[0],
        "worker": _rusage_cpu(resource.RUSAGE_CHILDREN) - cpu0[1],
        "broker": (_cpu_ticks(broker_pid) - broker0) if broker_pid else 0.0,
    }
    assert (stats.appended, stats.quarantined) == (N, 0), stats
    return stats, cpu


CODECS = ("lz4", "zstd")


def _compressed(
    bootstrap: str, items: list[dict[str, Any]], tmp: Path, db: Path, codec: str
) -> tuple[float, float, float]:
    """(raw ceiling, ledger rate, ratio) on a topic written with `codec`, medians of ROUNDS."""
    topic = f"{TOPIC}-{codec}"
    asyncio.run(create_topic(bootstrap, topic, PARTITIONS))
    asyncio.run(emit_all(bootstrap, items, tmp / f"spool-{codec}", topic, codec))
    big = {"max_partition_fetch_bytes": 8 << 20, "fetch_max_bytes": 64 << 20}
    raws, rates = [], []
    for rnd in range(ROUNDS):
        raws.append(N / asyncio.run(raw_consume(bootstrap, f"raw-{codec}-{rnd}", topic, **big)))
        stats, _ = ledger_consume(bootstrap, db, f"ledger-{codec}-{rnd}", 1, None, topic)
        rates.append(N / stats.active_seconds)
    ratio = statistics.median(r / c for r, c in zip(rates, raws, strict=True))
    return statistics.median(raws), statistics.median(rates), ratio


def _codec_rows(found: dict[str, tuple[float, float, float]]) -> str:
    return "\n".join(
        f"| {codec} | {raw:,.0f} | {rate:,.0f} | {ratio:.3f} |"
        for codec, (raw, rate, ratio) in found.items()
    )


def main() -> None:
    if os.environ.get("BENCH_CONSUME_MODE", "") == "rss":
        rss_main()
        return
    logging.basicConfig(level=logging.WARNING)
    OUT.mkdir(exist_ok=True)
    items = list(generate(N, SEED))
    raws: list[float] = []
    raw_defaults: list[float] = []
    runs: list[tuple[ConsumeStats, dict[str, float]]] = []
    singles: list[ConsumeStats] = []
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        bootstrap = broker.bootstrap_servers
        broker.create_topic(TOPIC, PARTITIONS)
        emit_s = asyncio.run(emit_all(bootstrap, items, Path(tmp) / "spool"))
        tune_process()  # what `ledger consume` does for itself; both consumers run under it
        db = OUT / "consume.duckdb"
        for rnd in range(ROUNDS):  # interleaved, so load changes hit every variant alike
            # the ledger consumer's own fetch sizes, and aiokafka's defaults
            big = {"max_partition_fetch_bytes": 8 << 20, "fetch_max_bytes": 64 << 20}
            raws.append(N / asyncio.run(raw_consume(bootstrap, f"raw-{rnd}", **big)))
            raw_defaults.append(N / asyncio.run(raw_consume(bootstrap, f"raw-default-{rnd}")))
            runs.append(ledger_consume(bootstrap, db, f"ledger-{rnd}", 1, broker.pid))
            singles.append(ledger_consume(bootstrap, db, f"single-{rnd}", 0, None)[0])
        compressed = {c: _compressed(bootstrap, items, Path(tmp), db, c) for c in CODECS}
    rates = [N / s.active_seconds for s, _ in runs]
    single_rates = [N / s.active_seconds for s in singles]
    best, cpu = runs[rates.index(statistics.median(rates))]
    emit_rate = N / emit_s
    raw_rate, raw_default_rate = statistics.median(raws), statistics.median(raw_defaults)
    rate = statistics.median(rates)
    # the ceiling of a round is the faster of its two raw runs: the ratio is never flattered
    ceilings = [max(a, b) for a, b in zip(raws, raw_defaults, strict=True)]
    ratio = statistics.median(r / c for r, c in zip(rates, ceilings, strict=True))
    ratio_single = statistics.median(r / c for r, c in zip(single_rates, ceilings, strict=True))
    wall_rate = statistics.median(N / s.seconds for s, _ in runs)
    us = 1e6 / N
    md = f"""## consume (Kafka pipeline)

{environment()}; consumers also under `ledger.consumer.tune_process()` (mallopt: trim
threshold 1 GB, top pad 256 MB, mmap threshold 32 MB; gc threshold 50k). Embedded Tansu broker
(memory) on loopback, topic of {PARTITIONS} partitions, {N:,} generated events (seed {SEED}).
Consumer figures are medians of {ROUNDS} interleaved rounds (raw, raw, ledger, ledger in one
process), each ledger run into a fresh file; ratios are medians of the per-round ratios.

| what | events/s | target |
|---|---|---|
| emit: `Emitter.emit(dict)`, durability="memory": validate, encode, send, acked (one process) \
| {emit_rate:,.0f} | >= {EMIT_TARGET:,} |
| raw aiokafka `getmany`, the consumer's fetch sizes (ceiling) | {raw_rate:,.0f} | |
| raw aiokafka `getmany`, aiokafka default fetch sizes | {raw_default_rate:,.0f} | |
| **`ledger consume`** steady state (first fetch -> last commit), decode worker on \
| {rate:,.0f} | >= {CONSUME_TARGET:,} |
| `ledger consume --decode-workers 0` (everything in one process) \
| {statistics.median(single_rates):,.0f} | |
| `ledger consume` wall clock incl. group join, worker start and 1 s idle exit \
| {wall_rate:,.0f} | |
| **ratio** consume / raw ceiling (the faster raw run of each round) | {ratio:.3f} \
| >= 0.12 (aim 0.25) |
| ratio in one process / raw ceiling | {ratio_single:.3f} | |

**Compressed input**: the same events emitted with `Emitter(compression=...)` to a topic of
their own; per codec, {ROUNDS} interleaved rounds of the raw aiokafka loop (the consumer's fetch
sizes) and `ledger consume` (decode worker on) on that topic; medians, the ratio is the median of
the per-round ratios.

| input codec | raw ceiling events/s | `ledger consume` events/s | ratio |
|---|---|---|---|
{_codec_rows(compressed)}

Rounds, events/s: with the decode worker {", ".join(f"{r:,.0f}" for r in rates)}; in one
process {", ".join(f"{r:,.0f}" for r in single_rates)}.

Where the time goes in the median round (µs per event). Decoding (generated columnar reader,
`ledger.fastdecode.BatchDecoder`, with every check) runs in the worker, one batch ahead of
`Store.append` (dedupe, chain, entries, projections, Merkle, offsets; one transaction per
{best.received // max(best.batches, 1):,}-event batch) in the consumer:
decode {best.decode_seconds * us:.1f}, append {best.append_seconds * us:.1f}.
CPU used per event over the whole run (incl. start-up and the idle second): consumer process
{cpu["consumer"] * us:.1f}, decode worker {cpu["worker"] * us:.1f}, broker {cpu["broker"] * us:.1f};
the machine has 2 cores, so the sum bounds the rate.
"""
    write_section("consume", md)
    print(md)


# -- RSS over a long run (BENCH_CONSUME_MODE=rss) ----------------------------------------------

RSS_N = int(os.environ.get("BENCH_CONSUME_RSS_EVENTS", "2000000"))
RSS_TOPIC = "bench-consume-rss"
#: the consumer's DuckDB memory_limit of each run: the default of `ledger consume` first
RSS_LIMITS = tuple(
    os.environ.get("BENCH_CONSUME_RSS_LIMITS", f"{load().memory_limit},512MB,256MB").split(",")
)
RSS_IDLE_S = 3
MILESTONES = (0.10, 0.25, 0.50, 0.75, 1.00)
#: RSS plateaus when its peak grows over the second half of the events (50 % -> 100 %) by
#: less than this share of its growth over the first half (start -> 50 %)
PLATEAU_SHARE = 0.10


@dataclass(frozen=True, slots=True)
class RssSample:
    seconds: float  # since the consumer process started
    appended: int  # the group's committed offsets, summed: events in the ledger
    consumer_kib: int  # VmRSS of the `ledger consume` process
    consumer_hwm_kib: int  # its VmHWM: the peak VmRSS so far
    worker_kib: int  # VmRSS of its decode worker process (0 before it runs)


@dataclass(frozen=True, slots=True)
class RssRun:
    limit: str
    samples: list[RssSample]
    stats: dict[str, Any]
    file_mb: float


def _status_kib(pid: int, key: str) -> int:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM, ...); 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    """Live processes whose parent is `pid` (the decode worker), from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry.name))
    return out


async def emit_stream(bootstrap: str, events: Iterable[dict[str, Any]], spool: Path) -> int:
    """Emit `events` as they are generated (2M never sit in memory at once); how many."""
    sent = 0
    async with Emitter(bootstrap, RSS_TOPIC, spool_path=spool, durability="memory") as em:
        for ev in events:
            await em.emit(ev)
            sent += 1
        assert await em.flush(300), em.counters
        assert em.counters["spooled"] == 0, em.counters
    return sent


async def _sample_rss(proc: subprocess.Popen[bytes], bootstrap: str, group: str) -> list[RssSample]:
    """Every second until `proc` exits: its VmRSS and VmHWM, its worker's VmRSS, and the
    events appended so far."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    parts = [TopicPartition(RSS_TOPIC, p) for p in range(PARTITIONS)]
    # never subscribes, so never joins the group: it only reads the group's commits
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await reader.start()
    samples: list[RssSample] = []
    started = time.monotonic()
    try:
        while proc.poll() is None:
            tick = time.monotonic()
            rss, hwm = _status_kib(proc.pid, "VmRSS"), _status_kib(proc.pid, "VmHWM")
            worker = sum(_status_kib(c, "VmRSS") for c in _children(proc.pid))
            appended = sum([await reader.committed(tp) or 0 for tp in parts])
            if rss:
                samples.append(RssSample(tick - started, appended, rss, hwm, worker))
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    finally:
        await reader.stop()
    return samples


def _rss_run(bootstrap: str, limit: str, tmp: Path) -> RssRun:
    """One `ledger consume --until-idle` process over the whole topic into a fresh ledger."""
    db = OUT / "consume-rss.duckdb"
    for p in (db, db.with_name(db.name + ".wal")):
        p.unlink(missing_ok=True)
    group = f"bench-rss-{limit}"
    # as an operator runs it: no MALLOC_* variables (the bench's own tuning is for the bench
    # process); `ledger consume` tunes its allocator itself (`tune_process`)
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_TUNING}
    cmd = [
        sys.executable, "-m", "ledger", "consume", "-b", bootstrap, "--topic", RSS_TOPIC,
        "--group", group, "--db", str(db), "--until-idle", str(RSS_IDLE_S),
        "--memory-limit", limit, "--json",
    ]  # fmt: skip
    log_path = tmp / f"consume-{limit}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env)
        samples = asyncio.run(_sample_rss(proc, bootstrap, group))
        out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"ledger consume exited {proc.returncode}: {log_path.read_text()[-2000:]}")
    stats = json.loads(out)
    assert (stats["appended"], stats["quarantined"]) == (RSS_N, 0), stats
    file_mb = db.stat().st_size / 1e6
    db.unlink(missing_ok=True)
    return RssRun(limit, samples, stats, file_mb)


def _at(samples: list[RssSample], events: float) -> RssSample:
    """The first sample with at least `events` appended."""
    return next(s for s in samples if s.appended >= events)


def _mib(kib: float) -> str:
    return f"{kib / 1024:,.0f}"


_UNITS = {"B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4}
_UNITS |= {"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}


def _limit_kib(limit: str) -> float:
    """A DuckDB size (`1GB` = 10**9 bytes, `1GiB` = 2**30) in KiB."""
    number = limit.rstrip("BbIiKkMmGgTt ")
    return float(number) * _UNITS[limit[len(number) :].strip().upper()] / 1024


def _rss_section(run: RssRun) -> tuple[str, str]:
    """(the table of one run, its verdict line)."""
    samples = run.samples
    # the last sample before the first commit: started, worker up, nothing appended yet
    before = [s for s in samples if s.appended == 0]
    start = before[-1] if before else samples[0]
    rows = [("start (before the first commit)", start)]
    rows += [(f"{m:.0%}", _at(samples, m * RSS_N)) for m in MILESTONES]
    table = "\n".join(
        f"| {name} | {s.appended:,} | {s.seconds:.0f} | {_mib(s.consumer_kib)} "
        f"| {_mib(s.consumer_hwm_kib)} | {_mib(s.worker_kib)} |"
        for name, s in rows
    )
    half, full = _at(samples, 0.5 * RSS_N), samples[-1]
    first = half.consumer_hwm_kib - start.consumer_kib
    second = full.consumer_hwm_kib - half.consumer_hwm_kib
    per_event = second * 1024 / max(full.appended - half.appended, 1)
    plateaus = second < PLATEAU_SHARE * max(first, 0)
    peak = full.consumer_hwm_kib
    verdict = (
        f"memory_limit {run.limit}: the consumer's peak VmRSS grew {_mib(first)} MiB over the "
        f"first half of the events and {_mib(second)} MiB over the second ({per_event:,.0f} "
        f"bytes per event): it **{'plateaus' if plateaus else 'does not plateau'}**. Peak "
        f"{_mib(peak)} MiB, the limit + {_mib(peak - _limit_kib(run.limit))} MiB. "
        f"{run.stats['seconds']:.0f} s for the whole run, ledger file {run.file_mb:,.0f} MB."
    )
    return table, verdict


def rss_main() -> None:
    logging.basicConfig(level=logging.WARNING)
    OUT.mkdir(exist_ok=True)
    started_at = environment()
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        bootstrap = broker.bootstrap_servers
        broker.create_topic(RSS_TOPIC, PARTITIONS)
        emit_started = time.perf_counter()
        sent = asyncio.run(emit_stream(bootstrap, generate(RSS_N, SEED), Path(tmp) / "spool"))
        emit_s = time.perf_counter() - emit_started
        assert sent == RSS_N, sent
        runs = [_rss_run(bootstrap, limit, Path(tmp)) for limit in RSS_LIMITS]
    parts = []
    for run in runs:
        table, verdict = _rss_section(run)
        parts.append(
            f"**`--memory-limit {run.limit}`**\n\n"
            "| events appended | at sample | seconds | consumer VmRSS MiB "
            "| consumer VmHWM MiB | worker VmRSS MiB |\n"
            f"|---|---:|---:|---:|---:|---:|\n{table}\n\n{verdict}"
        )
    tables = "\n\n".join(parts)
    md = f"""## consume: RSS over {RSS_N:,} events

{started_at} (the bench process). It emitted {RSS_N:,} generated events (seed {SEED}) to a topic of
{PARTITIONS} partitions of the embedded Tansu broker (memory) in {emit_s:.0f} s. Then, once per
DuckDB `memory_limit` ({", ".join(RSS_LIMITS)}; the first is the default), one `ledger consume
--until-idle {RSS_IDLE_S} --memory-limit LIMIT` process (decode worker on; started without
MALLOC_* variables, as an operator would, so under its own `tune_process()`) appended all of
them into a fresh ledger file. Every second the bench read from /proc **VmRSS and VmHWM (peak
VmRSS so far) of the consumer process, and VmRSS of its decode worker process**, beside the events
appended so far (the sum of the group's committed offsets, which the consumer commits after each
ledger transaction). Each row is the first sample at or past that share of the events. Plateau:
the peak (VmHWM) grows over the second half of the events by less than {PLATEAU_SHARE:.0%} of its
growth over the first half (from the start row). `BENCH_CONSUME_MODE=rss python -m bench consume`.

{tables}
"""
    write_section("consume-rss", md)
    print(md)


if __name__ == "__main__":
    main()
