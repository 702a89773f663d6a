"""Kafka -> ledger, exactly once: entries, quarantine and offsets commit in one DuckDB transaction.

The ledger file is the source of truth for where to resume: on every assignment each partition
is sought to the offset stored with the last appended batch. Kafka group commits are advisory
(for lag dashboards). A crash at any point loses no event and appends none twice: the batch and
its offsets commit together, and `event_id` dedupe covers producer retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import signal
import time
from collections.abc import Awaitable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NoReturn, Protocol

from ledger.config import Settings
from ledger.contract.batch import Decoded
from ledger.contract.codec import Codec
from ledger.errors import BrokerError
from ledger.store import Store, fetch_one
from ledger.stream._kafka import security_kwargs
from ledger.stream._proc import tune_process
from ledger.stream.fetch import Fetched, Prepared, assemble, record_digest, split_batch
from ledger.stream.kafka_errors import KafkaPermanentError, TopicChangedError, classify
from ledger.stream.registry import schema_resolution
from ledger.stream.workers import DecodeWorkers, default_workers

__all__ = [
    "MAX_RECORDS",
    "PIPELINE_POLL_MS",
    "POLL_MS",
    "RETRY_MAX_S",
    "SHUTDOWN_STEP_S",
    "Checkpointer",
    "ConsumeStats",
    "LedgerConsumer",
    "StopSignals",
    "consume",
]

log = logging.getLogger("ledger.consume")

MAX_RECORDS = 10_000
POLL_MS = 500
PIPELINE_POLL_MS = 50
RETRY_MAX_S = 30.0
#: longest wait for the advisory Kafka commit and for leaving the group at shutdown: the
#: ledger holds the offsets, so a broker that is gone must not hold up the exit
SHUTDOWN_STEP_S = 3.0
#: longest wait for the topic list when a session starts
METADATA_TIMEOUT_S = 10.0
#: the broker is asked for end offsets this often (by the poll loop when idle, else by a
#: watchdog beside it), each answer awaited at most `PROBE_TIMEOUT_S`: a broker that went
#: away, or stopped answering, is reported within PROBE_S + PROBE_TIMEOUT_S = 3.5 s (the
#: bound is 5 s), whatever the consumer is doing meanwhile
PROBE_S = 1.0
PROBE_TIMEOUT_S = 2.5


class Checkpointer(Protocol):
    """Called after each committed batch (idle=False) and whenever a poll finds nothing.

    If it also has a `final_checkpoint(store)` method, that is called once when the consumer
    stops cleanly (signal, idle), after the last batch committed, so the entries since the
    last checkpoint do not stay unsigned."""

    def maybe_checkpoint(self, store: Store, idle: bool) -> object: ...


@dataclass(slots=True)
class ConsumeStats:
    received: int = 0
    appended: int = 0
    duplicates: int = 0
    quarantined: int = 0
    batches: int = 0
    seconds: float = 0.0
    active_seconds: float = 0.0  # first message fetched -> last batch committed
    decode_seconds: float = 0.0
    append_seconds: float = 0.0
    size: int = 0
    head_hash: str = ""
    stopped_by: str = ""
    offsets: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _liveness(settings: Settings) -> tuple[int, int]:
    """(session timeout, heartbeat interval) in ms: short on loopback, where the dev broker runs."""
    host = settings.bootstrap_servers.split(",")[0].rsplit(":", 1)[0].strip("[]")
    local = host in ("127.0.0.1", "localhost", "::1")
    session = settings.session_timeout_ms or (1000 if local else 10_000)
    heartbeat = settings.heartbeat_interval_ms or max(min(session // 10, 3000), 50)
    return session, heartbeat


class LedgerConsumer:
    """One consumer-group member feeding one ledger file (one writer per chain)."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        codec: Codec | None = None,
        until_idle: float | None = None,
        checkpointer: Checkpointer | None = None,
        max_records: int | None = None,
        progress_interval: float = 5.0,
        decode_workers: int | None = None,
        reset_offsets: Literal["earliest", "stored"] | None = None,
    ) -> None:
        self.store = store
        self.reset_offsets = reset_offsets
        #: partitions whose first record must be the one the ledger read last: (offset, digest)
        self._check: dict[tuple[str, int], tuple[int, bytes]] = {}
        #: partitions whose listed end offset fell below the ledger's, since when
        self._short_since: dict[tuple[str, int], float] = {}
        #: the end offsets the broker watchdog last heard
        self._listed_ends: dict[Any, int] = {}
        self.settings = settings
        # the writer schemas the ledger keeps by Confluent schema id, and, with a registry or a
        # schema directory configured, the resolver of new ids (`ledger.stream.registry`)
        self.codec, self.schemas = schema_resolution(store, settings, codec)
        if decode_workers is None:
            decode_workers = settings.decode_workers
        if decode_workers is None:
            decode_workers = default_workers()
        self._workers = DecodeWorkers(self.codec, decode_workers)
        self._pending: tuple[Fetched, asyncio.Future[Decoded]] | None = None
        self.until_idle = until_idle
        self.checkpointer = checkpointer
        self.max_records = max_records or settings.batch_size or MAX_RECORDS
        self.progress_interval = progress_interval
        self.stats = ConsumeStats()
        self._stop = asyncio.Event()
        self._stop_reason = ""
        self._lock = asyncio.Lock()
        self._expected: dict[tuple[str, int], int] = {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ledger-append")
        self._consumer: Any = None
        self._session_ms, self._heartbeat_ms = _liveness(settings)
        self._last_message = time.monotonic()
        self._assigned_once = False
        self._started = time.monotonic()
        self._last_probe = 0.0
        self._first_message = 0.0
        self._last_commit = 0.0
        self._last_contact = time.monotonic()
        #: a probe went unanswered and none has been answered since (said once per outage)
        self._broker_down = False

    # -- control ---------------------------------------------------------------------------

    def request_stop(self, reason: str = "stop requested") -> None:
        """Finish the batch in hand, commit, leave the group, return (signal-safe)."""
        if not self._stop.is_set():
            log.info("%s: finishing the current batch, then exiting", reason)
            self._stop_reason = reason
            self._stop.set()

    async def run(self) -> ConsumeStats:
        """Consume until stopped (signal, `until_idle`) or a permanent Kafka error.

        Raises `KafkaPermanentError` (exit code 4) for a failure no retry can cure (see
        `ledger.stream.kafka_errors`), a topic that does not exist, or, with `until_idle`, a
        broker that has not answered for that long; transient failures are retried with a
        backoff capped at `RETRY_MAX_S`, each one logged.
        """
        backoff = 0.5
        loop = asyncio.get_running_loop()
        _QuietOrphans.install(loop)
        threads = self._yield_core()
        try:
            self._workers.start()
            # Load the chain head and the event ids now, not during the first batch, where a
            # long pause would miss heartbeats.
            await loop.run_in_executor(self._pool, self.store.append, [])
            self._last_contact = time.monotonic()
            while not self._stop.is_set():
                try:
                    await self._session()
                    break
                except _Restart as exc:
                    log.warning("%s; reconnecting in %.1fs", exc, backoff)
                except (BrokerError, OSError) as exc:
                    if isinstance(exc, KafkaPermanentError):
                        raise
                    permanent = classify(exc.__cause__ or exc, "consume")
                    if permanent is not None:
                        raise permanent from exc
                    log.warning(
                        "broker %s unreachable (%s); retrying in %.1fs",
                        self.settings.bootstrap_servers,
                        exc,
                        backoff,
                    )
                self._give_up_if_silent()
                await self._sleep(self._retry_wait(backoff))
                backoff = min(backoff * 2, RETRY_MAX_S)
            final = getattr(self.checkpointer, "final_checkpoint", None)
            if final is not None:  # a clean stop: sign the tail
                final(self.store)
        finally:
            self._pool.shutdown(wait=True)
            self._workers.close()
            if threads is not None:
                self.store.con.execute(f"SET threads = {threads}")
        return self._summary()

    def _give_up_if_silent(self) -> None:
        """With `until_idle`, a broker that has not delivered records or answered an offsets
        probe for that long (unreachable, or failing every session) ends the run (exit 4)."""
        if self.until_idle is None:
            return
        silent = time.monotonic() - self._last_contact
        if silent >= self.until_idle:
            raise KafkaPermanentError(
                f"no broker at {self.settings.bootstrap_servers} answered for {silent:.0f}s "
                f"(--until-idle {self.until_idle:g}); nothing was lost: the next run resumes "
                "from the offsets in the ledger"
            )

    def _retry_wait(self, backoff: float) -> float:
        """The backoff, cut short so that an `until_idle` bound is kept to the second."""
        if self.until_idle is None:
            return backoff
        left = self.until_idle - (time.monotonic() - self._last_contact)
        return max(0.05, min(backoff, left))

    def _yield_core(self) -> int | None:
        """With a decode worker, DuckDB keeps to one thread: the other core is the worker's
        (measured: ~10 % more events/s than both fighting over it). Returns the old setting."""
        if self._workers.in_process:
            return None
        row = fetch_one(self.store.con, "SELECT current_setting('threads')")
        threads = int(row[0]) if row else None
        if threads is not None and threads > 1:
            self.store.con.execute("SET threads = 1")
            return threads
        return None

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    # -- one connected session -------------------------------------------------------------

    def _make_consumer(self) -> Any:
        from aiokafka import AIOKafkaConsumer

        return AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            group_id=self.settings.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=self.settings.isolation_level,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            session_timeout_ms=self._session_ms,
            heartbeat_interval_ms=self._heartbeat_ms,
            request_timeout_ms=max(40_000, self._session_ms + 5000),
            client_id="agent-ledger-consumer",
            **security_kwargs(self.settings),
        )

    async def _session(self) -> None:
        from aiokafka.errors import InvalidSessionTimeoutError, KafkaConnectionError, KafkaError

        consumer = self._make_consumer()
        try:
            await consumer.start()
            await self._check_topic(consumer)
        except KafkaError as exc:
            await self._stop_consumer(consumer)
            raise self._kafka_failure(exc) from exc
        except BaseException:
            await self._stop_consumer(consumer)
            raise
        self._consumer = consumer
        log.info(
            "consuming %s as group %s from %s into %s",
            self.settings.topic,
            self.settings.group,
            self.settings.bootstrap_servers,
            self.store.path,
        )
        watchdog = asyncio.create_task(self._watch_broker(consumer))
        try:
            consumer.subscribe([self.settings.topic], listener=_listener(self))
            await self._poll_loop(consumer)
        except InvalidSessionTimeoutError as exc:
            self._session_ms, self._heartbeat_ms = 10_000, 3000
            raise _Restart("broker refused the session timeout; using 10s") from exc
        except KafkaConnectionError as exc:
            raise BrokerError(str(exc)) from exc
        except KafkaError as exc:
            failure = self._kafka_failure(exc)
            if isinstance(failure, KafkaPermanentError):
                raise failure from exc
            raise _Restart(f"Kafka error {type(exc).__name__}: {exc}") from exc
        finally:
            watchdog.cancel()
            await asyncio.wait([watchdog])  # never raises the watchdog's own cancellation
            self._consumer = None
            await self._stop_consumer(consumer)

    def _kafka_failure(self, exc: BaseException) -> BrokerError:
        """A permanent error as `KafkaPermanentError`, anything else as a retriable
        `BrokerError`."""
        permanent = classify(exc, f"consume from {self.settings.topic}")
        return permanent or BrokerError(str(exc) or type(exc).__name__)

    async def _check_topic(self, consumer: Any) -> None:
        """Refuse a topic the cluster does not have: subscribing would have the broker create
        it (with auto-creation on, as on many clusters), and the run would end with 0 events."""
        topics = await asyncio.wait_for(consumer.topics(), METADATA_TIMEOUT_S)
        if self.settings.topic in topics:
            return
        wanted = self.settings.topic
        # the likeliest meant (a typo of the name) first, so a long list still shows them
        shown = sorted(
            (t for t in topics if not t.startswith("__")),
            key=lambda t: (-difflib.SequenceMatcher(None, t, wanted).ratio(), t),
        )
        listed = ", ".join(shown[:20]) + (", ..." if len(shown) > 20 else "")
        raise KafkaPermanentError(
            f"topic {self.settings.topic!r} does not exist at {self.settings.bootstrap_servers} "
            f"(consume never creates topics; topics there: {listed or 'none'})"
        )

    @staticmethod
    async def _stop_consumer(consumer: Any) -> None:
        """Leave the group, but never wait long for it: the ledger holds the offsets."""
        await _bounded(consumer.stop(), "Kafka client stop")

    async def _poll_loop(self, consumer: Any) -> None:
        last_report = time.monotonic()
        reported = 0
        backoff = 0.5
        self._pending = None
        while not self._stop.is_set():
            # with a batch decoding, look only briefly for the next one before appending it
            wait = POLL_MS if self._pending is None else PIPELINE_POLL_MS
            batch = await consumer.getmany(timeout_ms=wait, max_records=self.max_records)
            now = time.monotonic()
            if batch:
                self._last_message = self._last_contact = now
                self._first_message = self._first_message or now
                async with self._lock:
                    batch = self._check_marks(batch)
                    fetched = split_batch(batch, self._expected)
                    if self.schemas is not None and not await self.schemas.prepare(
                        fetched.values, self._stop, self.until_idle
                    ):
                        continue  # stopped while the registry was away: this batch is not taken
                    job = self._workers.submit(fetched.values) if fetched.values else None
                    await self._flush()  # the previous batch appends while this one decodes
                    if job is not None:
                        self._pending = (fetched, job)
            elif self._pending is not None:
                async with self._lock:
                    await self._flush()
            else:
                if self.checkpointer is not None:
                    self.checkpointer.maybe_checkpoint(self.store, True)
                if await self._idle_check(consumer, now):
                    backoff = 0.5
                    if self.until_idle is not None and now - self._last_message >= self.until_idle:
                        self.request_stop(f"idle for {self.until_idle:g}s and caught up")
                else:
                    self._give_up_if_silent()
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, RETRY_MAX_S)
            if now - last_report >= self.progress_interval:
                rate = (self.stats.received - reported) / (now - last_report)
                self._report(consumer, rate)
                last_report, reported = now, self.stats.received
        async with self._lock:  # stopping: the batch in hand is appended before leaving
            await self._flush()

    async def _idle_check(self, consumer: Any, now: float) -> bool:
        """After an empty poll: is the broker answering? False means back off (and say so).

        It also keeps the idle clock honest: partitions still behind their end offset, or a
        group join still in progress, do not count as idle.
        """
        if self.until_idle is None and now - self._last_probe < PROBE_S:
            self._check_ends(consumer, self._listed_ends, now)  # as the watchdog last heard
            return True
        self._last_probe = now
        from aiokafka.errors import KafkaError

        assignment = list(consumer.assignment())
        try:
            ends = (
                await asyncio.wait_for(consumer.end_offsets(assignment), PROBE_TIMEOUT_S)
                if assignment
                else {}
            )
        except (TimeoutError, OSError, KafkaError) as exc:
            self._unanswered(exc, always=True)
            self._last_message = now
            return False
        self._answered(now)
        behind = False
        for tp in assignment:
            key = (tp.topic, tp.partition)
            high = consumer.highwater(tp)  # from fetches; some brokers' ListOffsets lag behind
            end = ends.get(tp, 0) if high is None else high
            mark = self._check.get(key)
            want = mark[0] + 1 if mark is not None else self._expected.get(key, 0)
            self._check_end(key, high, ends.get(tp), want)
            if self.settings.isolation_level == "read_committed":
                stable = consumer.last_stable_offset(tp)  # open transactions end here
                end = end if stable is None or stable < 0 else min(end, stable)
            # the fetch position moves past transaction markers and aborted records, which
            # take offsets but are never delivered
            done = max(self._expected.get(key, 0), await _position(consumer, tp))
            behind = behind or done < end
        joining = not assignment and not self._joined_long_enough(now)
        if behind or joining:
            self._last_message = now
        return True

    async def _watch_broker(self, consumer: Any) -> None:
        """Beside the poll loop for the whole session: whenever no probe has run for `PROBE_S`,
        ask the broker for end offsets, so that a broker that went away is said within
        `PROBE_S + PROBE_TIMEOUT_S` while the loop is busy too (appending the batches fetched
        before, waiting on a commit), not only once it finds nothing more to fetch."""
        from aiokafka.errors import KafkaError

        while True:
            await asyncio.sleep(max(self._last_probe + PROBE_S - time.monotonic(), 0.05))
            now = time.monotonic()
            if now - self._last_probe < PROBE_S:  # the poll loop asked meanwhile
                continue
            self._last_probe = now
            assignment = list(consumer.assignment())
            try:
                call = consumer.end_offsets(assignment) if assignment else consumer.topics()
                call_result = await asyncio.wait_for(call, PROBE_TIMEOUT_S)
            except (TimeoutError, OSError, KafkaError) as exc:
                self._unanswered(exc, always=False)
            except Exception as exc:  # the client closing under it, say: not a verdict
                log.debug("broker probe failed: %r", exc)
            else:
                if assignment:
                    self._listed_ends = dict(call_result)
                self._answered(time.monotonic())

    def _unanswered(self, exc: BaseException, always: bool) -> None:
        """A probe went unanswered: said by the poll loop each time (it backs off after),
        by the watchdog once per outage."""
        if always or not self._broker_down:
            log.warning(
                "broker %s not answering (%s); retrying",
                self.settings.bootstrap_servers,
                str(exc) or type(exc).__name__,
            )
        self._broker_down = True

    def _answered(self, now: float) -> None:
        self._last_contact = now
        if self._broker_down:
            self._broker_down = False
            log.info("broker %s answering again", self.settings.bootstrap_servers)

    def _joined_long_enough(self, now: float) -> bool:
        if self._assigned_once:
            return True
        return now - self._started > 2 * self._session_ms / 1000 + 10

    async def _flush(self) -> None:
        """Append the batch that was decoding, if any (callers hold `_lock`)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        fetched, job = pending
        decoded = await job
        await self._append(assemble(fetched, decoded))

    async def _append(self, prepared: Prepared) -> None:
        """One transaction for the batch; then the advisory Kafka commit and the checkpointer.

        The append runs on a worker thread only so that heartbeats keep flowing meanwhile;
        batches are never pipelined (two Python-heavy threads just fight over the GIL).
        """
        self.stats.received += prepared.received
        self.stats.decode_seconds += prepared.decode_seconds
        if not (prepared.good or prepared.bad or prepared.offsets):
            return
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        result = await loop.run_in_executor(
            self._pool,
            self.store.append,
            prepared.good,
            prepared.bad,
            prepared.offsets,
            prepared.marks,
            dict(self.schemas.resolved) if self.schemas is not None else None,
        )
        self.stats.append_seconds += time.perf_counter() - started
        self._last_commit = time.monotonic()
        self.stats.batches += 1
        self.stats.appended += result.appended
        self.stats.duplicates += result.duplicates
        self.stats.quarantined += result.quarantined
        if result.quarantined:
            self._said_quarantine(result.quarantined, prepared.bad)
        if self.checkpointer is not None:
            self.checkpointer.maybe_checkpoint(self.store, False)
        await self._commit_advisory(prepared.offsets)

    @staticmethod
    def _said_quarantine(count: int, bad: Sequence[Any]) -> None:
        """Quarantine is never silent: each batch that quarantined something says how much and
        the first reason (the run still exits 0: the input is kept, nothing is lost)."""
        first = f" (first: {bad[0].reason}, at {bad[0].source})" if bad else ""
        log.warning(
            "%d value%s quarantined%s; `ledger quarantine` lists them, `--export DIR` writes "
            "them out for replay once the cause is fixed",
            count,
            "" if count == 1 else "s",
            first,
        )

    async def _commit_advisory(self, offsets: Mapping[tuple[str, int], int]) -> None:
        consumer = self._consumer
        if consumer is None or not offsets or self._broker_down:
            return  # with the broker gone, each try would hold the loop for SHUTDOWN_STEP_S
        from aiokafka import TopicPartition

        assigned = consumer.assignment()
        todo = {
            tp: off
            for (topic, part), off in offsets.items()
            if (tp := TopicPartition(topic, part)) in assigned
        }
        if not todo:
            return
        await _bounded(consumer.commit(todo), "advisory Kafka commit")

    async def on_assigned(self, assigned: Any) -> None:
        """Seek every newly assigned partition to the offset the ledger recorded, one record
        early where the ledger holds a mark of it: that record must be the one it read last
        (`_check_marks`), or the topic is not the one the ledger read. `reset_offsets`
        "earliest" reads from the start instead, "stored" trusts the stored offsets."""
        async with self._lock:
            stored = self.store.offsets(self.settings.topic)
            marks = self.store.marks(self.settings.topic)
            consumer = self._consumer
            for tp in assigned:
                key = (tp.topic, tp.partition)
                offset = stored.get(tp.partition) or 0
                mark = marks.get(tp.partition)
                if self.reset_offsets == "earliest":
                    offset = 0
                elif self.reset_offsets is None and mark is not None and mark[0] == offset - 1:
                    self._check[key] = mark
                    offset = mark[0]
                consumer.seek(tp, offset)  # below retention: the client resets to earliest
                self._expected[key] = offset
            self._assigned_once = True
            self._last_message = time.monotonic()
        how = {"earliest": " (--reset-offsets earliest: from the start)", "stored": ""}
        log.info(
            "assigned %s; resuming from ledger offsets %s%s",
            ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(assigned)) or "nothing",
            {p: o for p, o in sorted(stored.items())} or "(none: from the beginning)",
            how.get(self.reset_offsets or "", ""),
        )

    def _check_ends(self, consumer: Any, listed: Mapping[Any, int], now: float) -> None:
        """`_check_end` for every assigned partition, with the end offsets `listed`."""
        for tp in consumer.assignment():
            key = (tp.topic, tp.partition)
            mark = self._check.get(key)
            want = mark[0] + 1 if mark is not None else self._expected.get(key, 0)
            self._check_end(key, consumer.highwater(tp), listed.get(tp), want, now)

    def _check_end(
        self,
        key: tuple[str, int],
        high: int | None,
        listed: int | None,
        want: int,
        now: float | None = None,
    ) -> None:
        """A partition that ends before the offset the ledger reads next was recreated or lost
        its data (`TopicChangedError`), also when that happens while this consumer holds it.
        The fetched high watermark decides at once; without one (nothing fetched since the
        topic came back), the broker's listed end offset decides once it has said so for
        `2 * PROBE_S` (some brokers' ListOffsets lag behind a fetch)."""
        if self.reset_offsets == "stored":
            return
        if high is not None and high < want:
            self._topic_changed(
                key, f"the partition ends at offset {high}, before the ledger's {want}"
            )
        if high is None and listed is not None and listed < want:
            first = self._short_since.setdefault(key, time.monotonic() if now is None else now)
            if (time.monotonic() if now is None else now) - first >= 2 * PROBE_S:
                self._topic_changed(
                    key, f"the partition ends at offset {listed}, before the ledger's {want}"
                )
        else:
            self._short_since.pop(key, None)

    def _check_marks(self, batch: Mapping[Any, Sequence[Any]]) -> Mapping[Any, Sequence[Any]]:
        """The first record fetched from a partition being checked must be the last one the
        ledger read there, at the same offset with the same bytes; it is then dropped (it is
        in the ledger). Anything else raises `TopicChangedError` before a record of that
        partition is appended."""
        if not self._check:
            return batch
        out = dict(batch)
        for tp, messages in batch.items():
            key = (tp.topic, tp.partition)
            mark = self._check.get(key)
            if mark is None or not messages:
                continue
            first = messages[0]
            if first.offset != mark[0]:
                self._topic_changed(
                    key, f"the record at offset {mark[0]}, the last the ledger read there, "
                    f"is gone (the first one now is at {first.offset})",
                )  # fmt: skip
            if record_digest(first.value) != mark[1]:
                self._topic_changed(
                    key, f"the record at offset {mark[0]} has other bytes than the one the "
                    "ledger read there",
                )  # fmt: skip
            del self._check[key]
            self._expected[key] = mark[0] + 1
            out[tp] = messages[1:]
        return out

    def _topic_changed(self, key: tuple[str, int], what: str) -> NoReturn:
        raise TopicChangedError(
            f"{key[0]}/{key[1]}: {what}: the topic was recreated or the broker lost its data, "
            "and resuming at the stored offsets would skip records. Nothing of it was "
            "appended; run again with --reset-offsets earliest "
            "(read it all again: repeats are deduped, conflicting ones quarantined) or "
            "--reset-offsets stored (resume at the stored offsets anyway)"
        )

    async def on_revoked(self, revoked: Any) -> None:
        async with self._lock:  # waits for the batch in hand to commit
            await self._flush()
            for tp in revoked:
                self._expected.pop((tp.topic, tp.partition), None)
                self._check.pop((tp.topic, tp.partition), None)

    def _report(self, consumer: Any, rate: float) -> None:
        lags = []
        for tp in sorted(consumer.assignment()):
            high = consumer.highwater(tp)
            pos = self._expected.get((tp.topic, tp.partition))
            lag = "?" if high is None or pos is None else str(max(high - pos, 0))
            lags.append(f"{tp.partition}:{lag}")
        s = self.stats
        log.info(
            "%d events (%.0f/s): %d appended, %d duplicates, %d quarantined; lag %s",
            s.received,
            rate,
            s.appended,
            s.duplicates,
            s.quarantined,
            " ".join(lags) or "-",
        )

    def _summary(self) -> ConsumeStats:
        s = self.stats
        s.seconds = round(time.monotonic() - self._started, 3)
        s.active_seconds = round(max(self._last_commit - self._first_message, 0.0), 3)
        s.decode_seconds = round(s.decode_seconds, 3)
        s.append_seconds = round(s.append_seconds, 3)
        s.size, head = self.store.head()
        s.head_hash = head.hex()
        s.stopped_by = self._stop_reason
        s.offsets = {str(p): o for p, o in sorted(self.store.offsets(self.settings.topic).items())}
        return s


async def _position(consumer: Any, tp: Any) -> int:
    """The client's fetch position in `tp` (0 when it has none yet)."""
    try:
        return int(await asyncio.wait_for(consumer.position(tp), PROBE_TIMEOUT_S))
    except Exception:
        return 0


async def _bounded(call: Awaitable[object], what: str) -> None:
    """Await a Kafka call that is advisory (the ledger holds the offsets) for at most
    `SHUTDOWN_STEP_S`, its failure logged at debug level. With the broker gone, aiokafka can
    end such a call in a CancelledError of its own tasks; only a cancellation of this task
    itself goes on."""
    try:
        await asyncio.wait_for(call, SHUTDOWN_STEP_S)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.debug("%s: cancelled inside the client", what)
    except Exception as exc:
        log.debug("%s failed: %s", what, exc)


class _QuietOrphans:
    """A loop exception handler for the Kafka client's orphans. When `_bounded` gives up on
    a call (an advisory commit to a broker that hangs), aiokafka's request goes on inside
    it, shielded; when that fails later, asyncio would print its traceback ("Task exception
    was never retrieved") on stderr. Those are logged at debug level; everything else goes
    on to the loop's own handler."""

    def __init__(self, previous: Any) -> None:
        self.previous = previous

    @classmethod
    def install(cls, loop: asyncio.AbstractEventLoop) -> None:
        previous = loop.get_exception_handler()
        if not isinstance(previous, cls):
            loop.set_exception_handler(cls(previous))

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        from aiokafka.errors import KafkaError

        exc = context.get("exception")
        if isinstance(exc, KafkaError) and "never retrieved" in str(context.get("message")):
            log.debug("Kafka client request given up on earlier failed: %r", exc)
        elif self.previous is not None:
            self.previous(loop, context)
        else:
            loop.default_exception_handler(context)


class _Restart(Exception):
    """The session must be rebuilt (fatal group error); offsets come from the ledger again."""


def _listener(owner: LedgerConsumer) -> Any:
    """aiokafka rebalance callbacks, routed to the consumer (which serializes them with batches)."""
    from aiokafka import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: Any) -> None:
            await owner.on_revoked(revoked)

        async def on_partitions_assigned(self, assigned: Any) -> None:
            await owner.on_assigned(assigned)

    return Listener()


def consume(
    settings: Settings,
    until_idle: float | None = None,
    checkpointer: Checkpointer | None = None,
    codec: Codec | None = None,
    store: Store | None = None,
    reset_offsets: Literal["earliest", "stored"] | None = None,
    signals: StopSignals | None = None,
) -> ConsumeStats:
    """Run a consumer until SIGINT/SIGTERM (or idle): the `ledger consume` entry point.

    SIGINT/SIGTERM stop it cleanly from the moment it is called (`StopSignals`; pass one
    already entered to cover more, as the CLI does for the whole command).

    Raises `KafkaPermanentError` (exit 4) or `TopicChangedError` (exit 5), see
    `LedgerConsumer.run` and `LedgerConsumer.on_assigned`."""
    with contextlib.ExitStack() as stack:
        if signals is None:
            signals = stack.enter_context(StopSignals())
        tune_process()
        if store is None:
            store = stack.enter_context(Store.open(settings.db, origin=settings.origin))
        store.con.execute(f"SET memory_limit = '{settings.memory_limit}'")
        consumer = LedgerConsumer(
            store,
            settings,
            codec=codec,
            until_idle=until_idle,
            checkpointer=checkpointer,
            reset_offsets=reset_offsets,
        )
        return asyncio.run(_run_with_signals(consumer, signals))


class StopSignals:
    """SIGINT/SIGTERM only ever ask the consumer to stop, for the whole of `consume`: one that
    lands before the event loop runs is remembered and honoured as soon as it does; one that
    lands while the run winds down (after its last commit, while workers and the file close)
    must not turn a clean stop into an interrupted one. Off the main thread, where handlers
    cannot be set, it does nothing. With `restore=False` the two signals are ignored after
    `__exit__`: for a process that ends with the run (the `ledger consume` command), so that a
    signal in its last milliseconds (interpreter shutdown included) cannot turn a clean exit
    into an interrupted one."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, restore: bool = True) -> None:
        self.early: str | None = None
        self.running = False
        self.restore = restore
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        try:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._outside_loop)
        except ValueError:  # not the main thread
            for num, handler in self._previous.items():
                signal.signal(num, handler)
            self._previous.clear()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = True
        for sig, handler in self._previous.items():
            # SIG_IGN, not a handler of ours: interpreter shutdown resets Python handlers to
            # the default (killed by the signal), but leaves ignored signals ignored
            signal.signal(sig, handler if self.restore else signal.SIG_IGN)
        self._previous.clear()

    def _outside_loop(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.running:
            log.info("received %s while stopping; already finishing", name)
        elif self.early is None:
            self.early = f"received {name}"

    def after_loop(self, sig: int) -> None:
        """The loop's handler is gone (asyncio resets it to the default): catch it again."""
        self.running = True
        if sig in self._previous:
            signal.signal(sig, self._outside_loop)


async def _run_with_signals(consumer: LedgerConsumer, signals: StopSignals) -> ConsumeStats:
    loop = asyncio.get_running_loop()
    installed = []
    for sig in StopSignals.SIGNALS:
        try:
            loop.add_signal_handler(sig, consumer.request_stop, f"received {sig.name}")
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    if signals.early is not None:
        consumer.request_stop(signals.early)
    try:
        return await consumer.run()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
            signals.after_loop(sig)
