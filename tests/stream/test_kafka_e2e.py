"""Crash safety: SIGKILL `ledger consume` at random points of a large ingest, several times."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger.integrity.verify import verify_store
from ledger.store import Store
from ledger.stream.broker import EmbeddedBroker
from ledger.stream.emitter import Emitter
from tests import factories as f
from tests.kafkautil import Stderr

pytestmark = pytest.mark.integration

N_EVENTS = 40_000
KILLS = 5


def _events(n: int) -> list[dict[str, object]]:
    kinds = [
        lambda i: f.principal(f"agent:{i}"),
        lambda i: f.granted(f"d-{i}", "user:alice", f"agent:{i}"),
        lambda i: f.action(f"a-{i}", f"agent:{i}", delegation=f"d-{i}"),
        lambda i: f.credential(f"c-{i}", f"agent:{i}", delegation=f"d-{i}"),
    ]
    return [kinds[i % 4](i // 4) for i in range(n)]


async def _produce(bootstrap: str, topic: str, spool: Path, evs: list[dict[str, object]]) -> None:
    async with Emitter(bootstrap, topic, spool_path=spool) as em:
        messages = [em.prepare(ev) for ev in evs]
        for i in range(0, len(messages), 1000):  # one fsync per thousand, not per event
            await em.emit_encoded_many(messages[i : i + 1000])
        assert await em.flush(60)


def test_sigkilled_consumer_restarts_to_exactly_once(
    broker: EmbeddedBroker, tmp_path: Path, db_path: Path
) -> None:
    seed = int(os.environ.get("LEDGER_CRASH_SEED", time.time_ns() % 10_000))
    rng = random.Random(seed)
    topic = broker.create_topic(f"crash-{seed}-{rng.randrange(1 << 30)}", partitions=4)
    sent = _events(N_EVENTS)
    asyncio.run(_produce(broker.bootstrap_servers, topic, tmp_path / "s.spool", sent))
    cmd = [sys.executable, "-m", "ledger", "consume", "-b", broker.bootstrap_servers,
           "--topic", topic, "--db", str(db_path), "--until-idle", "2",
           "--batch-size", "2500"]  # fmt: skip
    sizes = []
    for _ in range(KILLS):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        Stderr(proc).wait_for("assigned")
        # the consumer takes ~0.4 s for N_EVENTS on the reference machine: kill well inside it
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        with Store.open(db_path) as store:  # replays the WAL the killed writer left
            sizes.append(store.size())

    final = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)

    assert final.returncode == 0, final.stderr
    assert sizes[-1] < N_EVENTS or sizes[0] < N_EVENTS, f"no kill hit the ingest: {sizes}"
    with Store.open(db_path, read_only=True) as store:
        ids = [r[0] for r in store.con.execute("SELECT event_id FROM entries").fetchall()]
        assert len(ids) == N_EVENTS, f"seed {seed}, sizes after kills {sizes}"
        assert set(ids) == {e["event_id"] for e in sent}
        assert store.counts()["quarantined"] == 0
        assert sum(store.offsets(topic).values()) == N_EVENTS
        report = verify_store(store)
        assert report.ok, report.reason


def test_a_decode_worker_killed_mid_stream_loses_nothing(
    broker: EmbeddedBroker, tmp_path: Path, db_path: Path
) -> None:
    from tests.cli.test_consume import _children

    topic = broker.create_topic(f"worker-kill-{random.randrange(1 << 30)}", partitions=4)
    sent = _events(N_EVENTS)
    asyncio.run(_produce(broker.bootstrap_servers, topic, tmp_path / "s.spool", sent))
    cmd = [sys.executable, "-m", "ledger", "consume", "-b", broker.bootstrap_servers,
           "--topic", topic, "--db", str(db_path), "--until-idle", "2",
           "--batch-size", "2500", "--decode-workers", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        log = Stderr(proc)
        log.wait_for("assigned")
        deadline = time.monotonic() + 20
        while not (workers := _children(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert workers, "no decode worker started"
        os.kill(workers[0], signal.SIGKILL)
        assert proc.wait(120) == 0
        assert "decoding in the consumer process from now on" in log.wait_for("decode worker")
    finally:
        proc.kill()
    with Store.open(db_path, read_only=True) as store:
        ids = [r[0] for r in store.con.execute("SELECT event_id FROM entries").fetchall()]
        assert sorted(ids) == sorted(e["event_id"] for e in sent)
        assert store.counts()["quarantined"] == 0
        assert verify_store(store).ok
