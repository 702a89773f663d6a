"""File ingest: JSON Lines in, each event encoded to single-object Avro as Kafka carries it."""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from ledger import events
from ledger.codec import Codec, default_codec
from ledger.errors import LedgerError
from ledger.store import AppendResult, Incoming, Rejected, Store

BATCH = 10_000
CHUNK = 2_000
#: lines handled in this process before a worker starts (it takes ~0.5 s to import)
PARALLEL_AFTER = 20_000
#: chunks queued per worker
AHEAD = 4


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


def prepare_chunk(chunk: Sequence[tuple[str, bytes]]) -> list[Incoming | Rejected]:
    """`prepare` over (source, line) pairs with the default codec: a worker's task."""
    codec = default_codec()
    return [prepare(line, source, codec) for source, line in chunk]


def serve() -> None:
    """A worker process's loop: pickled chunks in on stdin, prepared chunks out on stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            chunk = pickle.load(stdin)  # noqa: S301 (our own parent, over a private pipe)
        except EOFError:
            return
        pickle.dump(prepare_chunk(chunk), stdout, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.flush()


WORKER_CODE = "from ledger.ingest import serve; serve()"
_GONE = object()


class _Worker:
    """A helper process that validates and encodes chunks, in the order they were sent.

    A plain subprocess speaking pickle over pipes rather than multiprocessing: it never
    re-imports the caller's `__main__` (scripts and notebooks need no main guard) and is never
    forked from this process, which runs DuckDB's threads. A thread drains its output so
    neither side can block the other; if it dies, its chunks are prepared here instead.
    """

    def __init__(self) -> None:
        package_root = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": path},
        )
        self.results: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.gone = False
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        try:
            while True:
                self.results.put(pickle.load(self.proc.stdout))  # noqa: S301 (our child)
        except Exception:  # EOF, a broken pipe or a garbled stream: the worker is gone
            self.gone = True
            self.results.put(_GONE)

    def send(self, chunk: list[tuple[str, bytes]]) -> None:
        assert self.proc.stdin is not None
        try:
            pickle.dump(chunk, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.flush()
        except OSError:
            self.gone = True

    def ready(self) -> bool:
        return self.gone or not self.results.empty()

    def result(self) -> list[Incoming | Rejected] | None:
        """The next chunk back, or None once the worker is gone."""
        if self.gone and self.results.empty():
            return None
        item = self.results.get()
        return None if item is _GONE else cast(list[Incoming | Rejected], item)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def default_workers() -> int:
    """One helper process when a core is free for it, else none.

    The helper adds ~40 % CPU (pickling both ways) to take ~25 % off this process's share:
    a gain only when a second core is idle. On a busy machine it makes ingest slower.
    """
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return 1 if cores >= 2 and busy < cores - 1 else 0


def _chunks(lines: Iterable[tuple[str, bytes]], size: int) -> Iterator[list[tuple[str, bytes]]]:
    it = iter(lines)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def ingest(
    store: Store,
    lines: Iterable[tuple[str, bytes]],
    codec: Codec | None = None,
    batch_size: int = BATCH,
    progress: Callable[[IngestSummary], None] | None = None,
    *,
    workers: int | None = None,
) -> IngestSummary:
    """Append every valid line and quarantine the rest, one transaction per batch.

    Validating and encoding cost about as much as hashing and appending, so past the first
    `PARALLEL_AFTER` lines of a large input they move to `workers` helper processes (default:
    `default_workers()`) while this one appends; chunks are taken back in input order, so
    the ledger is the same byte for byte as with `workers=0`. A custom `codec` keeps
    everything in this process.
    """
    own_codec = codec or default_codec()
    if workers is None:
        workers = default_workers()
    if own_codec is not default_codec():
        workers = 0
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

    def take(items: list[Incoming | Rejected]) -> None:
        for item in items:
            if type(item) is Incoming:
                good.append(item)
            else:
                bad.append(item)  # type: ignore[arg-type]
            if len(good) + len(bad) >= batch_size:
                flush()

    pool: list[_Worker] = []
    #: chunks in input order: prepared here (a list) or (chunk, the worker preparing it)
    pending: deque[list[Incoming | Rejected] | tuple[list[tuple[str, bytes]], _Worker]]
    pending = deque()

    def local(chunk: list[tuple[str, bytes]]) -> list[Incoming | Rejected]:
        return [prepare(line, source, own_codec) for source, line in chunk]

    def settle(block: bool) -> None:
        """Hand finished chunks at the head of the queue, in order, to `take`."""
        while pending:
            head = pending[0]
            if isinstance(head, list):
                take(head)
            elif block or len(pending) > 4 * AHEAD * len(pool) or head[1].ready():
                chunk, worker = head
                done = worker.result()
                take(done if done is not None else local(chunk))
            else:
                return
            pending.popleft()

    try:
        with fewer_collections():
            for n, chunk in enumerate(_chunks(lines, CHUNK)):
                summary.lines += len(chunk)
                if not pool and workers and summary.lines > PARALLEL_AFTER:
                    for _ in range(workers):
                        try:
                            pool.append(_Worker())
                        except OSError:  # no more processes to be had: carry on with fewer
                            break
                    workers = len(pool)
                worker = pool[n % len(pool)] if pool else None
                busy = sum(1 for p in pending if isinstance(p, tuple) and p[1] is worker)
                if worker is not None and not worker.gone and busy < AHEAD:
                    worker.send(chunk)
                    pending.append((chunk, worker))
                else:
                    pending.append(local(chunk))
                settle(block=False)
            settle(block=True)
            flush()
    finally:
        for worker in pool:
            worker.close()
    summary.size, head_hash = store.head()
    summary.head_hash = head_hash.hex()
    return summary
