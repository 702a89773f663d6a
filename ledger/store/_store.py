"""The ledger file: an append-only, hash-chained `entries` table in DuckDB.

Every append is one transaction holding the new entries, the quarantined input, the consumer
offsets and every derived structure (projections, Merkle state), so a crash at any point leaves
either all of a batch or none of it. One process writes a ledger at a time (DuckDB's file lock).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Protocol

import duckdb
import numpy as np
import pyarrow as pa

from ledger._text import first_line
from ledger.config import load
from ledger.contract.batch import EventBatch, Incoming, Rejected
from ledger.errors import StoreError
from ledger.store.meta import meta_chain_of
from ledger.store.quarantine import split_repeats
from ledger.store.schemas import TABLE_SQL as SCHEMA_IDS_SQL
from ledger.store.schemas import StoredSchema, insert_schemas, stored_schemas
from ledger.store.seen import SeenIds
from ledger.tlog import chain

FORMAT_VERSION = "1"
#: ledger_meta key prefix of the consumer's per-partition marks (`Store.marks`)
_MARK = "kafka_mark:"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS ledger_meta (
    key   VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    seq         BIGINT NOT NULL,
    event_id    VARCHAR NOT NULL,
    type        VARCHAR NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    payload     BLOB NOT NULL USING COMPRESSION uncompressed,
    prev_hash   BLOB NOT NULL USING COMPRESSION uncompressed,
    entry_hash  BLOB NOT NULL USING COMPRESSION uncompressed,
    source      VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    received_at TIMESTAMPTZ NOT NULL,
    source      VARCHAR NOT NULL,
    raw         BLOB,
    reason      VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS consumer_offsets (
    topic       VARCHAR NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""

ENTRY_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("event_id", pa.string()),
        ("type", pa.string()),
        ("occurred_at", pa.timestamp("us", tz="UTC")),
        ("recorded_at", pa.timestamp("us", tz="UTC")),
        ("payload", pa.binary()),
        ("prev_hash", pa.binary()),
        ("entry_hash", pa.binary()),
        ("source", pa.string()),
    ]
)


class Appended(NamedTuple):
    """What one append adds, as the extensions see it: the batch after dedupe, in seq order
    (event i has seq `first_seq + i`), and each event's entry hash."""

    first_seq: int
    batch: EventBatch
    hashes: list[bytes]
    prev_hash: bytes


@dataclass(slots=True)
class AppendResult:
    appended: int = 0
    duplicates: int = 0
    quarantined: int = 0
    size: int = 0
    head_hash: bytes = chain.GENESIS

    def add(self, other: AppendResult) -> None:
        self.appended += other.appended
        self.duplicates += other.duplicates
        self.quarantined += other.quarantined
        self.size = other.size
        self.head_hash = other.head_hash


@dataclass(slots=True)
class _Head:
    size: int = 0
    hash: bytes = chain.GENESIS
    seen: SeenIds | None = field(default=None)
    #: the meta chain (`chain.meta_extend`); None for a ledger written before it existed
    meta: bytes | None = chain.GENESIS
    recorded_us: int = 0
    #: the Confluent schema ids whose writer schema the file holds (`ledger.store.schemas`)
    schema_ids: set[int] = field(default_factory=set)


class StoreExtension(Protocol):
    """Derived state kept in the ledger file and updated inside each append transaction."""

    name: str

    def create_schema(self, con: duckdb.DuckDBPyConnection) -> None: ...

    def on_append(self, con: duckdb.DuckDBPyConnection, appended: Appended) -> None: ...


_DEFAULT_EXTENSIONS: list[Callable[[], StoreExtension]] = []


def register_default_extension(factory: Callable[[], StoreExtension]) -> None:
    """Add a structure every ledger opened without `extensions=` keeps (`ledger.store` registers
    the projections and the Merkle state); the store itself names none of them."""
    _DEFAULT_EXTENSIONS.append(factory)


def default_extensions() -> tuple[StoreExtension, ...]:
    """Fresh instances of the registered default extensions, in the order they are updated."""
    return tuple(factory() for factory in _DEFAULT_EXTENSIONS)


def default_origin(db_path: str) -> str:
    """`agent-ledger/<file stem>`: the origin a ledger gets when it is created without one."""
    return f"agent-ledger/{Path(db_path).stem}"


def default_db_path() -> str:
    return os.environ.get("LEDGER_DB") or "ledger.duckdb"


class Store:
    """A ledger file. Use `Store.open(path)`; `read_only=True` for investigators and auditors."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        path: str,
        read_only: bool,
        extensions: Sequence[StoreExtension] | None = None,
    ) -> None:
        self.con = con
        self.path = path
        self.read_only = read_only
        #: derived state updated inside every append transaction, in this order
        self.extensions: tuple[StoreExtension, ...] = (
            default_extensions() if extensions is None else tuple(extensions)
        )
        self._head: _Head | None = None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        read_only: bool = False,
        extensions: Sequence[StoreExtension] | None = None,
        *,
        create: bool = True,
        origin: str | None = None,
    ) -> Store:
        """Open the ledger at `path`; with `create` (writable only), create it if no file is there.

        A ledger created here takes `origin` (default: LEDGER_ORIGIN, else
        `agent-ledger/<file stem>`); an existing one keeps its own, and an `origin` that
        differs from it is refused (`StoreError`): it names another log.

        A ledger is only ever created where no file exists: a writable open of an existing
        file first checks, read-only, that it is a ledger, so a DuckDB file of something else
        is refused untouched. Writers that must not create (checkpoint, rebuild) pass
        `create=False`. `extensions` are the derived structures kept with every append; None
        means the registered defaults (projections and Merkle state). Raises `StoreError` when
        there is no ledger at `path` (and `create` is off or `read_only` on), the file cannot
        be opened, is locked by another process, or is not a ledger.
        """
        path = str(path)
        exists = path == ":memory:" or Path(path).exists()
        if not exists and (read_only or not create):
            raise StoreError(f"no ledger at {path} (run `ledger ingest` or `ledger consume` first)")
        try:
            con = duckdb.connect(path, read_only=read_only)
        except duckdb.IOException as exc:
            raise StoreError(f"cannot open ledger {path}: {first_line(exc)}") from exc
        except duckdb.Error as exc:
            raise StoreError(f"cannot open ledger {path}: {first_line(exc)}") from exc
        con.execute("SET TimeZone = 'UTC'")
        # DuckDB's own progress bar writes to stdout (it would corrupt `--json`); inside Jupyter
        # without ipywidgets it refuses the setting, and there it is not drawn anyway.
        with contextlib.suppress(duckdb.Error):
            con.execute("SET enable_progress_bar = false")
        store = cls(con, path, read_only, extensions)
        try:
            if read_only or (exists and path != ":memory:"):
                store._check_format()  # before any write: a foreign file stays untouched
            if not read_only:
                con.execute("SET checkpoint_threshold = '256MB'")
                store._create(origin)
            recorded = store.origin() if origin is not None else None
            if recorded is not None and recorded != origin:
                raise StoreError(
                    f"this ledger's origin is {recorded!r} (fixed when it was created), not "
                    f"{origin!r}: drop --origin / LEDGER_ORIGIN, or open another ledger"
                )
        except BaseException:
            con.close()
            raise
        return store

    def _create(self, origin: str | None = None) -> None:
        origin = origin or load().origin or default_origin(self.path)
        if any(ord(c) < 0x20 for c in origin):
            raise StoreError(f"LEDGER_ORIGIN {origin!r} must be one line of text")
        try:
            self.con.execute("BEGIN TRANSACTION")
            self.con.execute(SCHEMA_SQL)
            self.con.execute(SCHEMA_IDS_SQL)  # writer schemas by Confluent schema id
            self.con.execute(
                "INSERT INTO ledger_meta VALUES ('format_version', ?), ('created_at', ?) "
                "ON CONFLICT DO NOTHING",
                [FORMAT_VERSION, datetime.now(UTC).isoformat()],
            )
            for ext in self.extensions:
                ext.create_schema(self.con)
            # The log's origin (C2SP tlog-checkpoint: its identity), fixed here once: at
            # creation LEDGER_ORIGIN or agent-ledger/<file stem>; a ledger made before origins
            # were recorded keeps its first checkpoint's (recorded by the Merkle extension
            # above), else gets this default. Never rewritten, so a renamed copy keeps it.
            self.con.execute(
                "INSERT INTO ledger_meta VALUES ('origin', ?) ON CONFLICT DO NOTHING", [origin]
            )
            self._record_meta_chain()
            self.con.execute("COMMIT")
        except duckdb.Error as exc:
            self.con.execute("ROLLBACK")
            raise StoreError(f"cannot initialise ledger {self.path}: {first_line(exc)}") from exc
        self._check_format()

    def _record_meta_chain(self) -> None:
        """A ledger made before the meta chain existed gets one, from its entries as they are
        now (nothing earlier vouches for them); one whose recorded_at goes back in time
        cannot, and `verify` keeps saying so."""
        if self.recorded_meta() is not None or not self.size():
            return
        found = meta_chain_of(self.con)
        if found.meta is not None:
            self.con.execute(
                "INSERT INTO ledger_meta VALUES ('meta_hash', ?) ON CONFLICT DO NOTHING",
                [found.meta.hex()],
            )

    def origin(self) -> str | None:
        """The origin recorded in `ledger_meta` (see `_create`), or None for a ledger made
        before origins were recorded and not opened writable since; `ledger.store.checkpoints.
        ledger_origin` gives the origin of any ledger."""
        row = fetch_one(self.con, "SELECT value FROM ledger_meta WHERE key = 'origin'")
        return None if row is None else str(row[0])

    def _check_format(self) -> None:
        try:
            row = fetch_one(self.con, "SELECT value FROM ledger_meta WHERE key = 'format_version'")
        except duckdb.CatalogException as exc:
            raise StoreError(
                f"{self.path} is a DuckDB file but not an agent-ledger; nothing was changed"
            ) from exc
        if row is None or row[0] != FORMAT_VERSION:
            raise StoreError(f"{self.path}: unsupported ledger format {row and row[0]!r}")

    def close(self) -> None:
        """Close the file; a writable one is checkpointed first, so that everything appended
        is in the main file, not only in its `.wal` (a copy of the file alone is then whole,
        also after a run that followed a crash and appended nothing). A checkpoint that fails
        leaves the WAL, which DuckDB replays on the next open: nothing is lost."""
        try:
            if not self.read_only:
                with contextlib.suppress(duckdb.Error):
                    self.con.execute("CHECKPOINT")
        finally:
            self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------

    def size(self) -> int:
        row = fetch_one(self.con, "SELECT count(*) FROM entries")
        return int(row[0]) if row else 0

    def head(self) -> tuple[int, bytes]:
        """(number of entries, hash of the last entry) as stored."""
        row = fetch_one(self.con, "SELECT seq, entry_hash FROM entries ORDER BY seq DESC LIMIT 1")
        if row is None:
            return 0, chain.GENESIS
        return int(row[0]) + 1, bytes(row[1])

    def recorded_head(self) -> tuple[int, bytes] | None:
        """The head the writer recorded in `ledger_meta` with its last append (None if never)."""
        rows = dict(
            self.con.execute(
                "SELECT key, value FROM ledger_meta WHERE key IN ('head_size', 'head_hash')"
            ).fetchall()
        )
        if "head_size" not in rows:
            return None
        return int(rows["head_size"]), bytes.fromhex(rows["head_hash"])

    def offsets(self, topic: str) -> dict[int, int]:
        """Next offset to read per partition of `topic`, as committed with the entries."""
        rows = self.con.execute(
            "SELECT partition, next_offset FROM consumer_offsets WHERE topic = ?", [topic]
        ).fetchall()
        return {int(p): int(o) for p, o in rows}

    def marks(self, topic: str) -> dict[int, tuple[int, bytes]]:
        """Per partition of `topic`, (offset, SHA-256 of the value) of the last record read,
        as committed with the offsets (partitions read before marks existed are absent)."""
        rows = self.con.execute(
            "SELECT key, value FROM ledger_meta WHERE starts_with(key, ?)", [f"{_MARK}{topic}/"]
        ).fetchall()
        out: dict[int, tuple[int, bytes]] = {}
        for key, value in rows:
            offset, digest = str(value).split(":")
            out[int(str(key).rsplit("/", 1)[1])] = (int(offset), bytes.fromhex(digest))
        return out

    def counts(self) -> dict[str, int]:
        rows = self.con.execute(
            "SELECT 'entries', count(*) FROM entries UNION ALL "
            "SELECT 'quarantined', count(*) FROM quarantine"
        ).fetchall()
        return {k: int(v) for k, v in rows}

    # -- appending -------------------------------------------------------------------------

    def _load_head(self) -> _Head:
        if self._head is None:
            size, head_hash = self.head()
            meta = self.recorded_meta()
            if meta is None and not size:
                meta = chain.GENESIS
            last = fetch_one(self.con, "SELECT epoch_us(max(recorded_at)) FROM entries")
            recorded = int(last[0]) if last and last[0] is not None else 0
            held = set(stored_schemas(self.con))
            self._head = _Head(size, head_hash, SeenIds(self.con), meta, recorded, held)
        return self._head

    def recorded_meta(self) -> bytes | None:
        """The meta chain recorded with the last append (`chain.meta_extend`), if any."""
        row = fetch_one(self.con, "SELECT value FROM ledger_meta WHERE key = 'meta_hash'")
        return None if row is None else bytes.fromhex(row[0])

    def append(
        self,
        events: Sequence[Incoming] | EventBatch,
        rejected: Sequence[Rejected] = (),
        offsets: Mapping[tuple[str, int], int] | None = None,
        marks: Mapping[tuple[str, int], tuple[int, bytes]] | None = None,
        schemas: Mapping[int, StoredSchema] | None = None,
    ) -> AppendResult:
        """Append a batch in one transaction: entries, quarantine, offsets, derived state.

        `marks` records, per (topic, partition), the offset and SHA-256 of the last record
        read, so that a consumer resuming later can tell that the topic is still the one it
        read (`marks()`). `schemas` are the writer schemas, by Confluent schema id, that the
        batch was decoded with (and any resolved before it): those the file does not hold yet
        are stored with it (`ledger.store.schemas`), so no entry is ever committed without the
        schema that reads it; an id the file holds keeps its stored schema.

        An event whose `event_id` is already in the ledger (or earlier in the batch) is not
        appended again. With the same payload bytes as that first copy it is an exact repeat,
        counted in `duplicates`. With different bytes it is evidence: it goes to `quarantine`
        (its payload as raw, its source, reason `conflicting duplicate of seq N: stored
        payload sha256 H, received sha256 H'`, N the first copy's seq) and counts in
        `quarantined`, as do the `rejected` inputs. Only a batch in which some id repeats pays
        for the comparison (the stored payloads of the held ids, read by seq). Raises
        `StoreError` on a read-only ledger or a DuckDB failure (then nothing is written).
        """
        if self.read_only:
            raise StoreError(f"{self.path} is open read-only")
        batch = events if isinstance(events, EventBatch) else EventBatch.from_incoming(events)
        head = self._load_head()
        assert head.seen is not None
        received = len(batch)
        seq0 = head.size
        held = head.seen.where(batch.event_id)
        conflicts: list[Rejected] = []
        if held or len(set(batch.event_id)) != received:
            keep, conflicts = split_repeats(self.con, batch, held, seq0)
            batch = batch.select(keep)
        result = AppendResult(
            appended=len(batch),
            duplicates=received - len(batch) - len(conflicts),
            quarantined=len(rejected) + len(conflicts),
        )
        hashes = list(chain.extend(seq0, head.hash, batch.payload))
        new_size = seq0 + len(batch)
        new_hash = hashes[-1] if hashes else head.hash
        # strictly later than the last append: `verify` tells appends apart by recorded_at
        now_us = max(time.time_ns() // 1000, head.recorded_us + 1)
        now = _EPOCH + timedelta(microseconds=now_us)
        new_schemas = [row for i, row in (schemas or {}).items() if i not in head.schema_ids]
        new_meta = head.meta
        if hashes and head.meta is not None:
            new_meta = chain.meta_extend(head.meta, seq0, now_us, batch.source)
        con = self.con
        try:
            con.execute("BEGIN TRANSACTION")
            if new_schemas:
                insert_schemas(con, new_schemas, now_us)
            if hashes:
                self._insert_entries(seq0, batch, head.hash, hashes, now_us)
                con.execute(
                    "INSERT OR REPLACE INTO ledger_meta VALUES ('head_size', ?), ('head_hash', ?)",
                    [str(new_size), new_hash.hex()],
                )
                if new_meta is not None:
                    con.execute(
                        "INSERT OR REPLACE INTO ledger_meta VALUES ('meta_hash', ?)",
                        [new_meta.hex()],
                    )
                appended = Appended(seq0, batch, hashes, head.hash)
                for ext in self.extensions:
                    ext.on_append(con, appended)
            if rejected or conflicts:
                self._insert_quarantine([*rejected, *conflicts], now)
            if offsets:
                self._upsert_offsets(offsets, now)
            if marks:
                con.executemany(
                    "INSERT OR REPLACE INTO ledger_meta VALUES (?, ?)",
                    [[_MARK + f"{t}/{p}", f"{o}:{h.hex()}"] for (t, p), (o, h) in marks.items()],
                )
            con.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            self._head = None
            if isinstance(exc, duckdb.Error):
                raise StoreError(f"append to {self.path} failed: {first_line(exc)}") from exc
            raise
        head.size = new_size
        head.hash = new_hash
        if hashes:
            head.meta, head.recorded_us = new_meta, now_us
        head.seen.add(batch.event_id, seq0)
        head.schema_ids.update(row.schema_id for row in new_schemas)
        result.size = new_size
        result.head_hash = new_hash
        return result

    def _insert_entries(
        self, seq0: int, batch: EventBatch, prev: bytes, hashes: list[bytes], now_us: int
    ) -> None:
        n = len(batch)
        ts = pa.timestamp("us", tz="UTC")
        table = pa.Table.from_arrays(
            [
                pa.array(np.arange(seq0, seq0 + n, dtype=np.int64)),
                pa.array(batch.event_id, pa.string()),
                pa.array(batch.type, pa.string()),
                pa.array(batch.occurred_at, ts),
                pa.array(np.full(n, now_us, dtype=np.int64)).cast(ts),
                pa.array(batch.payload, pa.binary()),
                pa.array([prev, *hashes[:-1]], pa.binary()),
                pa.array(hashes, pa.binary()),
                pa.array(batch.source, pa.string()),
            ],
            schema=ENTRY_SCHEMA,
        )
        self.con.register("_new_entries", table)
        try:
            self.con.execute("INSERT INTO entries SELECT * FROM _new_entries")
        finally:
            self.con.unregister("_new_entries")

    def _upsert_offsets(self, offsets: Mapping[tuple[str, int], int], now: datetime) -> None:
        table = pa.table(
            {
                "topic": pa.array([t for t, _ in offsets], pa.string()),
                "partition": pa.array([p for _, p in offsets], pa.int32()),
                "next_offset": pa.array(list(offsets.values()), pa.int64()),
                "updated_at": pa.array([now] * len(offsets), pa.timestamp("us", tz="UTC")),
            }
        )
        self.con.register("_new_offsets", table)
        try:
            self.con.execute("INSERT OR REPLACE INTO consumer_offsets SELECT * FROM _new_offsets")
        finally:
            self.con.unregister("_new_offsets")

    def _insert_quarantine(self, rejected: Iterable[Rejected], now: datetime) -> None:
        rows = list(rejected)
        table = pa.table(
            {
                "received_at": pa.array([now] * len(rows), pa.timestamp("us", tz="UTC")),
                "source": pa.array([r.source for r in rows], pa.string()),
                "raw": pa.array([r.raw for r in rows], pa.binary()),
                "reason": pa.array([r.reason for r in rows], pa.string()),
            }
        )
        self.con.register("_new_quarantine", table)
        try:
            self.con.execute("INSERT INTO quarantine SELECT * FROM _new_quarantine")
        finally:
            self.con.unregister("_new_quarantine")


def fetch_one(
    con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None
) -> tuple[Any, ...] | None:
    """First row or None. DuckDB 2 keeps a half-read result open (blocking the connection),
    so never call `.fetchone()` on `execute()`: this drains the result."""
    rows = con.execute(sql, params or []).fetchall()
    return rows[0] if rows else None
