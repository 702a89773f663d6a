"""The quarantine: input the ledger did not accept, kept as evidence, and how to get it out again.

Nothing offered to the ledger is dropped without a trace. A message that cannot be decoded, an
invalid event, and a *conflicting duplicate* (an `event_id` the ledger already holds, or that
came earlier in the same batch, arriving with different bytes) are not appended: their raw bytes,
source coordinates (`file:NAME:LINE`, `kafka:TOPIC/PARTITION/OFFSET`) and reason go to the
`quarantine` table in the same transaction as the batch. Exact repeats (same bytes) are the
at-least-once delivery the ledger dedupes, and are only counted.

This module decides which repeats conflict (`split_repeats`, for `Store.append`) and lists and
exports the table for investigators (`quarantined`, `export`, behind `ledger quarantine`).

Cost: `split_repeats` runs only for a batch in which some id repeats (rare: producer retries,
re-reads); it reads the stored payloads of the held ids by seq (one query, the row groups of
those seqs only) and walks the batch once. A batch of new ids never gets here. Listing reads
each matching row's metadata, size, SHA-256 and first `PREVIEW` bytes, never the whole raw;
`export` reads the raw bytes a thousand rows at a time, so memory stays bounded.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from ledger._text import first_line
from ledger.contract.batch import EventBatch, Rejected
from ledger.errors import ConfigError, StoreError

__all__ = [
    "MANIFEST",
    "PREVIEW",
    "Quarantined",
    "conflict_reason",
    "export",
    "file_name",
    "parse_time",
    "quarantined",
    "split_repeats",
]

#: bytes of raw input shown by a listing
PREVIEW = 32
#: the manifest `export` writes next to the raw files, one JSON object per exported row
MANIFEST = "index.jsonl"
_CHUNK = 1000
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


# -- conflicting duplicates (the writer's side) ------------------------------------------------


def conflict_reason(seq: int, stored: bytes, received: bytes) -> str:
    """The quarantine reason of a conflicting duplicate of the entry at `seq`:
    `conflicting duplicate of seq N: stored payload sha256 HEX, received sha256 HEX`."""
    return (
        f"conflicting duplicate of seq {seq}: "
        f"stored payload sha256 {hashlib.sha256(stored).hexdigest()}, "
        f"received sha256 {hashlib.sha256(received).hexdigest()}"
    )


def split_repeats(
    con: duckdb.DuckDBPyConnection, batch: EventBatch, held: Mapping[str, int], seq0: int
) -> tuple[list[int], list[Rejected]]:
    """Split a batch whose ids repeat into (positions to append, conflicting duplicates).

    `held` maps the batch's ids the ledger already holds to the seq of their entry
    (`SeenIds.where`); `seq0` is the seq the first appended event will get. Each event is
    compared with the *first* copy of its id (the stored entry, else the first copy in this
    batch, which will sit at `seq0 + its position among those kept`): the same payload bytes
    make an exact repeat (neither kept nor returned: the caller counts it as a duplicate),
    different bytes a `Rejected` with its payload as raw, its source, and `conflict_reason`.
    Reads `entries` only for the seqs in `held`. Raises `StoreError` if DuckDB fails or a held
    seq is not in `entries` (a ledger changed under its writer).
    """
    stored = _payloads(con, sorted(set(held.values()))) if held else {}
    keep: list[int] = []
    first: dict[str, tuple[int, bytes]] = {}
    conflicts: list[Rejected] = []
    for i, (event_id, payload) in enumerate(zip(batch.event_id, batch.payload, strict=True)):
        seq = held.get(event_id)
        if seq is not None:
            original = stored.get(seq)
            if original is None:
                raise StoreError(f"entry seq {seq} of event {event_id!r} is not in the ledger")
        elif (prior := first.get(event_id)) is not None:
            seq, original = prior
        else:
            first[event_id] = (seq0 + len(keep), payload)
            keep.append(i)
            continue
        if payload != original:
            reason = conflict_reason(seq, original, payload)
            conflicts.append(Rejected(batch.source[i], payload, reason))
    return keep, conflicts


def _payloads(con: duckdb.DuckDBPyConnection, seqs: list[int]) -> dict[int, bytes]:
    try:
        rows = con.execute(
            "SELECT seq, payload FROM entries "
            "WHERE seq BETWEEN ? AND ? AND seq IN (SELECT unnest(?))",
            [seqs[0], seqs[-1], seqs],
        ).fetchall()
    except duckdb.Error as exc:
        raise StoreError(f"cannot read stored payloads: {first_line(exc)}") from exc
    return {int(seq): bytes(payload) for seq, payload in rows}


# -- listing and export (the investigator's side) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Quarantined:
    """One quarantined input, without its full raw bytes (`export` writes those).

    `number` is the row's 1-based position in the quarantine table (insertion order; the
    table is append-only, so it never changes and names the row in exports); `received_at`
    is UTC; `size` (bytes) and `sha256` (hex) are None when no raw bytes were kept (a Kafka
    message without a value); `head` is the first `PREVIEW` bytes of raw (b"" when none).
    """

    number: int
    received_at: datetime
    source: str
    reason: str
    size: int | None
    sha256: str | None
    head: bytes

    @property
    def preview(self) -> str:
        """`head` printable: ASCII 0x20-0x7e as is (backslash doubled), any other byte `\\xNN`,
        `...` when raw is longer than the head; `` when no raw was kept."""
        text = "".join(
            "\\\\" if b == 0x5C else chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}"
            for b in self.head
        )
        return text + "..." if self.size is not None and self.size > len(self.head) else text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: number, received_at (ISO 8601, UTC), source, reason, size, sha256,
        preview."""
        return {
            "number": self.number,
            "received_at": self.received_at.isoformat().replace("+00:00", "Z"),
            "source": self.source,
            "reason": self.reason,
            "size": self.size,
            "sha256": self.sha256,
            "preview": self.preview,
        }


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (`2026-03-23T10:00:00Z`, an offset, or naive meaning UTC) in UTC.
    Raises `ConfigError` naming the value when it is not one."""
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"{text!r} is not an ISO 8601 time such as 2026-03-23T10:00:00Z") from exc
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def quarantined(
    con: duckdb.DuckDBPyConnection, reason: str | None = None, since: datetime | None = None
) -> list[Quarantined]:
    """The quarantined input, oldest first (insertion order).

    `reason`: only rows whose reason contains it, case-insensitively (plain text, no
    wildcards). `since`: only rows received at or after it (a naive datetime means UTC).
    Works on any ledger, read-only or not, old or new. Raises `StoreError` if DuckDB fails.
    """
    where: list[str] = []
    params: list[object] = []
    if reason is not None:
        where.append("contains(lower(reason), lower(?))")
        params.append(reason)
    if since is not None:
        where.append("received_at >= ?")
        params.append(since.replace(tzinfo=UTC) if since.tzinfo is None else since)
    sql = (
        "SELECT rowid + 1, received_at, source, reason, octet_length(raw), sha256(raw), "
        f"raw[1:{PREVIEW}] FROM quarantine"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY rowid"
    )
    try:
        rows = con.execute(sql, params).fetchall()
    except duckdb.Error as exc:
        raise StoreError(f"cannot read the quarantine: {first_line(exc)}") from exc
    return [
        Quarantined(
            int(number),
            _utc(received_at),
            source,
            text,
            None if size is None else int(size),
            digest,
            b"" if head is None else bytes(head),
        )
        for number, received_at, source, text, size, digest, head in rows
    ]


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def file_name(row: Quarantined) -> str:
    """`NNNNNN-<source with every run of unsafe characters as _>.bin`: stable per row."""
    safe = _UNSAFE.sub("_", row.source).strip("._")[:80] or "input"
    return f"{row.number:06d}-{safe}.bin"


def export(
    con: duckdb.DuckDBPyConnection,
    rows: Sequence[Quarantined],
    directory: str | Path,
    force: bool = False,
) -> list[Path]:
    """Write each row's raw bytes to `directory`/`file_name(row)` and a manifest `MANIFEST`.

    The manifest has one JSON object per row, in order: name, number, source, reason,
    received_at, size and sha256 (of the bytes written), and `"raw": "missing"` for a row
    kept without raw bytes (its file is written empty). `directory` is created if missing.
    Returns the paths of the raw files, in row order. Raises `ConfigError`, with nothing
    written, if any target file exists and not `force`, and when a file cannot be written;
    `StoreError` if DuckDB fails.
    """
    out = Path(directory)
    paths = [out / file_name(row) for row in rows]
    manifest = out / MANIFEST
    if not force:
        existing = [p for p in [*paths, manifest] if p.exists()]
        if existing:
            more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
            raise ConfigError(
                f"{existing[0]}{more} already exist; nothing was written (--force overwrites)"
            )
    lines = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            raws = _raws(con, [row.number for row in chunk])
            for row, path in zip(chunk, paths[start : start + _CHUNK], strict=True):
                raw = raws.get(row.number)
                path.write_bytes(raw or b"")
                entry = {
                    "name": path.name,
                    **{k: v for k, v in row.to_dict().items() if k != "preview"},
                    "size": None if raw is None else len(raw),
                    "sha256": None if raw is None else hashlib.sha256(raw).hexdigest(),
                }
                if raw is None:
                    entry["raw"] = "missing"
                lines.append(json.dumps(entry, ensure_ascii=False) + "\n")
        manifest.write_text("".join(lines), encoding="utf-8")
    except OSError as exc:
        where = exc.filename or out
        raise ConfigError(f"cannot write {where}: {exc.strerror or exc}") from exc
    return paths


def _raws(con: duckdb.DuckDBPyConnection, numbers: list[int]) -> dict[int, bytes | None]:
    rowids = [n - 1 for n in numbers]
    try:
        rows = con.execute(
            "SELECT rowid + 1, raw FROM quarantine "
            "WHERE rowid BETWEEN ? AND ? AND rowid IN (SELECT unnest(?))",
            [min(rowids), max(rowids), rowids],
        ).fetchall()
    except duckdb.Error as exc:
        raise StoreError(f"cannot read the quarantine: {first_line(exc)}") from exc
    return {int(n): None if raw is None else bytes(raw) for n, raw in rows}
