"""The emitter SDK: agent code hands events over and moves on; they reach Kafka or wait on disk.

`emit()` validates (pydantic), encodes single-object Avro and queues the message; it never waits
longer than `max_block`. A sender task ships the queue in chunks (`acks="all"`, keyed by the
delegation id, else the principal id, so one delegation's story stays in one partition, in
order). When Kafka is unreachable or the queue is full, messages go to an append-only spool file
and are re-sent, oldest first, when the broker is back. Nothing is dropped: a full spool raises
`SpoolFullError` to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import BaseModel

from ledger.config import Settings, load
from ledger.contract import events
from ledger.contract.builders import EventBuilders, partition_key, uuid7
from ledger.contract.codec import Codec, default_codec
from ledger.errors import BrokerError, LedgerError, SpoolFullError
from ledger.stream._kafka import security_kwargs
from ledger.stream.spool import Message, Spool

__all__ = ["Emitter", "EventLike", "SyncEmitter", "default_spool_path", "partition_key", "uuid7"]

log = logging.getLogger("ledger.stream.emitter")

EventLike = Mapping[str, Any] | events.Event
CHUNK = 5000


def default_spool_path(topic: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "agent-ledger" / f"{topic}.spool"


class Emitter(EventBuilders[Awaitable[str]]):
    """Async emitter: `async with Emitter(bootstrap) as em: await em.emit(event)`.

    Counters (`em.counters`): sent (acknowledged directly), spooled (written to the spool),
    resent (acknowledged from the spool), failed (deliveries that failed and went to the spool).
    """

    def __init__(
        self,
        bootstrap_servers: str | None = None,
        topic: str | None = None,
        *,
        settings: Settings | None = None,
        spool_path: str | os.PathLike[str] | None = None,
        spool_max_bytes: int | None = None,
        buffer_size: int = 20_000,
        max_block: float = 0.5,
        producer: str | None = None,
        delivery_timeout: float = 10.0,
        close_timeout: float = 15.0,
        codec: Codec | None = None,
        compression: str | None = None,
    ) -> None:
        self.settings = settings or load(bootstrap_servers=bootstrap_servers, topic=topic)
        if compression:
            self.settings = load(**(self.settings.model_dump() | {"compression": compression}))
        if bootstrap_servers:
            self.settings = self.settings.model_copy(
                update={"bootstrap_servers": bootstrap_servers}
            )
        if topic:
            self.settings = self.settings.model_copy(update={"topic": topic})
        self.topic = self.settings.topic
        self.spool_path = Path(
            spool_path or self.settings.spool or default_spool_path(self.topic)
        ).expanduser()
        self.spool_max_bytes = spool_max_bytes or self.settings.spool_max_bytes
        self.buffer_size = buffer_size
        self.max_block = max_block
        self.producer_name = producer or f"{socket.gethostname()}/{os.getpid()}"
        self.delivery_timeout = delivery_timeout
        self.close_timeout = close_timeout
        self.codec = codec or default_codec()
        self.sent = self.spooled = self.resent = self.failed = 0
        self._cond = threading.Condition()
        self._buf: deque[Message] = deque()
        self._spool: Spool | None = None
        self._down = False
        self._sleeping = False
        self._flight: list[Message] = []
        self._flight_spooled = False
        self._closing = False
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
        self._spool = Spool(self.spool_path, self.spool_max_bytes)
        if self._spool.unsent:
            log.info("spool %s holds %d bytes from before; re-sending them first",
                     self.spool_path, self._spool.pending_bytes)  # fmt: skip
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

    async def close(self) -> None:
        """Deliver what is queued (up to `close_timeout`); whatever is left waits in the spool."""
        if self._task is None or self._closing:
            return
        await self.flush(self.close_timeout, give_up_when_down=True)
        self._closing = True
        self._kick()
        task, self._task = self._task, None
        await task
        try:
            self._spill_buffer(must=True)
        finally:
            await self._release()

    async def _release(self) -> None:
        if self._producer is not None:
            try:
                await asyncio.wait_for(self._producer.stop(), 5)
            except Exception as exc:  # the broker may be gone; nothing is lost either way
                log.debug("producer stop: %s", exc)
            self._producer = None
        assert self._spool is not None
        if self._spool.unsent:
            log.warning("%d bytes of events wait in spool %s; they are re-sent on next start",
                        self._spool.pending_bytes, self.spool_path)  # fmt: skip
        self._spool.close()

    @property
    def counters(self) -> dict[str, int]:
        spool = self._spool
        return {
            "sent": self.sent,
            "spooled": self.spooled,
            "resent": self.resent,
            "failed": self.failed,
            "queued": len(self._buf) + len(self._flight),
            "spool_bytes": spool.pending_bytes if spool else 0,
        }

    @property
    def pending(self) -> int:
        """Events not yet acknowledged by Kafka (queued, in flight or spooled)."""
        spool = self._spool
        return len(self._buf) + len(self._flight) + (1 if spool and spool.unsent else 0)

    async def flush(self, timeout: float | None = None, give_up_when_down: bool = False) -> bool:
        """Wait until everything is acknowledged (True) or `timeout` passes (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.pending:
            if self._task is None or self._task.done() or (give_up_when_down and self._down):
                break
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._kick()
            await asyncio.sleep(0.01)
        return not self.pending

    # -- emitting --------------------------------------------------------------------------

    def prepare(self, event: EventLike) -> Message:
        """Validate and encode one event; raises `ValidationError` with a one-line reason."""
        model = event if isinstance(event, BaseModel) else events.parse_event(event)
        record = events.to_record(model)
        return partition_key(record), self.codec.encode(record)

    async def emit(self, event: EventLike) -> str:
        """Queue one event (a JSON-form dict or a parsed model); returns its event_id."""
        key, value = self.prepare(event)
        await self.emit_encoded(key, value)
        return _event_id(event)

    async def emit_encoded(self, key: bytes, value: bytes) -> None:
        """Queue an already validated and encoded message."""
        deadline = time.monotonic() + self.max_block
        while not self._offer((key, value), spill=time.monotonic() >= deadline):
            await asyncio.sleep(0.002)

    def _submit(self, event: dict[str, Any]) -> Awaitable[str]:
        return self.emit(event)

    def offer_blocking(self, msg: Message) -> None:
        """Queue `msg` from another thread, waiting at most `max_block` seconds for room,
        then spooling it (what `SyncEmitter.emit` does; thread-safe)."""
        deadline = time.monotonic() + self.max_block
        while not self._offer(msg, spill=False):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._offer(msg, spill=True)
                return
            with self._cond:
                self._cond.wait(min(remaining, 0.05))

    def _offer(self, msg: Message, spill: bool) -> bool:
        """Queue `msg` (True), or report the queue full (False); with `spill`, spool instead.

        Invariant that keeps per-key order: every spooled message is older than every queued
        one, so the sender drains the spool before the queue. A chunk in flight counts as
        older than both: spilling writes it to the spool first (a duplicate if it then
        arrives, which the ledger dedupes).
        """
        if self._task is None:
            raise LedgerError("the emitter is not started (use `async with Emitter(...)`)")
        self._raise_error()
        spool = self._spool
        assert spool is not None
        with self._cond:
            if spool.unsent or (self._down and not self._flight):
                # Queued messages are older than `msg`: they go first, all or none, so a full
                # spool raises here, to the caller, without reordering or dropping anything.
                spool.append([*self._buf, msg])
                self.spooled += len(self._buf) + 1
                self._buf.clear()
                return True
            if len(self._buf) >= self.buffer_size:
                if not spill:
                    return False
                flight = [] if self._flight_spooled else self._flight
                spool.append([*flight, *self._buf, msg])
                self._flight_spooled = bool(self._flight)
                self.spooled += len(self._buf) + 1
                self._buf.clear()
                self._kick_locked()
                return True
            self._buf.append(msg)
            if self._sleeping:
                self._kick_locked()
            return True

    def _raise_error(self) -> None:
        if self._error is not None:
            raise BrokerError(f"emitter stopped: {self._error}") from self._error

    def _kick_locked(self) -> None:
        self._sleeping = False
        self._kick()

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
            loop.call_soon_threadsafe(wake.set)

    def _spill_buffer(self, *, must: bool = False) -> None:
        """Move the queue, oldest first, to the spool, as much of it as fits. What does not fit
        stays in memory: the next `emit` raises `SpoolFullError`, and so does `close()` (`must`)
        with the count of events it could neither deliver nor spool."""
        assert self._spool is not None
        with self._cond:
            if not self._buf:
                return
            try:
                self._spool.append(list(self._buf))
                self.spooled += len(self._buf)
                self._buf.clear()
                return
            except SpoolFullError:
                while self._buf:
                    try:
                        self._spool.append([self._buf[0]])
                    except SpoolFullError:
                        break
                    self._buf.popleft()
                    self.spooled += 1
            left = len(self._buf)
        if must:
            raise SpoolFullError(
                f"spool {self.spool_path} is full and Kafka is unreachable: {left} event(s) "
                "already emitted could be neither delivered nor spooled",
                unsent=left,
            )
        log.warning("spool %s is full: %d events wait in memory", self.spool_path, left)

    # -- the sender task -------------------------------------------------------------------

    async def _sender(self) -> None:
        backoff = 0.25
        try:
            while True:
                spool = self._spool
                assert spool is not None and self._wake is not None
                if self._closing and (self._down or not (self._buf or spool.unsent)):
                    return
                if self._producer is None and not await self._connect():
                    await self._pause(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                if spool.unsent:
                    ok = await self._resend(spool)
                elif self._buf:
                    ok = await self._send_queued(spool)
                else:
                    with self._cond:
                        self._sleeping = not self._buf
                    if self._sleeping:
                        self._wake.clear()
                        await self._pause(1.0)
                    continue
                if ok:
                    backoff = 0.25
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
            linger_ms=5,
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
            self._spill_buffer()
            return False
        self._producer = producer
        self._partitioner = DefaultPartitioner()
        if self._down:
            log.info("broker %s reachable again", self.settings.bootstrap_servers)
        return True

    def _mark_down(self, why: str) -> None:
        if not self._down:
            log.warning("Kafka %s unreachable (%s); spooling to %s",
                        self.settings.bootstrap_servers, why, self.spool_path)  # fmt: skip
        self._down = True

    async def _deliver(self, messages: list[Message]) -> list[Message]:
        """Send in order; returns the messages whose partition batch failed (to spool)."""
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
        for part, msgs in by_part.items():
            batch, batched = producer.create_batch(), list[Message]()
            for msg in msgs:
                if batch.append(key=msg[0], value=msg[1], timestamp=None) is None:
                    sends.append((await producer.send_batch(batch, self.topic, partition=part),
                                  batched))  # fmt: skip
                    batch, batched = producer.create_batch(), []
                    batch.append(key=msg[0], value=msg[1], timestamp=None)
                batched.append(msg)
            sends.append((await producer.send_batch(batch, self.topic, partition=part), batched))
        results = await asyncio.gather(*(f for f, _ in sends), return_exceptions=True)
        failed: list[Message] = []
        for (_, msgs), res in zip(sends, results, strict=True):
            if isinstance(res, BaseException):
                failed.extend(msgs)
                self._mark_down(str(res) or type(res).__name__)
        if failed:  # keep the original order among the failed ones
            order = {id(m): i for i, m in enumerate(messages)}
            failed.sort(key=lambda m: order[id(m)])
        return failed

    async def _send_queued(self, spool: Spool) -> bool:
        with self._cond:
            chunk = [self._buf.popleft() for _ in range(min(CHUNK, len(self._buf)))]
            self._flight, self._flight_spooled = chunk, False
            self._cond.notify_all()
        try:
            failed = await self._deliver(chunk)
        finally:
            with self._cond:
                self._flight = []
                already_spooled, self._flight_spooled = self._flight_spooled, False
        self.sent += len(chunk) - len(failed)
        if failed:
            self.failed += len(failed)
            with self._cond:
                if already_spooled:  # a spill wrote the whole chunk (and the queue) already
                    self.spooled += len(self._buf)
                    spool.append(list(self._buf))
                    self._buf.clear()
                    return False
                try:
                    spool.append([*failed, *self._buf])
                except LedgerError as exc:  # spool full: keep them queued, callers get the error
                    self._buf.extendleft(reversed(failed))
                    log.error("%s", exc)
                    return False
                self.spooled += len(failed) + len(self._buf)
                self._buf.clear()
            return False
        return True

    async def _resend(self, spool: Spool) -> bool:
        chunk, position = spool.read(CHUNK)
        if not chunk:
            spool.advance(position)
            return True
        self._flight = chunk
        try:
            failed = await self._deliver(chunk)
        finally:
            self._flight = []
        if failed:  # re-send the whole chunk later; a partial repeat is deduped by the ledger
            return False
        self.resent += len(chunk)
        spool.advance(position)
        if not spool.unsent:
            log.info("spool %s drained", self.spool_path)
        return True


def _event_id(event: EventLike) -> str:
    if isinstance(event, Mapping):
        return str(event.get("event_id"))
    return event.event_id


async def _quiet_stop(producer: Any) -> None:
    try:
        await asyncio.wait_for(producer.stop(), 2)
    except Exception as exc:
        log.debug("producer stop: %s", exc)


class SyncEmitter(EventBuilders[str]):
    """The same emitter for code that is not async: a background thread runs the event loop.

    `with SyncEmitter(bootstrap) as em: em.emit(event)`; validation and encoding happen in the
    calling thread, delivery in the background.
    """

    def __init__(self, bootstrap_servers: str | None = None, topic: str | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        self._emitter = Emitter(bootstrap_servers, topic, **kwargs)
        self.producer_name = self._emitter.producer_name
        self._loop = asyncio.new_event_loop()
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

    def close(self) -> None:
        if not self._started:
            return
        self._started = False
        try:
            self._call(self._emitter.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def emit(self, event: EventLike) -> str:
        """Validate, encode and queue one event; blocks at most `max_block` seconds."""
        self._emitter.offer_blocking(self._emitter.prepare(event))
        return _event_id(event)

    def _submit(self, event: dict[str, Any]) -> str:
        return self.emit(event)

    def flush(self, timeout: float | None = None) -> bool:
        return bool(self._call(self._emitter.flush(timeout)))

    @property
    def counters(self) -> dict[str, int]:
        return self._emitter.counters
