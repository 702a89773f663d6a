"""`ledger emit`: JSON Lines to Kafka, all or nothing unless told to skip the invalid lines."""

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
from ledger.stream.emitter import Emitter
from ledger.stream.spool import Message

__all__ = ["EmitSummary", "emit_lines", "validate_lines"]


@dataclass(slots=True)
class EmitSummary:
    lines: int = 0
    sent: int = 0
    skipped: int = 0
    spooled: int = 0
    resent: int = 0
    seconds: float = 0.0
    invalid: list[tuple[str, str]] = field(default_factory=list)
    spool: str = ""
    spool_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


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
    """Validate every line first; send nothing if one is invalid, unless `skip_invalid`."""
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
        for key, value in messages:
            await emitter.emit_encoded(key, value)
        await emitter.flush(emitter.close_timeout, give_up_when_down=True)
    counters = emitter.counters
    summary.sent = counters["sent"]
    summary.spooled = counters["spool_bytes"] and counters["spooled"]
    summary.resent = counters["resent"]
    summary.spool = str(emitter.spool_path)
    summary.spool_bytes = counters["spool_bytes"]
