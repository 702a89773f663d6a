"""The query projections recomputed from the entries' payloads and compared, row for row.

Every answer (`trace`, `violations`, `blast-radius`, `authority`) reads the projection tables,
not the payloads, so a row deleted or widened in the file changes answers while the hash chain
still verifies. Here each entry's payload is decoded again (`fastdecode.BatchDecoder`, the
consumer's own decoder, so the rows are exactly those an append inserts) and the expected rows
are compared with the stored ones in DuckDB (a full join on seq, plus counts): a row missing,
altered or repeated, a row with no entry of its type behind it, a missing table, and a
coverage mark (`projection_meta`) that does not match the ledger are all reported with the
table, the row's key and the seq it should come from.

It runs after `store.catalog` has found the tables defined exactly as a ledger creates them
(so a comparison cannot be bent by a collation, a type or a macro saved in the file).

Cost: decoding (the columnar reader, `vecdecode.ColumnarReader`: numpy steps over a whole
batch) is ~1.4 µs per entry, about what the chain checks cost (the verify section of
bench/RESULTS.md; the per-event lean reader it replaced took ~5-8); the comparison itself is a
join on seq per table. On a ledger opened read-only with 100,000 entries or more, a
worker process (`python -P -m ledger.integrity.derived`, its own read-only connection, one
DuckDB thread) checks the head of the seq range while the calling process walks the hash
chain, then checks the last `PARENT_SHARE` of the range itself, so `verify` uses both cores to
the end; smaller ledgers, writable stores and custom codecs are checked in process.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from ledger.contract.batch import decode_values
from ledger.contract.codec import Codec
from ledger.contract.columns import SCHEMAS, TABLES
from ledger.contract.fastdecode import BatchDecoder
from ledger.contract.vecdecode import ColumnarReader, view_schema
from ledger.store import Store
from ledger.store.projections import META_TABLE
from ledger.store.schemas import ledger_codec

__all__ = ["PARALLEL_FROM", "DerivedCheck", "Difference", "check_range"]

#: ledgers at least this large (and opened read-only) are checked with worker processes
PARALLEL_FROM = 100_000
#: worker processes beside this one: on 2 cores, one (each pays ~0.3 s of imports, and this
#: process's chain walk already keeps a reader thread busy)
WORKERS = 1
#: the tail of the seq range this process checks itself once its chain walk is done, so that
#: both cores stay busy to the end (with one worker, of 0.35, 0.4 and 0.45, 0.4 was fastest
#: at 1M)
PARENT_SHARE = 0.25
#: differences kept per range (the total is always counted)
KEEP = 50
_BATCH = 32_768
_CHUNK = 1 << 18
#: glibc keeps freed memory in a worker that allocates and frees millions of small objects
_WORKER_ENV = {
    "MALLOC_TRIM_THRESHOLD_": "100000000000",
    "MALLOC_TOP_PAD_": "268435456",
    "MALLOC_MMAP_THRESHOLD_": "33554432",
}

#: table -> the column that names a row (its event's id: action_id, delegation_id, ...)
KEYS: dict[str, str] = {table: cols[0][0] for table, cols in TABLES.values()}


@dataclass(frozen=True, slots=True)
class Difference:
    """One projection row that is not what its entry says.

    `problem` is "missing" (the entry's row is not in the table), "altered" (a row with the
    entry's seq differs in `columns`), "not from the ledger" (no entry of that type at this
    seq), "row repeated" (a copy of a row), or a sentence about the coverage mark
    (`projection_meta`) or a missing table. `seq` is the entry the row
    should come from (None for coverage).
    """

    table: str
    key: str | None
    seq: int | None
    problem: str
    columns: tuple[str, ...] = ()

    def describe(self) -> str:
        key = f" {KEYS.get(self.table, 'key')} {self.key!r}" if self.key is not None else ""
        where = f"table {self.table}{key}"
        if self.problem == "missing":
            return f"{where}: row missing; it should come from seq {self.seq}"
        if self.problem == "altered":
            cols = ", ".join(self.columns) or "the row"
            verb = "differs" if len(self.columns) <= 1 else "differ"
            return f"{where}: {cols} {verb} from what the payload of seq {self.seq} says"
        if self.problem == "not from the ledger":
            at = "with no seq" if self.seq is None else f"at seq {self.seq}"
            return f"{where}: a row {at} has no entry of that type behind it"
        if self.problem == "row repeated":
            return f"{where}: the row of seq {self.seq} is there more than once"
        return f"{where}: {self.problem}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["columns"] = list(self.columns)
        out["reason"] = self.describe()
        return out


@dataclass(slots=True)
class RangeResult:
    """What one seq range found: up to `KEEP` differences and how many there were."""

    differences: list[Difference]
    total: int

    def to_json(self) -> str:
        return json.dumps(
            {"differences": [asdict(d) for d in self.differences], "total": self.total}
        )

    @classmethod
    def from_json(cls, text: bytes | str) -> RangeResult:
        """Raises ValueError, KeyError or TypeError on anything but `to_json`'s output."""
        data = json.loads(text)
        diffs = [
            Difference(d["table"], d["key"], d["seq"], d["problem"], tuple(d["columns"]))
            for d in data["differences"]
        ]
        return cls(diffs, int(data["total"]))


def check_range(
    path: str | None,
    lo: int,
    hi: int,
    con: duckdb.DuckDBPyConnection | None = None,
    codec: Codec | None = None,
) -> RangeResult:
    """Compare every projection row with seq in [lo, hi) against the entries' payloads.

    Runs on `con`, or (in a worker process) on a fresh read-only connection to `path` with
    one DuckDB thread. Raises `duckdb.Error` if the file cannot be read.
    """
    own = con is None
    if con is None:
        assert path is not None
        con = duckdb.connect(path, read_only=True)
        con.execute("SET threads = 1")
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")
    try:
        codec = ledger_codec(con, codec)  # with the writer schemas the file keeps by schema id
        diffs: list[Difference] = []
        total = 0
        for start in range(lo, hi, _CHUNK):  # bounded memory: one chunk of rows at a time
            stop = min(start + _CHUNK, hi)
            expected, undecodable = _expected(con, start, stop, codec)
            diffs += undecodable
            total += len(undecodable)
            for etype, (table, _, _) in SCHEMAS.items():
                found, count = _compare(con, table, expected.get(etype), start, stop)
                diffs += found
                total += count
            del diffs[KEEP:]
        diffs.sort(key=lambda d: (d.seq if d.seq is not None else -1, d.table))
        return RangeResult(diffs, total)
    finally:
        if own:
            con.close()


def _expected(
    con: duckdb.DuckDBPyConnection, lo: int, hi: int, codec: Codec
) -> tuple[dict[str, pa.Table], list[Difference]]:
    """The rows the entries of [lo, hi) project to, per event type, with their seqs.

    The columnar reader (`vecdecode.ColumnarReader`, a whole batch per numpy step) takes
    every payload of the current schema; the lean reader (`BatchDecoder(checked=False)`) and
    then the consumer's full decode take the rest (an older schema, anything unusual), which
    gives the same rows or the reason a payload does not decode."""
    try:
        columnar: ColumnarReader | None = ColumnarReader(codec)
    except NotImplementedError:
        columnar = None
    lean: BatchDecoder | None = None
    full: BatchDecoder | None = None
    parts: dict[str, list[pa.Table]] = {}
    bad: list[Difference] = []
    reader = con.sql(
        "SELECT seq, payload FROM entries WHERE seq >= ? AND seq < ? ORDER BY seq",
        params=[lo, hi],
    ).to_arrow_reader(_BATCH)
    for batch in reader:
        seqs: pa.Array = batch.column(0)
        values_of = batch.column(1)
        if columnar is not None:
            tables, rest = columnar.read(values_of)
            _add(parts, tables, seqs)
            if not rest.size:
                continue
            taken = pa.array(rest)
            seqs, values_of = seqs.take(taken), values_of.take(taken)
        values = values_of.to_pylist()
        if lean is None or full is None:  # compiled only for a batch that needs them
            lean, full = BatchDecoder(codec, checked=False), BatchDecoder(codec)
        fast = lean.read_columns(values)
        accepted: list[int] = []
        rows: dict[str, pa.Table] = {}
        slow = list(range(len(values)))
        if fast is not None:
            accepted, _, _, _, rows, slow = fast
        _add(parts, rows, seqs.take(pa.array(accepted, pa.int64())))
        if slow:
            decoded = decode_values([values[i] for i in slow], full)
            for pos, reason in decoded.rejected:
                why = f"payload does not decode: {reason}"
                bad.append(Difference("entries", None, seqs[slow[pos]].as_py(), why))
            slow_seqs = seqs.take(pa.array(slow, pa.int64()))
            _add(parts, decoded.rows, slow_seqs.take(pa.array(decoded.accepted, pa.int64())))
    return {etype: pa.concat_tables(tables) for etype, tables in parts.items()}, bad


def _add(parts: dict[str, list[pa.Table]], rows: dict[str, pa.Table], seqs: pa.Array) -> None:
    """Keep decoded `rows`, whose `pos` column indexes `seqs`, under their seqs (strings as
    string views, the columnar reader's form)."""
    for etype, table in rows.items():
        with_seq = table.set_column(0, "seq", seqs.take(table.column(0)))
        if with_seq.schema != _VIEWS[etype]:
            with_seq = with_seq.cast(_VIEWS[etype])
        parts.setdefault(etype, []).append(with_seq)


_VIEWS = {etype: view_schema(etype, "seq") for etype in SCHEMAS}


def _compare(
    con: duckdb.DuckDBPyConnection, table: str, expected: pa.Table | None, lo: int, hi: int
) -> tuple[list[Difference], int]:
    """Rows of `table` in [lo, hi) that differ from `expected`: (first KEEP, count).

    A full join on seq (expected seqs are unique) plus a count: no mismatched pair and as
    many stored rows as expected ones means the two are the same multiset, duplicates
    included, and costs a join on an integer instead of hashing whole rows.
    """
    columns = [name for name, _ in SCHEMAS_BY_TABLE[table]]
    view = f"_expected_{table}"
    con.register(view, expected if expected is not None else _empty(table))
    try:
        stored = f"(SELECT * FROM {table} WHERE seq >= {lo:d} AND seq < {hi:d})"
        differ = " OR ".join(f"s.{c} IS DISTINCT FROM e.{c}" for c in columns[1:])
        rows = con.execute(
            f"SELECT count(*) OVER (), e.seq, s.seq, "
            f"[{', '.join(f's.{c} IS DISTINCT FROM e.{c}' for c in columns[1:])}], "
            f"coalesce(e.{KEYS[table]}, s.{KEYS[table]}) "
            f"FROM {stored} s FULL JOIN {view} e ON s.seq = e.seq "
            f"WHERE s.seq IS NULL OR e.seq IS NULL OR {differ} "
            f"ORDER BY coalesce(e.seq, s.seq) LIMIT {KEEP}"
        ).fetchall()
        counts = con.execute(
            f"SELECT (SELECT count(*) FROM {stored}), (SELECT count(*) FROM {view})"
        ).fetchall()[0]
    finally:
        con.unregister(view)
    found: list[Difference] = []
    for _, want_seq, have_seq, flags, key in rows:
        if want_seq is None:
            found.append(Difference(table, key, have_seq, "not from the ledger"))
        elif have_seq is None:
            found.append(Difference(table, key, want_seq, "missing"))
        else:
            changed = tuple(c for c, f in zip(columns[1:], flags, strict=True) if f)
            found.append(Difference(table, key, want_seq, "altered", changed))
    total = rows[0][0] if rows else 0
    stored_n, want_n = counts
    if not rows and stored_n != want_n:
        dup = con.execute(
            f"SELECT seq, any_value({KEYS[table]}) FROM {stored} GROUP BY seq "
            f"HAVING count(*) > 1 ORDER BY seq LIMIT {KEEP}"
        ).fetchall()
        found += [Difference(table, key, seq, "row repeated") for seq, key in dup]
        total = stored_n - want_n
    return found, int(total)


SCHEMAS_BY_TABLE: dict[str, tuple[tuple[str, str], ...]] = {
    table: columns for table, columns, _ in SCHEMAS.values()
}


def _empty(table: str) -> pa.Table:
    etype = next(e for e, (t, _, _) in SCHEMAS.items() if t == table)
    schema = SCHEMAS[etype][2]
    return schema.empty_table().rename_columns(["seq", *schema.names[1:]])


def _coverage(con: duckdb.DuckDBPyConnection, size: int) -> list[Difference]:
    """The coverage mark and rows outside [0, size): what no range looks at."""
    found: list[Difference] = []
    present = {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
        ).fetchall()
    }
    for table in (*SCHEMAS_BY_TABLE, META_TABLE):
        if table not in present:
            found.append(Difference(table, None, None, "table is missing; run `ledger rebuild`"))
    if META_TABLE in present:
        marks = [
            r[0]
            for r in con.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'size'").fetchall()
        ]
        if marks != [size]:
            found.append(
                Difference(
                    META_TABLE,
                    None,
                    None,
                    (
                        f"says the projections cover {marks[0]} entries"
                        if len(marks) == 1
                        else f"holds {len(marks)} coverage marks"
                    )
                    + f"; the ledger has {size}",
                )
            )
    for table in SCHEMAS_BY_TABLE:
        if table not in present:
            continue
        key = KEYS[table]
        for seq, name in con.execute(
            f"SELECT seq, {key} FROM {table} WHERE seq IS NULL OR seq < 0 OR seq >= ? "
            f"ORDER BY seq LIMIT {KEEP}",
            [size],
        ).fetchall():
            found.append(Difference(table, name, seq, "not from the ledger"))
    return found


class DerivedCheck:
    """The projection check of a ledger of `size` entries, started before the chain walk.

    `start` hands the seq ranges to worker processes when that pays (see the module
    docstring); `result` waits for them (or runs the check in process) and returns
    (first differences, total count). `cancel` stops the workers.
    """

    def __init__(self, store: Store, codec: Codec | None) -> None:
        self.store = store
        self.codec = codec
        self.size = store.size()
        self._workers: list[tuple[tuple[int, int], subprocess.Popen[bytes]]] = []
        self._own = (0, 0)
        #: worker ranges that had to be checked again in this process (a worker failed)
        self.redone = 0

    @classmethod
    def start(
        cls, store: Store, codec: Codec | None = None, workers: int = WORKERS
    ) -> DerivedCheck:
        """Start checking `store`; with `workers` > 1 and a large read-only file, in that
        many processes (`python -P -m ledger.integrity.derived PATH LO HI`)."""
        check = cls(store, codec)
        if (
            workers > 0
            and check.size >= PARALLEL_FROM
            and store.read_only
            and store.path != ":memory:"
            and codec is None
        ):
            handed = check.size - int(check.size * PARENT_SHARE)
            check._own = (handed, check.size)
            for lo, hi in _ranges(handed, workers):
                proc = subprocess.Popen(
                    [sys.executable, "-P", "-m", __name__, store.path, str(lo), str(hi)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=_worker_env(),
                )
                check._workers.append(((lo, hi), proc))
        return check

    def result(self) -> tuple[list[Difference], int]:
        """(up to `KEEP` differences in seq order, how many in all).

        A worker that fails has its range checked again in process, so a failure there
        surfaces as this process's own error (`duckdb.Error`), never as "no difference".
        """
        found = _coverage(self.store.con, self.size)
        total = len(found)
        if any(d.problem.startswith("table is missing") for d in found):
            self.cancel()
            return found[:KEEP], total
        if self._workers:
            workers, self._workers = self._workers, []
            lo, hi = self._own  # this process's share, while the workers finish theirs
            parts = [check_range(None, lo, hi, self.store.con, self.codec)]
            parts += [self._collect(lo, hi, proc) for (lo, hi), proc in workers]
        else:
            parts = [check_range(None, 0, self.size, self.store.con, self.codec)]
        for part in parts:
            found += part.differences
            total += part.total
        found.sort(key=lambda d: (d.seq is not None, d.seq or 0, d.table))
        return found[:KEEP], total

    def _collect(self, lo: int, hi: int, proc: subprocess.Popen[bytes]) -> RangeResult:
        out, _ = proc.communicate()
        if proc.returncode == 0:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                return RangeResult.from_json(out)
        self.redone += 1
        return check_range(None, lo, hi, self.store.con, self.codec)

    def cancel(self) -> None:
        """Stop the workers, if any are still running."""
        workers, self._workers = self._workers, []
        for _, proc in workers:
            proc.kill()
            proc.communicate()


def _worker_env() -> dict[str, str]:
    """The caller's environment, the malloc settings, and this package first on the path
    (the worker runs this package even where it is not installed, and never a `ledger` in
    the caller's working directory: `-P`)."""
    here = str(Path(__file__).resolve().parents[__name__.count(".")])
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        **_WORKER_ENV,
        "PYTHONPATH": here + (os.pathsep + path if path else ""),
    }


def _ranges(size: int, parts: int) -> Sequence[tuple[int, int]]:
    step = -(-size // parts)
    return [(lo, min(lo + step, size)) for lo in range(0, size, step)]


def main(argv: Sequence[str] | None = None) -> int:
    """Worker entry point: `python -P -m ledger.integrity.derived PATH LO HI` prints the
    `RangeResult` of [LO, HI) as JSON on stdout; exit 0, or 1 with the error on stderr."""
    path, lo, hi = argv if argv is not None else sys.argv[1:]
    gc.disable()  # the decode makes millions of objects and no cycles; one process, one range
    try:
        result = check_range(path, int(lo), int(hi))
    except (duckdb.Error, ValueError) as exc:
        print(f"derived-state check of {path} [{lo}, {hi}): {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(result.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
