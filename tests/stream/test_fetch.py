"""A fetch on its way to the ledger: refetched offsets skipped, bad values kept with coordinates."""

from __future__ import annotations

from types import SimpleNamespace

from aiokafka import TopicPartition

from ledger.contract.codec import Codec
from ledger.contract.fastdecode import BatchDecoder
from ledger.stream.fetch import prepare_batch
from tests import factories as f
from tests.kafkautil import wire


def test_prepare_batch_skips_offsets_already_appended(codec: Codec) -> None:
    tp = TopicPartition("t", 2)
    payloads = [wire(f.principal(f"agent:{i}")) for i in range(4)]
    batch = {tp: [SimpleNamespace(offset=10 + i, value=p) for i, p in enumerate(payloads)]}
    expected = {("t", 2): 12}

    prepared = prepare_batch(batch, codec, expected)

    assert prepared.good.source == ["kafka:t/2/12", "kafka:t/2/13"]
    assert prepared.offsets == {("t", 2): 14}
    assert expected == {("t", 2): 14}
    assert prepare_batch(batch, codec, expected).received == 0


def test_bad_values_keep_their_bytes_and_coordinates(codec: Codec) -> None:
    tp0, tp1 = TopicPartition("t", 0), TopicPartition("t", 1)
    good = wire(f.principal("agent:a"))
    batch = {
        tp0: [SimpleNamespace(offset=5, value=b"junk"), SimpleNamespace(offset=6, value=good)],
        tp1: [SimpleNamespace(offset=0, value=None)],
    }

    prepared = prepare_batch(batch, BatchDecoder(codec), {})

    assert prepared.good.source == ["kafka:t/0/6"] and prepared.good.payload == [good]
    assert [(r.source, r.raw) for r in prepared.bad] == [("kafka:t/0/5", b"junk"),
                                                          ("kafka:t/1/0", None)]  # fmt: skip
    assert "empty message" in prepared.bad[1].reason
    assert prepared.offsets == {("t", 0): 7, ("t", 1): 1}
    assert prepared.received == 3
