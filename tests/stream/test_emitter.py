"""The emitter SDK against the real embedded broker, and with the broker down (spool)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from ledger.contract.codec import Codec
from ledger.errors import SpoolFullError, ValidationError
from ledger.stream.broker import EmbeddedBroker, free_port
from ledger.stream.emitter import Emitter, SyncEmitter
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


def test_full_spool_raises_to_the_caller_instead_of_dropping(spool_path: Path) -> None:
    closed = f"127.0.0.1:{free_port()}"
    accepted = 0
    em = SyncEmitter(closed, "t", spool_path=spool_path, spool_max_bytes=20_000).start()
    with pytest.raises(SpoolFullError, match="full"):
        for ev in _actions(1000, keys=2):
            em.emit(ev)
            accepted += 1
    assert 0 < accepted < 1000
    # Events accepted before the broker was known to be down may still be queued in memory;
    # close() spools what fits and raises for the rest: every one is spooled or reported.
    try:
        em.close()
        unsent = 0
    except SpoolFullError as exc:
        unsent = exc.unsent
    assert em.counters["spooled"] + unsent == accepted
    assert em.counters["spooled"] > 0
