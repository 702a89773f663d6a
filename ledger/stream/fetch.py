"""One Kafka fetch on its way into the ledger: flattened, decoded, joined with coordinates.

Pure functions over `getmany` results, kept apart from the consumer's session handling so
that they can be tested without a broker.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger.contract.batch import Decoded, EventBatch, decode_values
from ledger.contract.codec import Codec
from ledger.contract.fastdecode import BatchDecoder, FastDecoder
from ledger.store import Rejected

__all__ = ["Fetched", "Prepared", "assemble", "prepare_batch", "record_digest", "split_batch"]


@dataclass(slots=True)
class Fetched:
    """One `getmany` result, flattened for decoding: values, their coordinates, next offsets."""

    values: list[bytes | None]
    sources: list[str]
    offsets: dict[tuple[str, int], int]
    #: per partition, (offset, SHA-256 of the value) of the last record taken
    marks: dict[tuple[str, int], tuple[int, bytes]] = field(default_factory=dict)


def split_batch(
    batch: Mapping[Any, Sequence[Any]], expected: dict[tuple[str, int], int]
) -> Fetched:
    """Flatten a fetch, dropping messages already appended (a refetch after a seek).

    `expected` holds the next offset per partition and is advanced here, so the quarantine
    never gets duplicates either.
    """
    values: list[bytes | None] = []
    sources: list[str] = []
    offsets: dict[tuple[str, int], int] = {}
    marks: dict[tuple[str, int], tuple[int, bytes]] = {}
    for tp, messages in batch.items():
        key = (tp.topic, tp.partition)
        floor = expected.get(key, -1)
        prefix = f"kafka:{tp.topic}/{tp.partition}/"
        last = -1
        for msg in messages:
            offset = msg.offset
            if offset < floor:
                continue
            last = offset
            values.append(msg.value)
            sources.append(prefix + str(offset))
        if last >= 0:
            offsets[key] = last + 1
            expected[key] = last + 1
            marks[key] = (last, record_digest(values[-1]))
    return Fetched(values, sources, offsets, marks)


def record_digest(value: bytes | None) -> bytes:
    """SHA-256 of a record's value (of nothing for a null value): what a mark remembers."""
    return hashlib.sha256(value or b"").digest()


@dataclass(slots=True)
class Prepared:
    """A decoded fetch, ready for `Store.append`."""

    good: EventBatch
    bad: list[Rejected]
    offsets: dict[tuple[str, int], int]
    received: int
    decode_seconds: float = 0.0
    marks: dict[tuple[str, int], tuple[int, bytes]] = field(default_factory=dict)


def assemble(fetched: Fetched, decoded: Decoded) -> Prepared:
    """The fetch's bytes and coordinates joined with what decoding made of them."""
    values, sources = fetched.values, fetched.sources
    return Prepared(
        decoded.batch(values, sources),
        [Rejected(sources[i], values[i], reason) for i, reason in decoded.rejected],
        fetched.offsets,
        len(values),
        decoded.seconds,
        fetched.marks,
    )


def prepare_batch(
    batch: Mapping[Any, Sequence[Any]],
    codec: Codec | FastDecoder | BatchDecoder,
    expected: dict[tuple[str, int], int],
) -> Prepared:
    """Split and decode one fetch in this process (see `split_batch`, `decode_values`)."""
    fetched = split_batch(batch, expected)
    return assemble(fetched, decode_values(fetched.values, codec))
