"""Investigator queries at scale: trace / blast_radius latency, full violations() scan, and the
cost the projections add to every append.

Sizes come from BENCH_QUERIES_SIZES (default "1000000"; "1000000,10000000" adds 10M, which takes
roughly ten times as long to build). Events come from `bench.generate` (delegation forests up to
8 deep, actions at every level, injected misconduct), are encoded to single-object Avro once, and
are appended through `Store.append` in batches of 10k with every real extension (projections and
Merkle state), so the projections are built the way the consumer builds them. Latencies are
measured through the Python API on a warm read-only `Ledger` (20 warm-up calls first).
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from bench.generate import generate
from ledger.contract.codec import default_codec
from ledger.query.ledger import Ledger
from ledger.store import Appended, Incoming, Store, default_extensions
from ledger.store.projections import Projections

BATCH = 10_000
SAMPLES = 200
_TS_FIELDS = {
    "delegation.granted": ("not_before", "expires_at"),
    "credential.issued": ("expires_at",),
}
_EPOCH = datetime(1970, 1, 1).astimezone()


def _micros(text: str) -> int:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(t.timestamp()) * 1_000_000 + t.microsecond


def _incoming(n: int, seed: int) -> Iterator[list[Incoming]]:
    """Generated events as Incoming batches (the generator's events are valid by construction,
    so the record is built directly instead of through pydantic)."""
    codec = default_codec()
    batch: list[Incoming] = []
    for ev in generate(n, seed):
        data = dict(ev["data"])
        for name in _TS_FIELDS.get(ev["type"], ()):
            if data.get(name) is not None:
                data[name] = _micros(data[name])
        record = dict(ev)
        record["occurred_at"] = _micros(ev["occurred_at"])
        record["data"] = data
        batch.append(
            Incoming(
                ev["event_id"], ev["type"], record["occurred_at"], codec.encode(record), "b", record
            )
        )
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


class _TimedProjections(Projections):
    spent = 0.0

    def on_append(self, con: duckdb.DuckDBPyConnection, appended: Appended) -> None:
        t0 = time.perf_counter()
        super().on_append(con, appended)
        _TimedProjections.spent += time.perf_counter() - t0


def build(path: Path, n: int, seed: int = 7) -> dict[str, float]:
    """Build the ledger through Store.append; returns timings (seconds)."""
    others = tuple(e for e in default_extensions() if not isinstance(e, Projections))
    _TimedProjections.spent = 0.0
    prepare = append = 0.0
    with Store.open(path, extensions=[_TimedProjections(), *others]) as store:
        batches = _incoming(n, seed)
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            prepare += time.perf_counter() - t0
            if batch is None:
                break
            t0 = time.perf_counter()
            store.append(batch)
            append += time.perf_counter() - t0
        store.con.execute("CHECKPOINT")
    return {"prepare": prepare, "append": append, "projections": _TimedProjections.spent}


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _latency(
    call: Callable[[str], Any], subjects: Sequence[str], warmup: Sequence[str]
) -> tuple[float, float, float]:
    """(p50, p99, max) in ms over `subjects`, after warming the connection on other subjects."""
    for s in warmup:
        call(s)
    times = []
    for s in subjects:
        t0 = time.perf_counter()
        call(s)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), _pct(times, 99), max(times)


def measure(path: Path, seed: int = 11) -> dict[str, Any]:
    rng = random.Random(seed)
    out: dict[str, Any] = {}
    with Ledger.open(path) as ledger:
        con = ledger.con

        def sample(sql: str) -> tuple[list[str], list[str]]:
            ids = [r[0] for r in con.execute(sql).fetchall()]
            picked = rng.sample(ids, min(SAMPLES + 20, len(ids)))
            return picked[20:], picked[:20]

        counts = dict(
            con.execute(
                "SELECT 'actions', count(*) FROM actions UNION ALL "
                "SELECT 'delegations', count(*) FROM delegations UNION ALL "
                "SELECT 'principals', count(DISTINCT principal_id) FROM principals"
            ).fetchall()
        )
        depth = con.execute(
            "WITH RECURSIVE c(id, depth) AS (SELECT delegation_id, 1 FROM delegations "
            "WHERE parent_delegation_id IS NULL UNION ALL SELECT d.delegation_id, c.depth + 1 "
            "FROM delegations d JOIN c ON d.parent_delegation_id = c.id) SELECT max(depth) FROM c"
        ).fetchone()
        out["counts"] = counts | {"max_depth": depth[0] if depth else 0}
        base = sample("SELECT action_id FROM actions")
        out["lookup"] = _latency(
            lambda a: con.execute("SELECT * FROM actions WHERE action_id = ?", [a]).fetchall(),
            *base,
        )
        out["trace"] = _latency(
            ledger.trace, *sample("SELECT action_id FROM actions WHERE delegation_id IS NOT NULL")
        )
        out["blast_delegation"] = _latency(
            lambda d: ledger.blast_radius(delegation=d),
            *sample("SELECT delegation_id FROM delegations"),
        )
        out["blast_principal"] = _latency(
            lambda p: ledger.blast_radius(principal=p),
            *sample("SELECT DISTINCT principal_id FROM principals"),
        )
        out["blast_credential"] = _latency(
            lambda c: ledger.blast_radius(credential=c),
            *sample("SELECT credential_id FROM credentials"),
        )
        acts = {
            r[0]: r[1:]
            for r in con.execute(
                "SELECT action_id, principal_id, occurred_at, operation, resource FROM actions "
                "USING SAMPLE 5000 ROWS"
            ).fetchall()
        }
        asked = list(acts)[: SAMPLES + 20]
        out["authority"] = _latency(lambda a: ledger.authority(*acts[a]), asked[20:], asked[:20])
        runs = []
        found = 0
        for _ in range(2):
            t0 = time.perf_counter()
            found = len(ledger.violations())
            runs.append(time.perf_counter() - t0)
        out["violations"] = (runs, found)
    return out


def _malloc() -> str:
    keys = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_", "LD_PRELOAD")
    set_ = [f"{k}={os.environ[k]}" for k in keys if os.environ.get(k)]
    return ", ".join(set_) if set_ else "glibc defaults (no MALLOC_* tuning, no jemalloc)"


def main() -> None:
    sizes = [int(s) for s in os.environ.get("BENCH_QUERIES_SIZES", "1000000").split(",") if s]
    rows = []
    notes = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-queries-") as tmp:
            path = Path(tmp) / "ledger.duckdb"
            t0 = time.perf_counter()
            built = build(path, n)
            build_s = time.perf_counter() - t0
            m = measure(path)
        per_event = built["projections"] / n * 1e6
        share = built["projections"] / built["append"] * 100
        lk, tr = m["lookup"], m["trace"]
        bd, bp, bc = m["blast_delegation"], m["blast_principal"], m["blast_credential"]
        au = m["authority"]
        runs, found = m["violations"]
        rows.append(
            f"| {n:,} | {lk[0]:.2f} / {lk[1]:.2f} | {tr[0]:.1f} / **{tr[1]:.1f}** | "
            f"{bd[0]:.1f} / **{bd[1]:.1f}** | "
            f"{bp[0]:.1f} / **{bp[1]:.1f}** | {bc[0]:.1f} / **{bc[1]:.1f}** | "
            f"{au[0]:.2f} / **{au[1]:.2f}** | "
            f"**{runs[0]:.2f}** / {runs[1]:.2f} | {found:,} | {per_event:.1f} ({share:.0f} %) |"
        )
        c = m["counts"]
        notes.append(
            f"- {n:,} events: {c['actions']:,} actions, {c['delegations']:,} delegations "
            f"(max depth {c['max_depth']}), {c['principals']:,} principals; build {build_s:.0f} s "
            f"(generate+encode {built['prepare']:.0f} s, Store.append {built['append']:.0f} s "
            f"= {n / built['append']:,.0f} events/s with projections and Merkle state)."
        )
        print(rows[-1], flush=True)
    if 10_000_000 not in sizes:
        notes.append(
            "- 10M skipped by default: building it (generation + Avro encoding + append, about "
            "ten times the 1M build) does not fit the bench run time; run with "
            "BENCH_QUERIES_SIZES=1000000,10000000 to include it."
        )
    markdown = "\n".join(
        [
            "Investigator queries through the Python API on a warm read-only `Ledger`, "
            f"{SAMPLES} random subjects each (ms, p50 / **p99**; the baseline is one indexed "
            "`SELECT * FROM actions WHERE action_id = ?` on the same connection, i.e. what one "
            "round trip to DuckDB costs in this run); full `violations()` scan "
            "(s, first / second run); projection cost per appended event (µs, share of "
            "`Store.append` time). Targets at 1M: trace p99 <= 20 ms, blast radius p99 <= 200 ms, "
            "violations <= 10 s; at 10M trace p99 <= 15 ms, blast radius p99 <= 30 ms, "
            "`authority` p99 <= 10 ms, violations no slower than 23 s. `authority` asks "
            "`Ledger.authority(actor, time, operation, resource)` of sampled actions: every "
            "delegation of the actor at that time, each chain to its root, allowed or not.",
            "",
            "| events | baseline: 1 indexed lookup | trace | blast: delegation | blast: principal "
            "| blast: credential | authority (op + resource) | violations (s) | found "
            "| projections µs/event |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            *notes,
            f"- malloc: {_malloc()}; DuckDB {duckdb.__version__}; {os.cpu_count()} cores.",
        ]
    )
    try:
        from bench.results import write_section
    except ImportError:  # the results helper lands with the integrity bench
        print(markdown)
        return
    write_section("queries", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
