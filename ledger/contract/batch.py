"""A batch of accepted events in columns: decoded once, then appended through Arrow.

The consumer decodes on the second core (`ledger.workers`), so what a decode produces must be
cheap to ship between processes and cheap to append: lists of envelope fields and one Arrow
table of projection rows per event type, never a dict per event.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from ledger.contract import events
from ledger.contract.codec import Codec
from ledger.contract.columns import Row, rows_to_arrow
from ledger.contract.fastdecode import BatchDecoder, FastDecoder
from ledger.errors import LedgerError

__all__ = ["Decoded", "EventBatch", "Incoming", "Rejected", "decode_values"]


class Incoming(NamedTuple):
    """An accepted event on its way into the chain. `record` is its decoded Avro form.

    Immutable tuples rather than frozen dataclasses: those cost ~2.5 µs each to build, a tenth
    of the whole per-event ingest budget.
    """

    event_id: str
    type: str
    occurred_at: int
    payload: bytes
    source: str
    record: dict[str, Any]


class Rejected(NamedTuple):
    """Input that could not be accepted; kept with its reason and where it came from."""

    source: str
    raw: bytes | None
    reason: str


@dataclass(slots=True)
class EventBatch:
    """Accepted events, position by position; `rows` holds their projection rows by event type,
    each table's first column `pos` being the event's position in this batch."""

    event_id: list[str] = field(default_factory=list)
    type: list[str] = field(default_factory=list)
    occurred_at: list[int] = field(default_factory=list)
    payload: list[bytes] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    rows: dict[str, pa.Table] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.event_id)

    @classmethod
    def from_incoming(cls, items: Sequence[Incoming]) -> EventBatch:
        """The columnar form of events decoded one by one (file ingest, tests)."""
        return cls(
            [ev.event_id for ev in items],
            [ev.type for ev in items],
            [ev.occurred_at for ev in items],
            [ev.payload for ev in items],
            [ev.source for ev in items],
            rows_to_arrow(
                (i, ev.type, ev.event_id, ev.occurred_at, ev.record["data"])
                for i, ev in enumerate(items)
            ),
        )

    def select(self, keep: Sequence[int]) -> EventBatch:
        """Only the events at positions `keep` (ascending), renumbered from 0."""
        remap = np.full(len(self), -1, dtype=np.int64)
        remap[np.asarray(keep, dtype=np.int64)] = np.arange(len(keep), dtype=np.int64)
        rows = {}
        for etype, table in self.rows.items():
            new_pos = remap[table.column(0).to_numpy()]
            mask = new_pos >= 0
            if mask.any():
                kept = table.filter(pa.array(mask))
                rows[etype] = kept.set_column(0, "pos", pa.array(new_pos[mask], pa.int64()))
        return EventBatch(
            [self.event_id[i] for i in keep],
            [self.type[i] for i in keep],
            [self.occurred_at[i] for i in keep],
            [self.payload[i] for i in keep],
            [self.source[i] for i in keep],
            rows,
        )


class Decoded(NamedTuple):
    """What decoding a list of message values gives: the accepted ones in columns (`rows`
    positions count accepted events only) and the reason for each one refused."""

    accepted: list[int]
    event_id: list[str]
    type: list[str]
    occurred_at: list[int]
    rows: dict[str, pa.Table]
    rejected: list[tuple[int, str]]
    seconds: float

    def batch(self, values: Sequence[bytes | None], sources: Sequence[str]) -> EventBatch:
        """The accepted events as an `EventBatch`, with the bytes and sources kept by the caller."""
        return EventBatch(
            self.event_id,
            self.type,
            self.occurred_at,
            [values[i] for i in self.accepted],  # type: ignore[misc]
            [sources[i] for i in self.accepted],
            self.rows,
        )


def decode_values(
    values: Sequence[bytes | None], decoder: Codec | FastDecoder | BatchDecoder
) -> Decoded:
    """Decode and check every value once; a refused one gets the reason the quarantine keeps.

    Pure (no I/O), so it runs as well in a worker process as in the consumer itself.
    """
    started = time.perf_counter()
    fast = decoder.read_columns(values) if isinstance(decoder, BatchDecoder) else None
    if fast is not None:
        accepted, ids, types, times, rows, slow = fast
        verdict = _decode_each([values[i] for i in slow], decoder) if slow else None
        if verdict is None or not verdict.accepted:
            rejected = [(slow[j], reason) for j, reason in verdict.rejected] if verdict else []
            return Decoded(
                accepted, ids, types, times, rows, rejected, time.perf_counter() - started
            )
        # an event of an older schema: decode the batch one by one, keeping arrival order
    return _decode_each(values, decoder)._replace(seconds=time.perf_counter() - started)


def _decode_each(
    values: Sequence[bytes | None], decoder: Codec | FastDecoder | BatchDecoder
) -> Decoded:
    started = time.perf_counter()
    decode = decoder.decode
    check = events.check_record
    accepted: list[int] = []
    ids: list[str] = []
    types: list[str] = []
    times: list[int] = []
    data: list[Row] = []
    rejected: list[tuple[int, str]] = []
    for i, value in enumerate(values):
        if not value:
            rejected.append((i, "empty message (no value)"))
            continue
        try:
            record, name = decode(value)
            reason = check(record, name)
        except LedgerError as exc:
            rejected.append((i, str(exc)))
            continue
        except (KeyError, TypeError, ValueError) as exc:
            rejected.append((i, f"malformed record: {exc!r}"))
            continue
        if reason is not None:
            rejected.append((i, reason))
            continue
        etype, event_id, occurred_at = record["type"], record["event_id"], record["occurred_at"]
        data.append((len(accepted), etype, event_id, occurred_at, record["data"]))
        accepted.append(i)
        ids.append(event_id)
        types.append(etype)
        times.append(occurred_at)
    rows = rows_to_arrow(data)
    return Decoded(accepted, ids, types, times, rows, rejected, time.perf_counter() - started)
