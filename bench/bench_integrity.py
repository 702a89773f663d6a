"""Integrity at scale: full `verify`, proof generation time and size, Merkle append overhead.

Sizes come from BENCH_INTEGRITY_SIZES (default "1000000"; e.g. "1000000,10000000"). Ledgers are
built with synthetic but valid single-object Avro payloads (one encoded event with its
event_id bytes replaced), appended through `Store.append` in batches of 10k with the projections
and the Merkle extension (verify recomputes the projections; `bench_verify` measures that part
on realistic data). The append-overhead figure compares the projections alone with both.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ledger.contract.codec import default_codec
from ledger.contract.events import parse_event, to_record
from ledger.integrity import checkpoint as ckpt
from ledger.integrity import proofs
from ledger.integrity.proofcheck import check_bundle
from ledger.integrity.verify import verify_store
from ledger.store import Incoming, Store, treestore
from ledger.store.projections import Projections
from ledger.tlog import note as signed_note

BATCH = 10_000


def _template() -> tuple[bytes, bytes, dict[str, Any], int]:
    """An encoded event whose 36-byte event_id we can swap: (prefix, suffix, record, micros)."""
    placeholder = str(uuid.UUID(int=0))
    event = parse_event(
        {
            "event_id": placeholder,
            "type": "action.performed",
            "occurred_at": "2026-03-23T10:00:00Z",
            "producer": "bench",
            "trace_id": None,
            "span_id": None,
            "data": {
                "action_id": "a-1",
                "principal_id": "agent:bench",
                "delegation_id": "d-1",
                "credential_id": None,
                "tool": "http",
                "operation": "crm:read",
                "resource": "crm/accounts/1",
                "outcome": "succeeded",
                "parent_action_id": None,
                "decision_id": None,
            },
        }
    )
    record = to_record(event)
    payload = default_codec().encode(record)
    at = payload.index(placeholder.encode())
    return payload[:at], payload[at + 36 :], record, record["occurred_at"]


def _events(n: int, start: int = 0) -> Iterator[list[Incoming]]:
    prefix, suffix, record, micros = _template()
    for lo in range(start, start + n, BATCH):
        batch = []
        for i in range(lo, min(lo + BATCH, start + n)):
            eid = str(uuid.UUID(int=(1 << 120) + i))
            batch.append(
                Incoming(
                    eid, "action.performed", micros, prefix + eid.encode() + suffix, "b", record
                )
            )
        yield batch


class _Timed(treestore.MerkleExtension):
    spent = 0.0

    def on_append(self, con: Any, entries: Any) -> None:
        t = time.perf_counter()
        super().on_append(con, entries)
        _Timed.spent += time.perf_counter() - t


def _build(path: Path, n: int, merkle: bool = True) -> tuple[float, float]:
    """(seconds to append n events, of which seconds inside the Merkle extension)."""
    _Timed.spent = 0.0
    t = time.perf_counter()
    extensions = [Projections(), _Timed()] if merkle else [Projections()]
    with Store.open(path, extensions=extensions) as s:
        for batch in _events(n):
            s.append(batch)
    return time.perf_counter() - t, _Timed.spent


def _ms(xs: list[float]) -> str:
    xs = sorted(xs)
    p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
    return f"{statistics.median(xs) * 1e3:.2f} / {p99 * 1e3:.2f}"


def measure(n: int, workdir: Path) -> dict[str, Any]:
    path = workdir / f"ledger-{n}.duckdb"
    build_s, merkle_s = _build(path, n)
    signer = signed_note.Signer.generate("bench.example/ledger")
    out: dict[str, Any] = {"n": n, "build_s": build_s, "merkle_s": merkle_s}
    with Store.open(path) as s:
        t = time.perf_counter()
        cp = ckpt.create(s, signer)
        out["checkpoint_ms"] = (time.perf_counter() - t) * 1e3
        s.append(next(_events(BATCH, start=n)))
        ckpt.create(s, signer)
    with Store.open(path, read_only=True) as s:
        t = time.perf_counter()
        report = verify_store(s, public_key=signer.verifier.text)
        out["verify_s"] = time.perf_counter() - t
        assert report.ok, report
        t = time.perf_counter()
        audit = treestore.audit(s.con, n + BATCH, [n])
        out["audit_s"] = time.perf_counter() - t
        assert audit.problem is None and audit.roots[n] == cp.root
        rnd = random.Random(1)
        seqs = [rnd.randrange(n) for _ in range(200)]
        head = treestore.read_head(s.con)
        merkle_t, bundle_t, sizes, path_bytes = [], [], [], []
        for seq in seqs:
            t = time.perf_counter()
            path_hashes = treestore.inclusion_proof(s.con, seq, cp.size, head)
            merkle_t.append(time.perf_counter() - t)
            path_bytes.append(32 * len(path_hashes))
        for seq in seqs[:50]:
            eid = str(uuid.UUID(int=(1 << 120) + seq))
            t = time.perf_counter()
            bundle = proofs.inclusion_bundle(s, eid)
            bundle_t.append(time.perf_counter() - t)
            sizes.append(len(json.dumps(bundle)))
            check_bundle(bundle, signer.verifier.text)
        cons_t = []
        for _ in range(50):
            old = rnd.randrange(1, n)
            t = time.perf_counter()
            treestore.consistency_proof(s.con, old, n + BATCH, head)
            cons_t.append(time.perf_counter() - t)
        nodes = s.con.execute("SELECT count(*) FROM merkle_nodes").fetchall()[0][0]
    out |= {
        "proof_ms": _ms(merkle_t),
        "bundle_ms": _ms(bundle_t),
        "consistency_ms": _ms(cons_t),
        "path_bytes": max(path_bytes),
        "bundle_bytes": max(sizes),
        "nodes": nodes,
        "file_mb": path.stat().st_size / 1e6,
    }
    return out


def overhead(workdir: Path, n: int = 200_000) -> tuple[float, float]:
    """Events/s appending n events with and without the Merkle extension (same run)."""
    without, _ = _build(workdir / "plain.duckdb", n, merkle=False)
    with_, _ = _build(workdir / "merkle.duckdb", n, merkle=True)
    return n / without, n / with_


def _verdict(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        med, p99 = (float(x) for x in r["proof_ms"].split(" / "))
        if r["n"] == 1_000_000:
            ok = "meets" if r["verify_s"] <= 5 else "MISSES"
            out.append(
                f"- verify of 1M in {r['verify_s']:.2f} s, projections recomputed: {ok} the "
                "5 s target (issue 12; was 3 s without them)."
            )
        if r["n"] >= 10_000_000:
            ok = "meets" if med <= 5 and r["path_bytes"] <= 1024 else "MISSES"
            out.append(
                f"- proof at {r['n']:,}: {med:.2f} ms median ({p99:.2f} ms p99), audit path "
                f"{r['path_bytes']} B binary: {ok} the 5 ms / 1 KB target. The JSON bundle is "
                f"{r['bundle_bytes']} B (hex path, event bytes, signed checkpoint, key); by "
                f"event_id it takes {r['bundle_ms'].split(' / ')[0]} ms, dominated by the full "
                "scan of `entries.event_id` (no index on that column)."
            )
    return out


def render(rows: list[dict[str, Any]], plain: float, merkle: float, malloc: str) -> str:
    lines = [
        f"## integrity: verify, proofs, Merkle append overhead ({datetime.now(UTC):%Y-%m-%d})",
        "",
        "Synthetic valid events (~330 B Avro), appended in batches of 10k through `Store.append`",
        "with the projections and the Merkle extension on (full verify includes recomputing "
        "the projections); 2 cores; malloc: "
        + malloc
        + ". Times: median / p99 where two are given.",
        "",
        "| entries | full verify (s) | of which Merkle rebuild + compare (s) | inclusion proof, "
        "stored nodes (ms) | `prove` bundle by event_id (ms) | consistency proof (ms) | "
        "audit path (B) | bundle JSON (B) | stored nodes | checkpoint (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['verify_s']:.2f} | {r['audit_s']:.2f} | {r['proof_ms']} | "
            f"{r['bundle_ms']} | {r['consistency_ms']} | {r['path_bytes']} | "
            f"{r['bundle_bytes']} | {r['nodes']:,} | {r['checkpoint_ms']:.1f} |"
        )
    lines += [
        "",
        f"Append throughput, 200k events, same run: {plain:,.0f}/s without the Merkle extension,",
        f"{merkle:,.0f}/s with it ({(plain / merkle - 1) * 100:.1f} % slower; "
        f"{(1 / merkle - 1 / plain) * 1e6:.2f} µs per event).",
    ]
    for r in rows:
        lines.append(
            f"At {r['n']:,}: building took {r['build_s']:.1f} s, {r['merkle_s']:.1f} s of it "
            f"in the Merkle extension ({r['merkle_s'] / r['n'] * 1e6:.2f} µs/event); "
            f"file {r['file_mb']:.0f} MB."
        )
    return "\n".join([*lines, "", *_verdict(rows)])


def main() -> None:
    sizes = [int(x) for x in os.environ.get("BENCH_INTEGRITY_SIZES", "1000000").split(",")]
    malloc = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    with tempfile.TemporaryDirectory(prefix="bench-integrity-") as tmp:
        workdir = Path(tmp)
        plain, merkle = overhead(workdir)
        rows = []
        for n in sizes:
            r = measure(n, workdir)
            print(json.dumps(r))
            rows.append(r)
            (workdir / f"ledger-{n}.duckdb").unlink()
    settings = ", ".join(f"{k}={v}" for k, v in malloc.items()) or "glibc defaults"
    markdown = render(rows, plain, merkle, settings)
    print(markdown)
    try:
        from bench.results import write_section
    except ImportError:
        print("bench.results is not available: section not written")
        return
    write_section("integrity", markdown)


if __name__ == "__main__":
    main()
