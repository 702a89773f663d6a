"""The emitter SDK: agent code hands events over; once `emit()` returns, the event reaches the
ledger whatever crashes afterwards (or, by choice, within a stated window).

Every accepted event goes through the spool (`ledger.stream.spool`), a write-ahead log on local
disk, and a sender task ships the spool to Kafka (`acks="all"`, keyed by the delegation id,
else the principal id, so one delegation's story stays in one partition, in order), marking
what Kafka acknowledged. A broker that is down or slow changes nothing for the caller: events
wait in the spool and go, oldest first, when it is back; the next emitter on the same spool
(or `ledger emit`) re-sends whatever a dead process left there.

Two durability modes say when `emit()` returns:

* `"spool"` (the default, for audit): once the event is written to the spool and fsynced.
  Group commit: one writer thread takes everything accepted meanwhile, writes it in one go and
  fsyncs once, so many threads or tasks emitting together cost one fsync per round (about
  1 ms here), not one each. A single caller waiting on each `emit()` in turn is bound by that
  latency (about 1,000 events/s); `emit_many()` takes a batch for one fsync.
* `"memory"`: at once. The writer thread writes what was accepted within `memory_seconds`
  (about 2 ms in practice) or as soon as `memory_events` wait, and fsyncs every
  `sync_interval`; `emit()` blocks when either bound is reached, so a process killed at any
  moment loses at most `memory_events` events, all accepted in the last `memory_seconds`
  (an OS crash or power cut: also those written in the last `sync_interval` and not yet
  acknowledged).

Cost of the log: every event is written once and read back once (page cache; about 3 us per
event), and the spool file stays small while Kafka keeps up (cut back as it is sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from pydantic import BaseModel

from ledger.config import Settings, load
from ledger.contract import events
from ledger.contract.builders import EventBuilders, partition_key, uuid7
from ledger.contract.codec import Codec, default_codec
from ledger.errors import BrokerError, LedgerError, SpoolError
from ledger.stream._kafka import security_kwargs
from ledger.stream.spool import Batch, Message, Spool, destination, frame_size, spool_file

__all__ = [
    "EmitReport",
    "Emitter",
    "EventLike",
    "SyncEmitter",
    "default_spool_path",
    "partition_key",
    "uuid7",
]

log = logging.getLogger("ledger.stream.emitter")
# A library does not print: without a handler of the application's, records of ours and of
# aiokafka (its connection errors while the broker is down) would reach Python's last-resort
# handler, which writes them to stderr. They still propagate to any handler the app configures.
logging.getLogger("ledger").addHandler(logging.NullHandler())
logging.getLogger("aiokafka").addHandler(logging.NullHandler())

EventLike = Mapping[str, Any] | events.Event
Durability = Literal["spool", "memory"]
CHUNK = 5000
#: memory mode: how long the writer waits for more events before writing what it has
LINGER = 0.002
#: spool mode, callers in threads of their own (`SyncEmitter`): at most this long, the writer
#: waits for as many callers as its last group had (they come back once it is written), so
#: they share one fsync; a lone caller never waits. Asyncio callers put from the loop's thread
#: in bursts and gain nothing from a wait.
GATHER = 0.001


def default_spool_path(bootstrap_servers: str, topic: str) -> Path:
    """The spool of a destination when none is configured (`ledger.stream.spool.spool_file`)."""
    return spool_file(None, bootstrap_servers, topic)


@dataclass(frozen=True, slots=True)
class EmitReport:
    """What became of the events, as `close()` leaves it (also `Emitter.report()` at any time).

    Every event accepted (`emitted`), and every event found waiting in the spool at start, is
    in exactly one of `sent`, `resent`, `unsent`, `not_written`, or among the `damaged`
    frames."""

    emitted: int  # accepted by emit() in this session
    sent: int  # acknowledged by Kafka without waiting for an outage
    spooled: int  # waited in the spool because Kafka was unreachable or refused them
    resent: int  # acknowledged after waiting: spooled ones, and those of earlier sessions
    failed: int  # delivery attempts that failed (events; each stays in the spool, retried)
    unsent: int  # not acknowledged (yet): they wait in the spool, sent on the next start
    queued: int  # memory mode: accepted, not yet written to the spool
    damaged: int  # frames lost to damage in the spool file (moved to `.bad`, at least 1 each)
    damaged_regions: int
    torn: int  # writes cut short by a crash (their emit() never returned), moved to `.bad`
    not_written: int  # memory mode: accepted, then lost to a spool write error (logged)
    spool_bytes: int
    spool: str
    bad_file: str

    @property
    def delivered(self) -> bool:
        """Everything acknowledged by Kafka, and no damage found."""
        return self.unsent == 0 and self.damaged == 0 and self.not_written == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Group:
    """Messages accepted together: written in one go, fsynced once (group commit)."""

    __slots__ = ("callers", "done", "error", "first_at", "futures", "messages", "nbytes",
                 "threaded")  # fmt: skip

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.callers = 0
        self.threaded = False  # some caller waits in a thread of its own
        self.nbytes = 0
        self.first_at = 0.0
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []


class _Journal:
    """The writer thread between `emit()` and the spool (see the module docstring)."""

    def __init__(self, spool: Spool, durability: Durability, memory_events: int,
                 memory_seconds: float, sync_interval: float, on_written: Callable[[], None],
                 on_failed: Callable[[int], None]) -> None:  # fmt: skip
        self.spool = spool
        self.on_failed = on_failed
        self.durability = durability
        self.memory_events = memory_events
        self.memory_seconds = memory_seconds
        self.sync_interval = sync_interval
        self.on_written = on_written
        self._cond = threading.Condition()
        self._open = _Group()
        self._writing: _Group | None = None
        self._last_callers = 1  # callers the last group written had, when they were threads
        self._closing = False
        self._unsynced = False
        self._thread = threading.Thread(target=self._run, name="ledger-spool-writer", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        """Accepted, not yet written (memory mode)."""
        with self._cond:
            writing = len(self._writing.messages) if self._writing else 0
            return len(self._open.messages) + writing

    def put(self, messages: Sequence[Message], before: Callable[[], None],
            threaded: bool = False) -> tuple[_Group, bool]:  # fmt: skip
        """Accept `messages` (room reserved in the spool: `SpoolFullError` refuses them all)
        into the open group: (that group, True). In memory mode, while a bound is reached:
        (the group to wait for, False), nothing accepted. `before` runs, under the lock,
        just before acceptance (the emitter's counters)."""
        nbytes = sum(frame_size(k, v) for k, v in messages)
        with self._cond:
            if self._closing:
                raise LedgerError("the emitter is closed")
            group = self._open
            if self.durability == "memory":
                held = len(group.messages) + (len(self._writing.messages) if self._writing else 0)
                full = held > 0 and held + len(messages) > self.memory_events
                age = time.monotonic() - group.first_at
                old = bool(group.messages) and age > self.memory_seconds
                if full or old:
                    self._cond.notify_all()
                    return (self._writing or group) if full else group, False
            self.spool.reserve(nbytes)
            before()
            if not group.messages:
                group.first_at = time.monotonic()
                self._cond.notify_all()
            elif self.durability == "memory":
                if len(group.messages) + len(messages) >= self.memory_events:
                    self._cond.notify_all()
            elif group.callers + 1 >= self._last_callers:
                self._cond.notify_all()  # the writer waits for this many
            group.callers += 1
            group.threaded |= threaded
            group.messages.extend(messages)
            group.nbytes += nbytes
            return group, True

    def wait(self, group: _Group, timeout: float | None = None) -> None:
        """Block until `group` is written (and, in spool mode, fsynced); raise its error."""
        if not group.done.wait(timeout):
            raise SpoolError("the spool writer did not finish in time")
        if group.error is not None:
            raise group.error

    async def wait_async(self, group: _Group) -> None:
        loop = asyncio.get_running_loop()
        with self._cond:
            if not group.done.is_set():
                fut: asyncio.Future[None] = loop.create_future()
                group.futures.append((loop, fut))
            else:
                fut = loop.create_future()
                fut.set_result(None)
        await fut
        if group.error is not None:
            raise group.error

    def _run(self) -> None:
        last_sync = time.monotonic()
        while True:
            with self._cond:
                while not self._open.messages and not self._closing:
                    timeout = None
                    if self._unsynced:
                        timeout = max(last_sync + self.sync_interval - time.monotonic(), 0)
                        if timeout == 0:
                            break
                    self._cond.wait(timeout)
                if self.durability == "memory" and not self._closing:
                    deadline = self._open.first_at + LINGER
                    while (len(self._open.messages) < self.memory_events and not self._closing
                           and (left := deadline - time.monotonic()) > 0):  # fmt: skip
                        self._cond.wait(left)
                elif self._open.callers < self._last_callers and not self._closing:
                    deadline = time.monotonic() + GATHER
                    while (self._open.callers < self._last_callers and not self._closing
                           and (left := deadline - time.monotonic()) > 0):  # fmt: skip
                        self._cond.wait(left)
                if self._open.messages:
                    self._last_callers = self._open.callers if self._open.threaded else 1
                group, self._open = self._open, _Group()
                self._writing = group if group.messages else None
                closing = self._closing
            if group.messages:
                self._write(group)
            if self._unsynced and (closing or time.monotonic() - last_sync >= self.sync_interval):
                try:
                    self.spool.sync()
                    self._unsynced = False
                except SpoolError as exc:
                    log.error("%s", exc)
                last_sync = time.monotonic()
            if group.messages:
                self._finish(group)
            if closing:
                with self._cond:
                    if not self._open.messages:
                        return

    def _write(self, group: _Group) -> None:
        try:
            self.spool.append(group.messages, reserved=group.nbytes)
        except BaseException as exc:  # not written: their room goes back
            self.spool.release(group.nbytes)
            self._fail(group, exc, "not written")
            return
        self.on_written()
        if self.durability == "memory":
            self._unsynced = True
            return
        try:
            self.spool.sync()
        except BaseException as exc:  # written, maybe sent, but not known to be on disk
            self._fail(group, exc, "written but not synced")

    def _fail(self, group: _Group, exc: BaseException, what: str) -> None:
        group.error = exc if isinstance(exc, LedgerError) else SpoolError(str(exc))
        self.on_failed(len(group.messages))
        log.error("spool %s: %d event(s) %s: %s", self.spool.path, len(group.messages), what,
                  exc)  # fmt: skip

    def _finish(self, group: _Group) -> None:
        with self._cond:
            self._writing = None
            group.done.set()
            futures, group.futures = group.futures, []
            self._cond.notify_all()
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for loop, fut in futures:
            by_loop.setdefault(loop, []).append(fut)
        for loop, futs in by_loop.items():  # one wake-up per loop, not one per caller
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, futs)

    def close(self) -> None:
        """Write and fsync everything accepted, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()


def _settle(futures: list[asyncio.Future[None]]) -> None:
    for fut in futures:
        if not fut.done():
            fut.set_result(None)


class Emitter(EventBuilders[Awaitable[str]]):
    """Async emitter: `async with Emitter(bootstrap) as em: await em.emit(event)`.

    `em.counters` (a consistent snapshot at any moment, also inside the `with` block) and
    `close()`'s `EmitReport` say what became of every event; see `EmitReport`.
    """

    def __init__(
        self,
        bootstrap_servers: str | None = None,
        topic: str | None = None,
        *,
        settings: Settings | None = None,
        durability: Durability | None = None,
        spool_path: str | os.PathLike[str] | None = None,
        spool_max_bytes: int | None = None,
        memory_events: int = 1000,
        memory_seconds: float = 0.1,
        sync_interval: float = 1.0,
        producer: str | None = None,
        delivery_timeout: float = 10.0,
        close_timeout: float = 15.0,
        codec: Codec | None = None,
        compression: str | None = None,
    ) -> None:
        updates = {"bootstrap_servers": bootstrap_servers, "topic": topic,
                   "compression": compression, "durability": durability}  # fmt: skip
        updates = {k: v for k, v in updates.items() if v is not None}
        if settings is None:
            self.settings = load(**updates)
        else:  # validated like a flag would be (a bad codec name is a ConfigError)
            self.settings = load(**(settings.model_dump() | updates)) if updates else settings
        self.topic = self.settings.topic
        self.durability: Durability = self.settings.durability
        self.destination = destination(self.settings.bootstrap_servers, self.topic)
        self.spool_path = spool_file(
            spool_path or self.settings.spool, self.settings.bootstrap_servers, self.topic
        )
        self._default_spool = not (spool_path or self.settings.spool)
        self.spool_max_bytes = spool_max_bytes or self.settings.spool_max_bytes
        if memory_events < 1 or memory_seconds <= 0 or sync_interval <= 0:
            raise LedgerError("memory_events, memory_seconds and sync_interval must be positive")
        self.memory_events = memory_events
        self.memory_seconds = memory_seconds
        self.sync_interval = sync_interval
        self.producer_name = producer or f"{socket.gethostname()}/{os.getpid()}"
        self.delivery_timeout = delivery_timeout
        self.close_timeout = close_timeout
        self.codec = codec or default_codec()
        self._stats = threading.Lock()
        self._emitted = self._sent = self._resent = self._spooled = self._failed = 0
        self._waiting = 0  # this session's unacknowledged events counted as spooled
        self._inherited = 0  # events of earlier sessions still in the spool
        self._inherited_start = 0
        self._resent_inherited = 0
        self._lost = self._lost_inherited = 0  # frames lost to damage found while running
        self._unwritten = 0  # memory mode: accepted, then a spool write failed
        self._first_seq = 0  # the first seq this session writes
        self._spool: Spool | None = None
        self._journal: _Journal | None = None
        self._down = False
        self._closing = False
        self._closed_report: EmitReport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._producer: Any = None
        self._partitioner: Callable[..., int] | None = None
        self._error: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> Emitter:
        if self._task is not None:
            return self
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        spool = await asyncio.to_thread(
            Spool, self.spool_path, self.spool_max_bytes, destination=self.destination
        )
        self._spool = spool
        self._first_seq = spool.next_seq
        self._inherited = self._inherited_start = spool.pending
        if spool.pending:
            log.info("spool %s holds %d events from before; re-sending them first",
                     self.spool_path, spool.pending)  # fmt: skip
        if self._default_spool:
            _warn_legacy_spool(self.topic)
        self._journal = _Journal(spool, self.durability, self.memory_events, self.memory_seconds,
                                 self.sync_interval, self._kick, self._not_written)  # fmt: skip
        self._task = asyncio.create_task(self._sender(), name="ledger-emitter")
        return self

    async def __aenter__(self) -> Emitter:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> EmitReport:
        """Write what is accepted, deliver what Kafka takes within `close_timeout`; whatever
        is left waits in the spool for the next start. Returns what became of the events (and
        logs it: a warning when something is not delivered)."""
        if self._closed_report is not None:
            return self._closed_report
        if self._task is None or self._journal is None or self._spool is None:
            return self.report()
        journal, spool = self._journal, self._spool
        await asyncio.to_thread(journal.close)  # everything accepted is in the spool now
        await self.flush(self.close_timeout, give_up_when_down=True)
        self._closing = True
        self._kick()
        task, self._task = self._task, None
        with contextlib.suppress(Exception):  # its failure is logged and kept in _error
            await task
        if self._producer is not None:
            await _quiet_stop(self._producer)
            self._producer = None
        await asyncio.to_thread(spool.close)
        report = self._closed_report = self.report()
        _log_report(report, self.destination)
        return report

    def report(self) -> EmitReport:
        """What became of the events so far (a consistent snapshot)."""
        spool, journal = self._spool, self._journal
        queued = journal.queued if journal is not None and self._closed_report is None else 0
        with self._stats:
            unsent = (self._emitted + self._inherited_start - self._sent - self._resent
                      - self._lost - self._unwritten)  # fmt: skip
            return EmitReport(
                emitted=self._emitted,
                sent=self._sent,
                spooled=self._spooled,
                resent=self._resent,
                failed=self._failed,
                unsent=max(unsent, 0),
                queued=min(queued, max(unsent, 0)),
                damaged=(spool.damaged if spool else 0),
                damaged_regions=(spool.damaged_regions if spool else 0),
                torn=(spool.torn if spool else 0),
                not_written=self._unwritten,
                spool_bytes=(spool.pending_bytes if spool else 0),
                spool=str(self.spool_path),
                bad_file=str(spool.bad_path if spool else ""),
            )

    @property
    def counters(self) -> dict[str, int]:
        """The numbers of `report()`, as a dict (sent, spooled, resent, failed, unsent, ...)."""
        return {k: v for k, v in self.report().to_dict().items() if isinstance(v, int)}

    @property
    def pending(self) -> int:
        """Events not yet acknowledged by Kafka (queued, or waiting in the spool)."""
        return self.report().unsent

    async def flush(self, timeout: float | None = None, give_up_when_down: bool = False) -> bool:
        """Wait until everything accepted is acknowledged (True) or `timeout` passes (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._drained():
            if self._task is None or self._task.done() or (give_up_when_down and self._down):
                break
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._kick()
            await asyncio.sleep(0.01)
        return self._drained()

    def _drained(self) -> bool:
        spool, journal = self._spool, self._journal
        return not (spool and spool.unsent) and not (journal and journal.queued)

    # -- emitting --------------------------------------------------------------------------

    def prepare(self, event: EventLike) -> Message:
        """Validate and encode one event; raises `ValidationError` with a one-line reason."""
        model = event if isinstance(event, BaseModel) else events.parse_event(event)
        record = events.to_record(model)
        return partition_key(record), self.codec.encode(record)

    async def emit(self, event: EventLike) -> str:
        """Accept one event (a JSON-form dict or a parsed model); returns its event_id once
        the durability mode is satisfied (see the module docstring)."""
        await self.emit_encoded_many([self.prepare(event)])
        return _event_id(event)

    async def emit_many(self, batch: Iterable[EventLike]) -> list[str]:
        """Validate every event first (nothing is accepted if one is invalid), then accept them
        together: in spool mode one write and one fsync for the whole batch."""
        items = list(batch)
        await self.emit_encoded_many([self.prepare(ev) for ev in items])
        return [_event_id(ev) for ev in items]

    async def emit_encoded(self, key: bytes, value: bytes) -> None:
        """Accept an already validated and encoded message."""
        await self.emit_encoded_many([(key, value)])

    async def emit_encoded_many(self, messages: Sequence[Message]) -> None:
        journal = self._ready()
        while True:
            group, accepted = journal.put(messages, lambda: self._accepted(len(messages)))
            if accepted:
                break
            await journal.wait_async(group)  # memory mode: a bound is reached
        if self.durability == "spool":
            await journal.wait_async(group)

    def emit_blocking(self, messages: Sequence[Message]) -> None:
        """`emit_encoded_many` for a thread that is not the event loop's (`SyncEmitter`)."""
        journal = self._ready()
        while True:
            group, accepted = journal.put(messages, lambda: self._accepted(len(messages)),
                                          threaded=True)  # fmt: skip
            if accepted:
                break
            journal.wait(group)
        if self.durability == "spool":
            journal.wait(group)

    def _ready(self) -> _Journal:
        if self._task is None or self._journal is None:
            raise LedgerError("the emitter is not started (use `async with Emitter(...)`)")
        if self._error is not None:
            raise BrokerError(f"emitter stopped: {self._error}") from self._error
        return self._journal

    def _accepted(self, n: int) -> None:
        with self._stats:
            self._emitted += n
            if self._down:  # they wait in the spool for a broker that is down
                self._spooled += n
                self._waiting += n

    def _not_written(self, n: int) -> None:
        """A spool write or fsync failed for `n` accepted events. Spool mode: their `emit()`
        raises, so they were never accepted. Memory mode: it had returned; they are lost."""
        with self._stats:
            if self.durability == "memory":
                self._unwritten += n
                return
            self._emitted -= n
            if self._down:
                taken = min(n, self._waiting)
                self._waiting -= taken
                self._spooled -= taken

    def _submit(self, event: dict[str, Any]) -> Awaitable[str]:
        return self.emit(event)

    def _kick(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(wake.set)

    # -- the sender task -------------------------------------------------------------------

    async def _sender(self) -> None:
        backoff = 0.25
        try:
            while True:
                spool = self._spool
                assert spool is not None and self._wake is not None
                if self._closing and (self._down or not spool.unsent):
                    return
                if not spool.unsent:
                    self._wake.clear()
                    if not spool.unsent:
                        await self._pause(1.0)
                    continue
                if self._producer is None and not await self._connect():
                    await self._pause(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                if await self._send(spool):
                    backoff = 0.25
                    if self._down:
                        log.info("Kafka %s reachable again", self.settings.bootstrap_servers)
                    self._down = False
                else:
                    await self._pause(backoff)
                    backoff = min(backoff * 2, 10.0)
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                log.exception("emitter sender failed")
                self._error = exc
            raise

    async def _pause(self, seconds: float) -> None:
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def _connect(self) -> bool:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError
        from aiokafka.partitioner import DefaultPartitioner

        timeout_ms = int(self.delivery_timeout * 1000)
        compression = self.settings.compression
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap_servers,
            acks="all",
            enable_idempotence=False,
            linger_ms=2,
            max_batch_size=1 << 20,
            request_timeout_ms=timeout_ms,
            metadata_max_age_ms=60_000,
            compression_type=None if compression == "none" else compression,
            client_id="agent-ledger-emitter",
            **security_kwargs(self.settings),
        )
        try:
            await asyncio.wait_for(producer.start(), self.delivery_timeout)
        except (KafkaError, OSError, TimeoutError) as exc:
            await _quiet_stop(producer)
            self._mark_down(f"cannot connect: {exc or type(exc).__name__}")
            return False
        self._producer = producer
        self._partitioner = DefaultPartitioner()
        return True

    def _mark_down(self, why: str) -> None:
        """Kafka failed: every event not yet acknowledged now waits for it (`spooled`)."""
        if not self._down:
            log.warning("Kafka %s unreachable (%s); events wait in spool %s",
                        self.settings.bootstrap_servers, why, self.spool_path)  # fmt: skip
        self._down = True
        with self._stats:
            acked = self._sent + self._resent - self._resent_inherited
            fresh = self._emitted - acked - self._waiting - (self._lost - self._lost_inherited)
            if fresh > 0:
                self._spooled += fresh
                self._waiting += fresh

    async def _send(self, spool: Spool) -> bool:
        batch = spool.read(CHUNK)
        if batch.damage:
            self._count_damage(batch)
        if not batch.messages:
            spool.advance(batch)
            return True
        failed = await self._deliver(batch.messages)
        if failed:  # the whole chunk is sent again later; the ledger drops repeats
            with self._stats:
                self._failed += len(failed)
            return False
        self._count_acks(batch)
        spool.advance(batch)
        return True

    def _count_acks(self, batch: Batch) -> None:
        with self._stats:
            older = sum(1 for seq in batch.seqs if seq < self._first_seq)
            self._inherited -= older
            self._resent_inherited += older
            mine = len(batch.seqs) - older
            waited = min(mine, self._waiting)
            self._waiting -= waited
            self._resent += older + waited
            self._sent += mine - waited

    def _count_damage(self, batch: Batch) -> None:
        """Frames destroyed in the file while this emitter ran: they will never be sent."""
        with self._stats:
            for d in batch.damage:
                if d.torn:
                    continue
                lost = d.lost
                self._lost += lost
                if d.after_seq is not None and d.after_seq + 1 < self._first_seq:
                    older = min(lost, self._first_seq - d.after_seq - 1, self._inherited)
                    self._inherited -= older
                    self._lost_inherited += older
                    lost -= older
                self._waiting -= min(lost, self._waiting)

    async def _deliver(self, messages: list[Message]) -> list[Message]:
        """Send in order; returns the messages whose partition batch failed."""
        producer, partitioner = self._producer, self._partitioner
        assert producer is not None and partitioner is not None
        try:
            parts = sorted(
                await asyncio.wait_for(producer.partitions_for(self.topic), self.delivery_timeout)
            )
        except Exception as exc:
            self._mark_down(f"no metadata for {self.topic}: {exc or type(exc).__name__}")
            return messages
        by_part: dict[int, list[Message]] = {}
        for msg in messages:
            by_part.setdefault(partitioner(msg[0], parts, parts), []).append(msg)
        sends: list[tuple[asyncio.Future[Any], list[Message]]] = []
        try:
            for part, msgs in by_part.items():
                batch, batched = producer.create_batch(), list[Message]()
                for msg in msgs:
                    if batch.append(key=msg[0], value=msg[1], timestamp=None) is None:
                        sends.append((await producer.send_batch(batch, self.topic, partition=part),
                                      batched))  # fmt: skip
                        batch, batched = producer.create_batch(), []
                        batch.append(key=msg[0], value=msg[1], timestamp=None)
                    batched.append(msg)
                sends.append(
                    (await producer.send_batch(batch, self.topic, partition=part), batched)
                )
        except Exception as exc:  # the producer refused the batch itself (closed, too big)
            for fut, _ in sends:
                fut.add_done_callback(_retrieve)
            self._mark_down(str(exc) or type(exc).__name__)
            return messages
        results = await asyncio.gather(*(f for f, _ in sends), return_exceptions=True)
        failed: list[Message] = []
        for (_, msgs), res in zip(sends, results, strict=True):
            if isinstance(res, BaseException):
                failed.extend(msgs)
                self._mark_down(str(res) or type(res).__name__)
        return failed


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Take a future's exception so asyncio does not log it as never retrieved."""
    if not fut.cancelled():
        fut.exception()


def _log_report(report: EmitReport, dest: str) -> None:
    if report.unsent:
        log.warning("%d event(s) not delivered to %s wait in spool %s; they are re-sent first "
                    "by the next emitter or `ledger emit` with this destination", report.unsent,
                    dest, report.spool)  # fmt: skip
    if report.damaged:
        log.warning("%d frame(s) of spool %s were damaged and are lost; their bytes are in %s",
                    report.damaged, report.spool, report.bad_file)  # fmt: skip
    log.info("emitter closed: %d emitted, %d sent, %d re-sent, %d unsent, %d damaged",
             report.emitted, report.sent, report.resent, report.unsent,
             report.damaged)  # fmt: skip


def _warn_legacy_spool(topic: str) -> None:
    """agent-ledger 0.1 kept one spool per topic, without its broker: say if one is left."""
    old = spool_file(None, "", topic).with_name(f"{topic}.spool")
    with contextlib.suppress(OSError):
        if old.stat().st_size > 0:
            log.warning("a spool left by agent-ledger 0.1 at %s may hold events for topic %s "
                        "(0.1 did not record the broker): send them with `ledger emit --spool "
                        "%s -b SERVERS --topic %s`", old, topic, old, topic)  # fmt: skip


def _event_id(event: EventLike) -> str:
    if isinstance(event, Mapping):
        return str(event.get("event_id"))
    return event.event_id


async def _quiet_stop(producer: Any) -> None:
    try:
        await asyncio.wait_for(producer.stop(), 5)
    except Exception as exc:  # the broker may be gone; nothing is lost either way
        log.debug("producer stop: %s", exc)


class SyncEmitter(EventBuilders[str]):
    """The same emitter for code that is not async: a background thread runs the event loop.

    `with SyncEmitter(bootstrap) as em: em.emit(event)`; validation, encoding and the wait for
    the durability mode happen in the calling thread (many threads share one fsync), delivery
    in the background.
    """

    def __init__(self, bootstrap_servers: str | None = None, topic: str | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        self._emitter = Emitter(bootstrap_servers, topic, **kwargs)
        self.producer_name = self._emitter.producer_name
        self.spool_path = self._emitter.spool_path
        self.durability = self._emitter.durability
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(_loop_exception)
        self._thread = threading.Thread(target=self._loop.run_forever, name="ledger-emitter",
                                        daemon=True)  # fmt: skip
        self._started = False

    def _call(self, coro: Any, timeout: float | None = None) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout)

    def start(self) -> SyncEmitter:
        if not self._started:
            self._thread.start()
            self._call(self._emitter.start())
            self._started = True
        return self

    def __enter__(self) -> SyncEmitter:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> EmitReport:
        """As `Emitter.close()`: returns what became of the events."""
        if not self._started:
            return self._emitter.report()
        self._started = False
        try:
            report: EmitReport = self._call(self._emitter.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
        return report

    def emit(self, event: EventLike) -> str:
        """Validate, encode and accept one event; returns once the durability mode is
        satisfied (spool mode: written and fsynced)."""
        self._emitter.emit_blocking([self._emitter.prepare(event)])
        return _event_id(event)

    def emit_many(self, batch: Iterable[EventLike]) -> list[str]:
        """All valid or nothing accepted; one fsync for the batch in spool mode."""
        items = list(batch)
        self._emitter.emit_blocking([self._emitter.prepare(ev) for ev in items])
        return [_event_id(ev) for ev in items]

    def _submit(self, event: dict[str, Any]) -> str:
        return self.emit(event)

    def flush(self, timeout: float | None = None) -> bool:
        return bool(self._call(self._emitter.flush(timeout)))

    def report(self) -> EmitReport:
        return self._emitter.report()

    @property
    def counters(self) -> dict[str, int]:
        return self._emitter.counters


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The SyncEmitter's own loop reports through `logging`, never straight to stderr."""
    log.debug("emitter loop: %s", context.get("message"), exc_info=context.get("exception"))
