"""File ingest: JSON Lines in, each event encoded to single-object Avro as Kafka carries it."""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

from ledger.contract import events
from ledger.contract.codec import Codec, default_codec
from ledger.errors import LedgerError
from ledger.store import AppendResult, Incoming, Rejected, Store

__all__ = ["BATCH", "IngestSummary", "fewer_collections", "ingest", "prepare", "read_lines"]

BATCH = 10_000


@dataclass(slots=True)
class IngestSummary:
    lines: int = 0
    appended: int = 0
    duplicates: int = 0
    quarantined: int = 0
    size: int = 0
    head_hash: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prepare(line: bytes, source: str, codec: Codec) -> Incoming | Rejected:
    """Validate and encode one JSON line; a malformed line becomes a `Rejected` with its reason."""
    try:
        event = events.parse_event_json(line)
        record = events.to_record(event)
        payload = codec.encode(record)
    except LedgerError as exc:
        return Rejected(source, line, str(exc))
    return Incoming(event.event_id, event.type, record["occurred_at"], payload, source, record)


def read_lines(paths: Sequence[str]) -> Iterator[tuple[str, bytes]]:
    """(source, line) for every non-blank line; `-` is standard input."""
    for path in paths:
        name = "<stdin>" if path == "-" else path
        try:
            fh: BinaryIO = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise LedgerError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    yield f"file:{name}:{lineno}", line.rstrip(b"\r\n")
        except OSError as exc:
            raise LedgerError(f"cannot read {path}: {exc.strerror}") from exc
        finally:
            if fh is not sys.stdin.buffer:
                fh.close()


@contextlib.contextmanager
def fewer_collections(threshold: int = 100_000) -> Iterator[None]:
    """Run the cyclic GC less often while a hot loop allocates many short-lived objects.

    Ingest builds several acyclic containers per event (models, records, Arrow inputs); at
    the default gen-0 threshold of 700 the collector runs every few dozen events and costs
    about a fifth of ingest time. Reference counting still frees everything at once.
    """
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], threshold), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def ingest(
    store: Store,
    lines: Iterable[tuple[str, bytes]],
    codec: Codec | None = None,
    batch_size: int = BATCH,
    progress: Callable[[IngestSummary], None] | None = None,
) -> IngestSummary:
    """Append every valid line and quarantine the rest, one transaction per batch."""
    codec = codec or default_codec()
    summary = IngestSummary()
    total = AppendResult()
    good: list[Incoming] = []
    bad: list[Rejected] = []

    def flush() -> None:
        total.add(store.append(good, bad))
        good.clear()
        bad.clear()
        summary.appended, summary.duplicates = total.appended, total.duplicates
        summary.quarantined = total.quarantined
        if progress:
            progress(summary)

    with fewer_collections():
        for source, line in lines:
            summary.lines += 1
            item = prepare(line, source, codec)
            if type(item) is Incoming:
                good.append(item)
            else:
                bad.append(item)  # type: ignore[arg-type]
            if len(good) + len(bad) >= batch_size:
                flush()
        flush()
    summary.size, head_hash = store.head()
    summary.head_hash = head_hash.hex()
    return summary
