"""Which event_ids a ledger already holds, for the writer's dedupe, in ~16 bytes per event.

A Python set of every id costs ~100 bytes per event (1 GB at 10M, and it only grows). This
keeps the latest ids as strings and all older ones as 64-bit hashes (with their seq) in sorted
numpy arrays, 16 bytes per event. An old hash that matches only makes an id a *candidate*:
candidates are looked up in `entries` itself, so a hash collision can never drop an event.
Hashes are Python's own `hash(str)`, salted per process, hence rebuilt on every open.

`where` also says at which seq each held id sits, so the writer can compare a repeat's bytes
with the stored entry (a conflicting duplicate is quarantined, not dropped) by reading only
those rows; that costs nothing extra when no id is held, which is almost every batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np
import numpy.typing as npt

__all__ = ["SeenIds"]

_LOAD_BATCH = 1 << 16
_MIN_MERGE = 1 << 18


def _hashes(ids: Sequence[str]) -> npt.NDArray[np.int64]:
    return np.fromiter(map(hash, ids), np.int64, len(ids))


class SeenIds:
    """Exact membership of event ids in `entries`: the latest ids as strings (a retry's
    duplicate is usually recent, and is answered without a query), older ones as hashes
    with the seq of their entry, so a candidate is confirmed by seq (zone maps make that a
    read of the row groups concerned, not a scan of every id)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        hashes, seqs = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
        reader = con.sql("SELECT seq, event_id FROM entries").to_arrow_reader(_LOAD_BATCH)
        for batch in reader:
            seqs.append(batch.column(0).to_numpy().astype(np.int64))
            hashes.append(_hashes(batch.column(1).to_pylist()))
        all_hashes, all_seqs = np.concatenate(hashes), np.concatenate(seqs)
        order = np.argsort(all_hashes, kind="stable")
        self._hash = all_hashes[order]
        self._seq = all_seqs[order]
        self._recent: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._hash) + len(self._recent)

    def held(self, ids: Sequence[str]) -> set[str]:
        """The ids among `ids` that the ledger already holds."""
        return set(self.where(ids))

    def where(self, ids: Sequence[str]) -> dict[str, int]:
        """id -> seq of its entry, for the ids among `ids` that the ledger already holds.

        Recent ids are answered from memory; an old hash that matches is confirmed (and its
        seq read) with one query on `entries` by seq, as in `held`. Empty for a batch of new
        ids, which is the common case.
        """
        recent = self._recent
        held = {i: recent[i] for i in ids if i in recent} if recent else {}
        if not len(self._hash):
            return held
        rest = [i for i in ids if i not in held] if held else ids
        hashes = _hashes(rest)
        order = np.argsort(hashes)  # sorted probes: far fewer cache misses at 10M+
        probes = hashes[order]
        lo = np.searchsorted(self._hash, probes)
        hit = self._hash[np.minimum(lo, len(self._hash) - 1)] == probes
        found = np.flatnonzero(hit)
        if not len(found):
            return held
        hi = np.searchsorted(self._hash, probes[found], "right")  # equal hashes: all their seqs
        candidates = {rest[i] for i in order[found].tolist()}
        seqs = np.concatenate(
            [self._seq[a:b] for a, b in zip(lo[found].tolist(), hi.tolist(), strict=True)]
        ).tolist()
        rows = self._con.execute(
            "SELECT event_id, seq FROM entries "
            "WHERE seq BETWEEN ? AND ? AND seq IN (SELECT unnest(?))",
            [min(seqs), max(seqs), seqs],
        ).fetchall()
        held.update((r[0], int(r[1])) for r in rows if r[0] in candidates)
        return held

    def add(self, ids: Sequence[str], first_seq: int) -> None:
        """Record ids just appended at seqs `first_seq`, `first_seq + 1`, ... (committed)."""
        self._recent.update(zip(ids, range(first_seq, first_seq + len(ids)), strict=True))
        if len(self._recent) >= max(_MIN_MERGE, len(self._hash) // 16):
            hashes = _hashes(list(self._recent))
            seqs = np.fromiter(self._recent.values(), np.int64, len(self._recent))
            order = np.argsort(hashes, kind="stable")
            at = np.searchsorted(self._hash, hashes[order])
            self._hash = np.insert(self._hash, at, hashes[order])
            self._seq = np.insert(self._seq, at, seqs[order])
            self._recent = {}
