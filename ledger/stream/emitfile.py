"""`ledger emit`: JSON Lines to Kafka, all or nothing unless told to skip the invalid lines;
first, whatever waits in the destination's spool.

The events go through the emitter and its spool like any agent's, in batches of `BATCH` (one
write and one fsync each in spool mode), so a run that dies half-way leaves the rest on disk
for the next one. The summary says what became of every event: sent, re-sent from the spool,
still unsent (waiting in the spool), and frames lost to damage in the spool file.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from ledger.config import Settings
from ledger.contract import events
from ledger.contract.builders import partition_key
from ledger.contract.codec import Codec, default_codec
from ledger.errors import LedgerError
from ledger.stream.emitter import EmitReport, Emitter
from ledger.stream.spool import Message

__all__ = [
    "EXIT_DAMAGED",
    "EXIT_UNDELIVERED",
    "EmitSummary",
    "SpoolDamagedError",
    "UndeliveredError",
    "emit_lines",
    "validate_lines",
]

#: `ledger emit` exit codes: events wait in the spool (Kafka unreachable); spool frames lost
EXIT_UNDELIVERED = 6
EXIT_DAMAGED = 7
BATCH = 10_000


class UndeliveredError(LedgerError):
    """Events were not acknowledged by Kafka: they wait in the spool for the next run."""

    exit_code = EXIT_UNDELIVERED


class SpoolDamagedError(LedgerError):
    """Frames of the spool were damaged and cannot be sent; their bytes are in `.bad`."""

    exit_code = EXIT_DAMAGED


@dataclass(slots=True)
class EmitSummary:
    lines: int = 0
    sent: int = 0  # events of this run acknowledged
    resent: int = 0  # events from the spool (earlier runs, or this one's after an outage)
    spooled: int = 0  # events of this run that waited for an outage
    unsent: int = 0  # not acknowledged: they wait in the spool
    damaged: int = 0  # spool frames lost to damage (at least one per damaged region)
    damaged_regions: int = 0
    torn: int = 0  # writes a crash cut short (their emit() never returned)
    not_written: int = 0  # --durability memory: lost to a failed spool write
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    invalid: list[tuple[str, str]] = field(default_factory=list)
    spool: str = ""
    spool_bytes: int = 0
    bad_file: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def rate(self) -> float:
        return (self.sent + self.resent) / self.seconds if self.seconds else 0.0

    @property
    def delivered(self) -> bool:
        return self.unsent == 0 and self.damaged == 0 and self.not_written == 0

    def take(self, report: EmitReport) -> None:
        for name in ("sent", "resent", "spooled", "unsent", "damaged", "damaged_regions",
                     "torn", "not_written", "failed", "spool_bytes"):  # fmt: skip
            setattr(self, name, getattr(report, name))
        self.spool, self.bad_file = report.spool, report.bad_file


def validate_lines(
    lines: Iterable[tuple[str, bytes]], codec: Codec
) -> tuple[list[Message], list[tuple[str, str]], int]:
    """Validate and encode every line: (messages, [(source, reason)], number of lines)."""
    good: list[Message] = []
    bad: list[tuple[str, str]] = []
    count = 0
    for source, line in lines:
        count += 1
        try:
            record = events.to_record(events.parse_event_json(line))
            good.append((partition_key(record), codec.encode(record)))
        except LedgerError as exc:
            bad.append((source, str(exc)))
    return good, bad, count


def emit_lines(
    lines: Iterable[tuple[str, bytes]],
    settings: Settings,
    skip_invalid: bool = False,
    codec: Codec | None = None,
    **emitter_kwargs: Any,
) -> EmitSummary:
    """Validate every line first; send nothing if one is invalid, unless `skip_invalid`.
    With no lines, only what waits in the spool is sent."""
    messages, invalid, count = validate_lines(lines, codec or default_codec())
    summary = EmitSummary(lines=count, invalid=invalid)
    if invalid and not skip_invalid:
        return summary
    summary.skipped = len(invalid)
    started = time.perf_counter()
    asyncio.run(_send(messages, settings, summary, emitter_kwargs))
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


async def _send(
    messages: list[Message], settings: Settings, summary: EmitSummary, kwargs: dict[str, Any]
) -> None:
    emitter = Emitter(settings=settings, **kwargs)
    async with emitter:
        for i in range(0, len(messages), BATCH):
            await emitter.emit_encoded_many(messages[i : i + BATCH])
        await emitter.flush(emitter.close_timeout, give_up_when_down=True)
    summary.take(await emitter.close())
