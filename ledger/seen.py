"""Which event_ids a ledger already holds, for the writer's dedupe, in ~8 bytes per event.

A Python set of every id costs ~100 bytes per event (1 GB at 10M, and it only grows). This
keeps the latest ids as a set and all older ones as 64-bit hashes in a sorted numpy array. An
old hash that matches only makes an id a *candidate*: candidates are looked up in `entries`
itself, so a hash collision can never drop an event. Hashes are Python's own
`hash(str)`, salted per process, which is why they are rebuilt from `entries` on every open.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np
import numpy.typing as npt

_LOAD_BATCH = 1 << 16
_MIN_MERGE = 1 << 18


def _hashes(ids: Sequence[str]) -> npt.NDArray[np.int64]:
    return np.fromiter(map(hash, ids), np.int64, len(ids))


class SeenIds:
    """Exact membership of event ids in `entries`: the latest ids as strings (a retry's
    duplicate is usually recent, and is answered without a query), older ones as hashes."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        chunks = [np.empty(0, np.int64)]
        reader = con.sql("SELECT event_id FROM entries").to_arrow_reader(_LOAD_BATCH)
        for batch in reader:
            chunks.append(_hashes(batch.column(0).to_pylist()))
        self._base = np.sort(np.concatenate(chunks))
        self._recent: set[str] = set()

    def __len__(self) -> int:
        return len(self._base) + len(self._recent)

    def held(self, ids: Sequence[str]) -> set[str]:
        """The ids among `ids` that the ledger already holds."""
        recent = self._recent
        held = {i for i in ids if i in recent} if recent else set()
        if not len(self._base):
            return held
        rest = [i for i in ids if i not in held] if held else ids
        hashes = _hashes(rest)
        order = np.argsort(hashes)
        pos = np.minimum(np.searchsorted(self._base, hashes[order]), len(self._base) - 1)
        found = np.zeros(len(rest), dtype=bool)
        found[order] = self._base[pos] == hashes[order]
        if found.any():
            candidates = [rest[i] for i in np.flatnonzero(found).tolist()]
            rows = self._con.execute(
                "SELECT DISTINCT event_id FROM entries WHERE event_id IN (SELECT unnest(?))",
                [candidates],
            ).fetchall()
            held.update(r[0] for r in rows)
        return held

    def add(self, ids: Sequence[str]) -> None:
        """Record ids that were just appended (after their transaction committed)."""
        self._recent.update(ids)
        if len(self._recent) >= max(_MIN_MERGE, len(self._base) // 16):
            fresh = np.sort(_hashes(list(self._recent)))
            self._base = np.insert(self._base, np.searchsorted(self._base, fresh), fresh)
            self._recent = set()
