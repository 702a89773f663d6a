"""The writer's dedupe index: exact answers from hashes, never an event dropped by a collision."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import ledger.store.seen as seen_module
from ledger.contract.codec import Codec
from ledger.store import Store
from ledger.store.seen import SeenIds
from tests.store.test_store import sample


def test_held_is_exact_across_appends_and_reopening(db_path: Path, codec: Codec) -> None:
    batch = sample(codec, 30)
    with Store.open(db_path) as store:
        store.append(batch[:10])
        seen = SeenIds(store.con)
        assert len(seen) == 10
        ids = [ev.event_id for ev in batch]
        assert seen.held(ids) == set(ids[:10])
        assert seen.held(["nope", ids[3]]) == {ids[3]}
        assert seen.held([]) == set()
        store.append(batch[10:20])
    with Store.open(db_path) as store:
        result = store.append(batch)  # a fresh writer rebuilds its index from `entries`
        assert (result.appended, result.duplicates, result.size) == (10, 20, 30)


def _collide(ids: Sequence[str]) -> npt.NDArray[np.int64]:
    return np.full(len(ids), 42, dtype=np.int64)


def test_a_hash_collision_never_drops_an_event(
    db_path: Path, codec: Codec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seen_module, "_hashes", _collide)  # every id hashes the same
    batch = sample(codec, 12)
    with Store.open(db_path) as store:
        first = store.append(batch[:6])
    with Store.open(db_path) as store:  # reopened: all six are old hashes now
        second = store.append(batch[3:])
        assert (first.appended, second.appended, second.duplicates) == (6, 6, 3)
        ids = [r[0] for r in store.con.execute("SELECT event_id FROM entries").fetchall()]
        assert sorted(ids) == sorted(ev.event_id for ev in batch)


def test_recent_ids_merge_into_the_sorted_base(
    db_path: Path, codec: Codec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seen_module, "_MIN_MERGE", 4)
    batch = sample(codec, 40)
    with Store.open(db_path) as store:
        seen = SeenIds(store.con)
        for lo in range(0, 40, 5):
            part = batch[lo : lo + 5]
            store.append(part)
            seen.add([ev.event_id for ev in part], lo)
        assert len(seen) == 40 and len(seen._recent) < 4
        assert np.all(np.diff(seen._hash) >= 0)
        by_seq = dict(store.con.execute("SELECT seq, event_id FROM entries").fetchall())
        hashed = {hash(by_seq[int(q)]): int(q) for q in seen._seq}
        assert all(hashed[int(h)] == int(q) for h, q in zip(seen._hash, seen._seq, strict=True))
        ids = [ev.event_id for ev in batch]
        assert seen.held([*ids[::7], "other"]) == set(ids[::7])


def test_where_gives_the_seq_of_each_held_id(db_path: Path, codec: Codec) -> None:
    batch = sample(codec, 12)
    ids = [ev.event_id for ev in batch]
    with Store.open(db_path) as store:
        store.append(batch[:8])
        seen = SeenIds(store.con)  # all eight as old hashes
        seen.add(ids[8:10], 8)  # two recent ones (as if appended at seqs 8, 9)
        assert seen.where([ids[9], "nope", ids[2], ids[7], ids[8]]) == {
            ids[9]: 9,
            ids[2]: 2,
            ids[7]: 7,
            ids[8]: 8,
        }
        assert seen.where(ids[10:]) == {}
        assert seen.held(ids) == set(ids[:10])


def test_a_hash_collision_never_hides_a_conflict(
    db_path: Path, codec: Codec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seen_module, "_hashes", _collide)  # every id hashes the same
    batch = sample(codec, 6)
    changed = batch[4]._replace(payload=batch[4].payload + b"\0", source="kafka:t/0/99")
    with Store.open(db_path) as store:
        store.append(batch)
    with Store.open(db_path) as store:  # reopened: all six are old hashes, all colliding
        assert SeenIds(store.con).where([batch[4].event_id, "other"]) == {batch[4].event_id: 4}
        result = store.append([changed, batch[1]])
        assert (result.appended, result.duplicates, result.quarantined) == (0, 1, 1)
        ((source, reason),) = store.con.execute("SELECT source, reason FROM quarantine").fetchall()
        assert source == "kafka:t/0/99"
        assert reason.startswith("conflicting duplicate of seq 4: ")
