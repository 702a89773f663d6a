"""Recompute the ledger from its bytes; say where, if anywhere, it stops being what was recorded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from hashlib import sha256
from typing import Any

from ledger import chain
from ledger.codec import Codec, default_codec
from ledger.errors import CodecError
from ledger.store import Store

BATCH_ROWS = 65_536


@dataclass(slots=True)
class VerifyReport:
    """Outcome of `verify`: ok, or the first bad seq and why."""

    ok: bool
    size: int
    head_hash: str
    bad_seq: int | None = None
    reason: str | None = None
    checks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def empty(self) -> bool:
        return self.ok and self.size == 0


class _Failure(Exception):
    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(reason)
        self.seq = seq
        self.reason = reason


def _check_rows(
    store: Store, codec: Codec, progress: Callable[[int, int], None] | None
) -> tuple[int, bytes]:
    """Walk entries in seq order: continuity, links, hashes, envelope agreement, unique ids."""
    total = store.size()
    reader = store.con.sql(
        "SELECT seq, event_id, type, epoch_us(occurred_at), payload, prev_hash, entry_hash "
        "FROM entries ORDER BY seq"
    ).to_arrow_reader(BATCH_ROWS)
    expected = 0
    prev = chain.GENESIS
    seen: set[str] = set()
    for batch in reader:
        cols = [batch.column(i).to_pylist() for i in range(7)]
        for seq, event_id, etype, occurred, payload, prev_hash, ehash in zip(*cols, strict=True):
            if seq != expected:
                if seq > expected:
                    raise _Failure(expected, f"entry seq {expected} is missing (next is {seq})")
                raise _Failure(seq, f"seq {seq} appears more than once")
            if prev_hash != prev:
                what = "32 zero bytes" if seq == 0 else f"the entry_hash of seq {seq - 1}"
                raise _Failure(seq, f"prev_hash does not equal {what}")
            if sha256(b"\x00" + seq.to_bytes(8, "big") + prev_hash + payload).digest() != ehash:
                raise _Failure(
                    seq, "entry_hash does not equal SHA-256(0x00 || seq || prev_hash || payload)"
                )
            try:
                p_id, p_type, p_occurred = codec.peek_envelope(payload)
            except CodecError as exc:
                raise _Failure(seq, f"payload does not decode: {exc}") from exc
            if p_id != event_id:
                raise _Failure(seq, f"event_id {event_id!r} disagrees with payload ({p_id!r})")
            if p_type != etype:
                raise _Failure(seq, f"type {etype!r} disagrees with payload ({p_type!r})")
            if p_occurred != occurred:
                raise _Failure(seq, "occurred_at disagrees with payload")
            if event_id in seen:
                raise _Failure(seq, f"event_id {event_id!r} is recorded twice")
            seen.add(event_id)
            prev = ehash
            expected += 1
        if progress:
            progress(expected, total)
    return expected, prev


def verify_store(
    store: Store,
    codec: Codec | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Recompute every entry hash and link from seq 0 and check the recorded head."""
    codec = codec or default_codec()
    checks = ["seq continuity", "prev_hash links", "entry hashes", "payload envelope", "unique ids"]
    try:
        size, head = _check_rows(store, codec, progress)
    except _Failure as fail:
        return VerifyReport(False, store.size(), "", fail.seq, fail.reason, checks)
    recorded = store.recorded_head()
    checks.append("recorded head")
    if recorded is not None:
        rec_size, rec_hash = recorded
        if rec_size > size:
            return VerifyReport(
                False,
                size,
                head.hex(),
                size,
                f"ledger was recorded with {rec_size} entries but holds {size}: "
                f"entries from seq {size} on are missing",
                checks,
            )
        if rec_size < size:
            return VerifyReport(
                False,
                size,
                head.hex(),
                rec_size,
                f"entries from seq {rec_size} on were not written by the ledger "
                f"(its recorded head is {rec_size} entries)",
                checks,
            )
        if rec_hash != head:
            return VerifyReport(
                False,
                size,
                head.hex(),
                size - 1,
                "head hash differs from the one recorded with the last append",
                checks,
            )
    elif size:
        return VerifyReport(
            False, size, head.hex(), 0, "entries exist but no head was ever recorded", checks
        )
    return VerifyReport(True, size, head.hex(), checks=checks)
