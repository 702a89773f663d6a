"""The emitter SDK against the real embedded broker, and with the broker down (spool): the
durability modes, counters, one spool per destination, reports, and a library's manners."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from itertools import accumulate
from pathlib import Path
from typing import Any

import pytest

from ledger.contract.codec import Codec
from ledger.errors import ConfigError, SpoolFullError, ValidationError
from ledger.stream import spool as spool_module
from ledger.stream.broker import EmbeddedBroker, free_port
from ledger.stream.emitter import Emitter, SyncEmitter
from ledger.stream.spool import Message, Spool, destination, frame_size, spool_file
from tests import factories as f
from tests.kafkautil import read_all


def _decoded(codec: Codec, records: list[Any]) -> list[tuple[bytes, dict[str, Any]]]:
    return [(r.key, codec.decode(r.value)[0]) for r in records]


def _actions(n: int, keys: int) -> list[dict[str, Any]]:
    return [
        f.action(f"a-{i % keys}-{i // keys}", "agent:x", delegation=f"d-{i % keys}")
        for i in range(n)
    ]


def _per_key_order(codec: Codec, records: list[Any]) -> dict[bytes, list[str]]:
    order: dict[bytes, list[str]] = defaultdict(list)
    for key, record in _decoded(codec, sorted(records, key=lambda r: (r.partition, r.offset))):
        order[key].append(record["data"].get("action_id") or record["event_id"])
    return order


@pytest.mark.integration
async def test_events_and_constructors_reach_kafka_keyed_and_encoded(
    broker: EmbeddedBroker, topic: str, spool_path: Path, codec: Codec
) -> None:
    sent = [f.principal("agent:a"), f.granted("d-1", "user:alice", "agent:a")]
    async with Emitter(broker.bootstrap_servers, topic, spool_path=spool_path) as em:
        ids = [await em.emit(ev) for ev in sent]
        ids.append(
            await em.action_performed(
                "act-1",
                principal_id="agent:a",
                operation="crm:read",
                resource="crm/accounts/1",
                outcome="succeeded",
                delegation_id="d-1",
                producer="planner",
            )
        )
        ids.append(await em.credential_revoked("c-1", "user:admin"))
        assert await em.flush(10)
        counters = em.counters

    assert counters["sent"] == counters["emitted"] == 4
    assert counters["spooled"] == counters["failed"] == counters["unsent"] == 0
    records = await asyncio.to_thread(read_all, broker.bootstrap_servers, topic)
    got = {rec["event_id"]: (key, rec) for key, rec in _decoded(codec, records)}
    assert set(got) == set(ids)
    assert got[ids[0]][0] == b"agent:a"
    assert got[ids[1]][0] == b"d-1"
    key, action = got[ids[2]]
    assert key == b"d-1"
    assert action["type"] == "action.performed" and action["producer"] == "planner"
    assert ids[2] < ids[3]  # generated ids are time-ordered


@pytest.mark.integration
async def test_invalid_events_are_refused_before_anything_is_sent(
    broker: EmbeddedBroker, topic: str, spool_path: Path
) -> None:
    async with Emitter(broker.bootstrap_servers, topic, spool_path=spool_path) as em:
        with pytest.raises(ValidationError, match="delegation_id"):
            await em.emit(f.granted("", "user:a", "agent:b"))
        with pytest.raises(ValidationError, match="expires_at"):
            await em.delegation_granted(
                "d-1",
                delegator_id="user:a",
                delegate_id="agent:b",
                scopes=[],
                resources=[],
                not_before="2026-01-02T00:00:00Z",
                expires_at="2026-01-01T00:00:00Z",
            )
        assert em.counters["emitted"] == em.counters["unsent"] == 0
    assert await asyncio.to_thread(read_all, broker.bootstrap_servers, topic) == []


@pytest.mark.integration
def test_sync_emitter_for_code_that_is_not_async(
    broker: EmbeddedBroker, topic: str, spool_path: Path, codec: Codec
) -> None:
    with SyncEmitter(broker.bootstrap_servers, topic, spool_path=spool_path) as em:
        for ev in _actions(200, keys=4):
            em.emit(ev)
        em.principal_registered("agent:z", kind="agent", owner_id="user:alice")
        assert em.flush(10)
        assert em.counters["sent"] == 201

    order = _per_key_order(codec, read_all(broker.bootstrap_servers, topic))
    assert order[b"d-3"] == [f"a-3-{i}" for i in range(50)]
    assert b"agent:z" in order


@pytest.mark.integration
async def test_broker_down_events_spool_then_arrive_in_per_key_order(
    spool_path: Path, codec: Codec
) -> None:
    port = free_port()
    later = EmbeddedBroker(port=port)
    sent = _actions(400, keys=5)
    em = Emitter(f"127.0.0.1:{port}", "spooled", spool_path=spool_path, delivery_timeout=3)
    try:
        async with em:
            for ev in sent[:300]:
                await em.emit(ev)
            await _until(lambda: em.counters["spooled"] == 300, "300 events spooled")
            assert spool_path.stat().st_size > 300 * 100
            await asyncio.to_thread(later.start)
            await asyncio.to_thread(later.create_topic, "spooled", 3)
            for ev in sent[300:]:
                await em.emit(ev)
            assert await em.flush(60)
            counters = em.counters
        records = await asyncio.to_thread(read_all, later.bootstrap_servers, "spooled")
    finally:
        later.stop()

    assert counters["resent"] + counters["sent"] == counters["emitted"] == 400
    assert counters["resent"] >= 300 and counters["spooled"] >= 300 and counters["unsent"] == 0
    order = _per_key_order(codec, records)
    for k in range(5):
        assert order[f"d-{k}".encode()] == [f"a-{k}-{i}" for i in range(80)]


@pytest.mark.integration
def test_spool_survives_a_restart_and_is_resent_first(spool_path: Path, codec: Codec) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    sent = _actions(60, keys=3)
    with SyncEmitter(bootstrap, "restart", spool_path=spool_path, delivery_timeout=1) as down:
        for ev in sent[:40]:
            down.emit(ev)
    assert down.counters["spooled"] == down.counters["unsent"] == 40
    assert spool_path.exists()

    later = EmbeddedBroker(port=port)
    try:
        later.start()
        later.create_topic("restart", 3)
        with SyncEmitter(bootstrap, "restart", spool_path=spool_path) as up:
            for ev in sent[40:]:
                up.emit(ev)
            assert up.flush(20)
            counters = up.counters
        # While the old spool drains, new events queue behind it on disk: order first.
        assert counters["resent"] >= 40 and counters["resent"] + counters["sent"] == 60
        order = _per_key_order(codec, read_all(bootstrap, "restart"))
    finally:
        later.stop()
    assert order[b"d-1"] == [f"a-1-{i}" for i in range(20)]


async def _until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll `condition` (yielding to the loop) until it holds; fail, not hang, past `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            pytest.fail(f"not observed within {timeout:.0f}s: {what}")
        await asyncio.sleep(0.005)


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll `condition` until it holds; fail (not hang) if it does not within `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            pytest.fail(f"not observed within {timeout:.0f}s: {what}")
        time.sleep(0.005)


def _on_disk(path: Path, bootstrap: str, topic: str) -> list[Message]:
    spool = Spool(path, 1 << 30, destination=destination(bootstrap, topic))
    try:
        return spool.read(1_000_000).messages
    finally:
        spool.close()


def test_full_spool_raises_to_the_caller_instead_of_dropping(spool_path: Path) -> None:
    # Nothing listens on `closed`: every event waits in the spool, so exactly the events whose
    # frames fit in `limit` bytes are accepted, and the next one raises, whatever the timing.
    closed = f"127.0.0.1:{free_port()}"
    limit = 20_000
    sent = _actions(1000, keys=2)
    em = SyncEmitter(closed, "t", spool_path=spool_path, spool_max_bytes=limit, delivery_timeout=1)
    encoded = [em._emitter.prepare(ev) for ev in sent]
    fits = sum(1 for total in accumulate(frame_size(k, v) for k, v in encoded) if total <= limit)
    assert 1 < fits < len(sent)
    em.start()
    try:
        accepted = 0
        with pytest.raises(SpoolFullError, match="full"):
            for ev in sent:
                em.emit(ev)
                accepted += 1
        assert accepted == fits  # raised at the first event that did not fit, not before or after
        with pytest.raises(SpoolFullError, match="full"):  # and it keeps refusing, not dropping
            em.emit(sent[accepted])
    finally:
        report = em.close()
    assert (report.emitted, report.unsent, report.sent, report.resent) == (fits, fits, 0, 0)
    assert report.spooled == fits and report.spool_bytes == sum(
        frame_size(k, v) for k, v in encoded[:fits]
    )
    # Every accepted event is on disk, in order, and none of the refused ones.
    assert _on_disk(spool_path, closed, "t") == encoded[:fits]


class _Stuck:
    """Holds the spool writer inside `Spool.append` until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        real = Spool.append

        def append(spool: Spool, messages: Any, reserved: int = 0) -> int:
            self.entered.set()
            self.release.wait(60)
            return real(spool, messages, reserved)

        monkeypatch.setattr(Spool, "append", append)


def test_spool_mode_returns_only_once_the_event_is_written(
    spool_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = _Stuck(monkeypatch)
    closed = f"127.0.0.1:{free_port()}"
    em = SyncEmitter(closed, "t", spool_path=spool_path, delivery_timeout=1)
    em.start()
    done = threading.Event()
    thread = threading.Thread(target=lambda: (em.emit(_actions(1, 1)[0]), done.set()))
    thread.start()
    assert stuck.entered.wait(30)
    thread.join(0.3)
    assert not done.is_set()  # emit() waits while its event is not on disk
    stuck.release.set()
    thread.join(30)
    assert done.is_set()
    synced = []
    real_sync = Spool.sync
    monkeypatch.setattr(Spool, "sync", lambda s, seq=None: (synced.append(seq), real_sync(s, seq)))
    em.emit(_actions(2, 1)[1])
    assert synced, "emit() returned without an fsync"
    em.close()
    assert len(_on_disk(spool_path, closed, "t")) == 2


def test_memory_mode_holds_at_most_memory_events_in_memory(
    spool_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = _Stuck(monkeypatch)
    closed = f"127.0.0.1:{free_port()}"
    bound = 10
    em = SyncEmitter(closed, "t", spool_path=spool_path, durability="memory",
                     memory_events=bound, delivery_timeout=1)  # fmt: skip
    em.start()
    evs = _actions(bound + 1, keys=1)
    for ev in evs[:bound]:
        em.emit(ev)  # memory mode: returns at once, the writer being stuck or not
    assert stuck.entered.wait(30)
    assert em.counters["queued"] == bound
    done = threading.Event()
    thread = threading.Thread(target=lambda: (em.emit(evs[bound]), done.set()))
    thread.start()
    thread.join(0.3)
    assert not done.is_set()  # the bound is reached: the next emit waits for the writer
    assert em.counters["queued"] == bound
    stuck.release.set()
    thread.join(30)
    assert done.is_set()
    em.close()
    assert len(_on_disk(spool_path, closed, "t")) == bound + 1


def test_memory_mode_writes_within_its_window_without_further_emits(spool_path: Path) -> None:
    closed = f"127.0.0.1:{free_port()}"
    em = SyncEmitter(closed, "t", spool_path=spool_path, durability="memory", delivery_timeout=1)
    em.start()
    try:
        em.emit(_actions(1, 1)[0])
        _wait_until(lambda: em.counters["queued"] == 0, "the event written by the writer thread")
        assert em._emitter._spool is not None and em._emitter._spool.pending == 1
    finally:
        em.close()


@pytest.mark.integration
def test_counters_add_up_whenever_they_are_read(
    broker: EmbeddedBroker, topic: str, spool_path: Path
) -> None:
    """Every accepted event is in exactly one of sent, resent and unsent, at every read: from
    another thread while emitting, inside the `with` block, and after it."""
    samples: list[dict[str, int]] = []
    stop = threading.Event()
    with SyncEmitter(broker.bootstrap_servers, topic, spool_path=spool_path) as em:

        def sample() -> None:
            while not stop.is_set():
                samples.append(em.counters)

        reader = threading.Thread(target=sample)
        reader.start()
        try:
            for ev in _actions(300, keys=3):
                em.emit(ev)
        finally:
            stop.set()
            reader.join(30)
        inside = em.counters
        assert inside["emitted"] == 300
        assert inside["sent"] + inside["unsent"] == 300
        assert em.flush(20)
        assert em.counters["sent"] == 300 and em.counters["unsent"] == 0
    assert samples
    previous = samples[0]
    for c in samples:
        assert c["sent"] + c["resent"] + c["unsent"] == c["emitted"], c
        assert c["sent"] >= previous["sent"] and c["emitted"] >= previous["emitted"], c
        previous = c
    assert em.counters["sent"] == 300


@pytest.mark.integration
def test_events_spooled_for_one_destination_never_reach_another(
    broker: EmbeddedBroker, topic: str, tmp_path: Path, codec: Codec
) -> None:
    spools = tmp_path / "spools"
    spools.mkdir()
    port = free_port()
    down = f"127.0.0.1:{port}"
    theirs = _actions(5, keys=1)
    with SyncEmitter(down, topic, spool_path=spools, delivery_timeout=1) as em:
        for ev in theirs:
            em.emit(ev)
    assert em.report().unsent == 5
    their_spool = spool_file(spools, down, topic)
    assert their_spool.exists()

    # The same spool directory, another destination: its own file, its own events only.
    mine = [f.principal(f"agent:{i}") for i in range(3)]
    with SyncEmitter(broker.bootstrap_servers, topic, spool_path=spools) as em:
        for ev in mine:
            em.emit(ev)
        assert em.flush(20)
    assert em.report().resent == 0
    got = {r["event_id"] for _, r in _decoded(codec, read_all(broker.bootstrap_servers, topic))}
    assert got == {e["event_id"] for e in mine}
    # Named explicitly, the other destination's file is refused, not drained into this one.
    with pytest.raises(ConfigError, match="holds events for"):
        SyncEmitter(broker.bootstrap_servers, topic, spool_path=their_spool).start()
    assert len(_on_disk(their_spool, down, topic)) == 5

    # Their own broker, when it is back, gets them.
    later = EmbeddedBroker(port=port)
    try:
        later.start()
        later.create_topic(topic, 1)
        with SyncEmitter(down, topic, spool_path=spools) as em:
            assert em.flush(30)
        assert em.report().resent == 5
        got = {r["event_id"] for _, r in _decoded(codec, read_all(down, topic))}
        assert got == {e["event_id"] for e in theirs}
    finally:
        later.stop()


@pytest.mark.integration
async def test_compression_reaches_the_wire_and_bad_codecs_are_refused(
    broker: EmbeddedBroker, topic: str, spool_path: Path, codec: Codec
) -> None:
    with pytest.raises(ConfigError, match="compression"):
        Emitter(broker.bootstrap_servers, topic, compression="brotli")
    sent = _actions(50, keys=2)
    async with Emitter(broker.bootstrap_servers, topic, spool_path=spool_path,
                       compression="zstd") as em:  # fmt: skip
        assert em.settings.compression == "zstd"
        await em.emit_many(sent)
        assert await em.flush(20)
    records = await asyncio.to_thread(read_all, broker.bootstrap_servers, topic)
    assert sorted(r["event_id"] for _, r in _decoded(codec, records)) == sorted(
        e["event_id"] for e in sent
    )


def test_the_library_prints_nothing_by_itself(tmp_path: Path) -> None:
    """Without logging configured by the application, a broker that is down (connection
    errors, spooling, events left unsent at close) shows nothing on stderr or stdout."""
    code = f"""
from ledger.emitter import SyncEmitter
with SyncEmitter("127.0.0.1:{free_port()}", "t", spool_path={str(tmp_path / "s")!r},
                 delivery_timeout=1, close_timeout=1) as em:
    em.action_performed("a-1", principal_id="agent:a", operation="crm:read",
                        resource="crm/1", outcome="succeeded")
assert em.report().unsent == 1
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout, proc.stderr) == ("", "")


def test_the_spool_works_where_there_is_no_fcntl(tmp_path: Path) -> None:
    """On Windows the spool takes its lock with msvcrt: importing and using it must not need
    fcntl (here: no fcntl at all, sys.platform win32, a stand-in msvcrt)."""
    code = f"""
import sys, types
import ledger.errors
calls = []
msvcrt = types.ModuleType("msvcrt")
msvcrt.LK_NBLCK = 2
msvcrt.locking = lambda fd, mode, n: calls.append(mode)
sys.modules["msvcrt"], sys.modules["fcntl"] = msvcrt, None
sys.platform = "win32"
from ledger.stream.spool import Spool
spool = Spool({str(tmp_path / "w.spool")!r}, 1 << 20, destination="b:1/t")
spool.append([(b"k", b"v")])
assert spool.read(10).messages == [(b"k", b"v")]
spool.close()
assert calls == [2], calls
"""
    env = {**os.environ, "PYTHONPATH": str(Path(spool_module.__file__).parents[2])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
