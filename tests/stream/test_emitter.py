"""The emitter SDK against the real embedded broker, and with the broker down (spool)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import defaultdict
from collections.abc import Callable
from itertools import accumulate
from pathlib import Path
from typing import Any

import pytest

from ledger.contract.codec import Codec
from ledger.errors import SpoolFullError, ValidationError
from ledger.stream.broker import EmbeddedBroker, free_port
from ledger.stream.emitter import Emitter, SyncEmitter
from ledger.stream.spool import Message, Spool
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

    assert counters["sent"] == 4 and counters["spooled"] == counters["failed"] == 0
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
        assert em.counters["queued"] == 0
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
            await asyncio.sleep(0.5)
            assert em.counters["spooled"] == 300
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

    assert counters["resent"] + counters["sent"] == 400
    assert counters["resent"] >= 300
    order = _per_key_order(codec, records)
    for k in range(5):
        assert order[f"d-{k}".encode()] == [f"a-{k}-{i}" for i in range(80)]


@pytest.mark.integration
def test_spool_survives_a_restart_and_is_resent_first(
    broker: EmbeddedBroker, topic: str, spool_path: Path, codec: Codec
) -> None:
    closed = f"127.0.0.1:{free_port()}"
    sent = _actions(60, keys=3)
    with SyncEmitter(closed, topic, spool_path=spool_path, delivery_timeout=1) as down:
        for ev in sent[:40]:
            down.emit(ev)
    assert down.counters["spooled"] == 40
    assert spool_path.exists()

    with SyncEmitter(broker.bootstrap_servers, topic, spool_path=spool_path) as up:
        for ev in sent[40:]:
            up.emit(ev)
        assert up.flush(20)
        counters = up.counters
    # While the old spool drains, new events queue behind it on disk: order first.
    assert counters["resent"] >= 40 and counters["resent"] + counters["sent"] == 60

    order = _per_key_order(codec, read_all(broker.bootstrap_servers, topic))
    assert order[b"d-1"] == [f"a-1-{i}" for i in range(20)]


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll `condition` until it holds; fail (not hang) if it does not within `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            pytest.fail(f"not observed within {timeout:.0f}s: {what}")
        time.sleep(0.005)


def _encoded(events: list[dict[str, Any]], limit: int) -> tuple[list[Message], list[int], int]:
    """What the emitter writes for `events`: the messages, their spool frame sizes (as
    spool.py lays them out) and how many of them, oldest first, a spool of `limit` bytes holds."""
    encoder = Emitter("127.0.0.1:9", "t")  # never started: it only encodes
    encoded = [encoder.prepare(ev) for ev in events]
    frame_bytes = [10 + len(key) + len(value) for key, value in encoded]
    fits = sum(1 for total in accumulate(frame_bytes) if total <= limit)
    assert 1 < fits < len(events)
    return encoded, frame_bytes, fits


def _on_disk(spool_path: Path, limit: int) -> list[Message]:
    spool = Spool(spool_path, limit)
    try:
        return spool.read(1_000_000)[0]
    finally:
        spool.close()


def test_full_spool_raises_to_the_caller_instead_of_dropping(spool_path: Path) -> None:
    # The broker being down is made certain before the emits that count: nothing listens on
    # `closed`, and the first event reaching the spool shows the emitter has seen that (it marks
    # Kafka down before it spills its queue). From then on every emit goes straight to the spool,
    # so exactly the events that fit are accepted and the next one raises, whatever the timing.
    closed = f"127.0.0.1:{free_port()}"
    limit = 20_000
    sent = _actions(1000, keys=2)
    encoded, frame_bytes, fits = _encoded(sent, limit)

    em = SyncEmitter(closed, "t", spool_path=spool_path, spool_max_bytes=limit, delivery_timeout=1)
    em.start()
    try:
        em.emit(sent[0])
        _wait_until(
            lambda: em.counters["spooled"] == 1, "first event spooled after a failed connect"
        )
        accepted = 1
        with pytest.raises(SpoolFullError, match="full"):
            for ev in sent[1:]:
                em.emit(ev)
                accepted += 1
        assert accepted == fits  # raised at the first event that did not fit, not before or after
        with pytest.raises(SpoolFullError, match="full"):  # and it keeps refusing, not dropping
            em.emit(sent[accepted])
        counters = em.counters
    finally:
        em.close()  # nothing waits in memory, so close() has nothing to spool or report
    assert counters == {
        "sent": 0,
        "spooled": accepted,
        "resent": 0,
        "failed": 0,
        "queued": 0,
        "spool_bytes": sum(frame_bytes[:accepted]),
    }
    # Every accepted event is on disk, in order, and none of the refused ones.
    assert _on_disk(spool_path, limit) == encoded[:accepted]


def test_events_queued_before_the_broker_is_seen_down_are_spooled_or_reported(
    spool_path: Path,
) -> None:
    # The other order: events accepted into memory while the emitter still waits for the broker.
    # A fake broker accepts the emitter's connection and answers nothing, so its first connect
    # hangs until the test hangs up: every event is certainly queued when the failure is seen.
    limit = 20_000
    sent = _actions(1000, keys=2)
    encoded, _frame_bytes, fits = _encoded(sent, limit)
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(30)
    address = f"127.0.0.1:{server.getsockname()[1]}"
    em = SyncEmitter(
        address, "t", spool_path=spool_path, spool_max_bytes=limit, delivery_timeout=60
    )
    em.start()
    checked = False
    try:
        conn, _ = server.accept()
        with conn:
            for ev in sent:
                em.emit(ev)
            assert em.counters["queued"] == len(sent) and em.counters["spooled"] == 0
        # Hung up: the connect fails and the queue spills, oldest first, as far as it fits, and
        # keeps the rest (a spill that stops anywhere else times out here).
        _wait_until(lambda: em.counters["spooled"] == fits, f"{fits} events spilled to the spool")
        assert em.counters["queued"] == len(sent) - fits
        with pytest.raises(SpoolFullError, match="full"):  # the next caller hears of it
            em.emit(sent[0])
        assert em.counters["queued"] == len(sent) - fits  # and nothing was dropped
        checked = True
    finally:
        server.close()  # from here on a reconnect fails at once
        if not checked:
            with contextlib.suppress(Exception):
                em.close()
    # close() spools nothing more (the spool is full) and reports what it could not spool.
    with pytest.raises(SpoolFullError, match="full") as raised:
        em.close()
    assert raised.value.unsent == len(sent) - fits
    assert em.counters["spooled"] + raised.value.unsent == len(sent)
    assert _on_disk(spool_path, limit) == encoded[:fits]
