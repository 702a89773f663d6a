"""Errors that end: permanent Kafka failures stop `consume` with one line and exit code 4;
transient ones are retried; a missing topic is never created; a silent broker is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiokafka.errors as ke
import pytest

from ledger.config import load
from ledger.errors import BrokerError
from ledger.store import Store
from ledger.stream.broker import EmbeddedBroker
from ledger.stream.consumer import LedgerConsumer
from ledger.stream.kafka_errors import EXIT_KAFKA, KafkaPermanentError, classify, is_permanent
from tests import factories as f

PERMANENT = [
    ke.UnsupportedCodecError("Libraries for lz4 compression codec not found"),
    ke.SaslAuthenticationFailed(),
    ke.TopicAuthorizationFailedError(),
    ke.GroupAuthorizationFailedError(),
    ke.ClusterAuthorizationFailedError(),
    ke.InvalidTopicError(),
    ke.MessageSizeTooLargeError(),
    ke.RecordTooLargeError(),
    ke.UnsupportedVersionError(),
    ssl.SSLCertVerificationError("certificate verify failed"),
]
TRANSIENT = [
    ke.KafkaConnectionError("connection refused"),
    ke.RequestTimedOutError(),
    ke.RebalanceInProgressError(),
    ke.NotLeaderForPartitionError(),
    ke.CoordinatorNotAvailableError(),
    ke.IllegalGenerationError(),
    ke.UnknownTopicOrPartitionError(),
    ConnectionRefusedError(),
]


@pytest.mark.parametrize("exc", PERMANENT, ids=lambda e: type(e).__name__)
def test_permanent_errors_become_one_line_with_exit_code_4(exc: BaseException) -> None:
    assert is_permanent(exc)
    err = classify(exc, "consume from t")
    assert isinstance(err, KafkaPermanentError) and isinstance(err, BrokerError)
    assert err.exit_code == EXIT_KAFKA == 4
    assert "\n" not in str(err) and str(err).startswith("consume from t: ")


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
def test_transient_errors_are_retried(exc: BaseException) -> None:
    assert not is_permanent(exc) and classify(exc, "x") is None


def test_a_suggested_flag_exists() -> None:
    """The TLS message names --ssl-cafile; the flag must exist on consume."""
    from click.testing import CliRunner

    from ledger.cli import cli

    err = classify(ssl.SSLCertVerificationError("x"), "consume")
    assert err is not None and "--ssl-cafile" in str(err)
    out = CliRunner().invoke(cli, ["consume", "--help"]).output
    assert "--ssl-cafile" in out


class _FakeConsumer:
    """A client whose fetch fails the way aiokafka does without a codec library."""

    def __init__(self, topic: str, error: BaseException) -> None:
        self.topic, self.error, self.fetches = topic, error, 0

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def topics(self) -> set[str]:
        return {self.topic}

    def subscribe(self, topics: list[str], listener: Any) -> None:
        pass

    def assignment(self) -> set[Any]:
        return set()

    async def getmany(self, **_: Any) -> dict[Any, Any]:
        self.fetches += 1
        raise self.error


def _consumer_failing_with(db: Path, error: BaseException) -> tuple[LedgerConsumer, Any]:
    settings = load(bootstrap_servers="127.0.0.1:9", topic="t", group="g")
    fake = _FakeConsumer("t", error)
    store = Store.open(db)
    consumer = LedgerConsumer(store, settings, until_idle=5, decode_workers=0)
    consumer._make_consumer = lambda: fake  # type: ignore[method-assign]
    return consumer, fake


def test_an_unreadable_codec_stops_the_consumer_at_once(db_path: Path) -> None:
    consumer, fake = _consumer_failing_with(
        db_path, ke.UnsupportedCodecError("Libraries for lz4 compression codec not found")
    )
    started = time.monotonic()
    with pytest.raises(KafkaPermanentError, match="compression codec"):
        asyncio.run(consumer.run())
    assert fake.fetches == 1 and time.monotonic() - started < 5
    consumer.store.close()


def test_a_transient_fetch_error_is_retried_with_backoff_not_fatal(db_path: Path) -> None:
    consumer, fake = _consumer_failing_with(db_path, ke.NotLeaderForPartitionError())
    consumer.until_idle = 1.5  # the silent-broker bound ends the test
    with pytest.raises(KafkaPermanentError, match="answered"):
        asyncio.run(consumer.run())
    assert 1 <= fake.fetches <= 4  # backoff 0.5, 1, 2 ...: not a tight loop
    consumer.store.close()


def _ledger(*args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "ledger", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done, time.monotonic() - started


@pytest.mark.integration
def test_a_missing_topic_is_named_and_never_created(
    broker: EmbeddedBroker, topic: str, tmp_path: Path
) -> None:
    missing = f"{topic}x"  # a typo of a topic that exists, among many on the shared broker
    done, _ = _ledger(
        "consume", "-b", broker.bootstrap_servers, "--topic", missing,
        "--db", str(tmp_path / "l.duckdb"), "--until-idle", "3",
    )  # fmt: skip
    assert done.returncode == 4, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and missing in last and "does not exist" in last
    listed = last.split("topics there: ", 1)[1].rstrip(")").split(", ")
    assert listed[0] == topic  # the topics that exist are listed, the likeliest meant first
    assert "Traceback" not in done.stderr

    async def topics() -> set[str]:
        from aiokafka import AIOKafkaConsumer

        probe = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap_servers)
        await probe.start()
        try:
            return set(await probe.topics())
        finally:
            await probe.stop()

    assert missing not in asyncio.run(topics())


@pytest.mark.integration
def test_until_idle_bounds_the_wait_for_a_broker_that_never_answers(tmp_path: Path) -> None:
    done, took = _ledger(
        "consume", "-b", "127.0.0.1:1", "--db", str(tmp_path / "l.duckdb"), "--until-idle", "2"
    )
    assert done.returncode == 4, done.stderr
    assert "no broker at 127.0.0.1:1 answered" in done.stderr.strip().splitlines()[-1]
    assert took < 30 and "Traceback" not in done.stderr


def test_a_bad_topic_name_is_refused_before_any_network(tmp_path: Path) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text("")
    done, took = _ledger("emit", str(events), "-b", "127.0.0.1:1", "--topic", "bad topic!")
    assert done.returncode == 1
    assert "not a Kafka topic name" in done.stderr and took < 10


@pytest.mark.integration
def test_sigterm_with_the_broker_gone_exits_promptly_and_cleanly(tmp_path: Path) -> None:
    """The final advisory commit and leaving the group are bounded: SIGTERM after the broker
    died finishes within 10 s, exit 0, no traceback, and every appended entry stays."""
    from tests.kafkautil import Stderr, produce, wire

    db = tmp_path / "l.duckdb"
    with EmbeddedBroker() as own:
        topic = own.create_topic("t-sigterm", partitions=2)
        produce(own.bootstrap_servers, topic, [wire(e) for e in _few_events(30)])
        proc = subprocess.Popen(
            [sys.executable, "-m", "ledger", "consume", "-b", own.bootstrap_servers,
             "--topic", topic, "--db", str(db)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        err = Stderr(proc)
        err.wait_for(": 30 appended", timeout=30)  # the progress line, every 5 s
    # the broker is gone now (its context exited and stopped it)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    proc.wait(timeout=30)
    took = time.monotonic() - started
    assert proc.returncode == 0, "\n".join(err.lines)
    assert took < 10, took
    assert not any("Traceback" in line for line in err.lines)
    assert _size(db) == 30


def _few_events(n: int) -> list[dict[str, Any]]:
    from tests import factories as f

    return [f.principal(f"agent:{i}") for i in range(n)]


def _size(db: Path) -> int:
    with Store.open(db, read_only=True) as store:
        return store.size()


class _Stream:
    """A producer thread sending `values` at a steady pace until stopped or the broker goes."""

    def __init__(self, bootstrap: str, topic: str, values: list[bytes], per_s: float) -> None:
        self.bootstrap, self.topic, self.values, self.per_s = bootstrap, topic, values, per_s
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> _Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    async def _run(self) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, enable_idempotence=False, linger_ms=5
        )
        await producer.start()
        started = time.monotonic()
        try:
            for i, value in enumerate(self.values):
                if self._stop.is_set():
                    break
                await asyncio.wait_for(producer.send(self.topic, value), 2)
                self.sent = i + 1
                ahead = i / self.per_s - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        except Exception:  # the broker went away: that is the test
            pass
        finally:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(producer.stop(), 2)


def _said_after(err: Any, start: int, timeout: float) -> tuple[str, float]:
    """The first WARNING about the broker logged after line `start`, and when it came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(err.lines)[start:]:
            if " WARNING " in line and ("broker" in line or "reconnecting" in line):
                return line, time.monotonic()
        time.sleep(0.02)
    raise AssertionError(f"nothing said about the broker in {timeout}s: {err.lines[start:]}")


@pytest.mark.integration
@pytest.mark.parametrize("how", ["killed", "frozen"])
@pytest.mark.parametrize("phase", ["idle", "appending"])
def test_a_broker_that_disappears_is_reported_within_5_s(
    tmp_path: Path, phase: str, how: str
) -> None:
    """Issue 13: a broker that goes away is said on stderr within 5 s (measured from its end),
    whether the consumer sat idle or was appending a stream of events. Killed (SIGKILL:
    connections refused at once) or frozen (SIGSTOP: connections stay open and nothing
    answers, as with a hung host or a network partition)."""
    from tests.kafkautil import Stderr, produce, wire

    db = tmp_path / "l.duckdb"
    with EmbeddedBroker() as own, contextlib.ExitStack() as stack:
        assert own.process is not None
        broker_pid = own.process.pid
        stack.callback(lambda: os.kill(broker_pid, signal.SIGKILL))  # also ends a frozen one
        topic = own.create_topic(f"t-gone-{phase}", partitions=2)
        produce(own.bootstrap_servers, topic, [wire(e) for e in _few_events(30)])
        proc = subprocess.Popen(
            [sys.executable, "-m", "ledger", "consume", "-b", own.bootstrap_servers,
             "--topic", topic, "--db", str(db)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        stack.callback(proc.kill)
        err = Stderr(proc)
        if phase == "idle":
            err.wait_for(": 30 appended", timeout=30)  # the progress line, every 5 s
            time.sleep(0.5)
        else:
            err.wait_for("assigned", timeout=30)
            more = [wire(f.principal(f"agent:s{i}")) for i in range(20_000)]
            stream = stack.enter_context(_Stream(own.bootstrap_servers, topic, more, 2000))
            time.sleep(2.5)
            assert 0 < stream.sent < len(more), "the stream must still be flowing"
        start = len(err.lines)
        os.kill(broker_pid, signal.SIGKILL if how == "killed" else signal.SIGSTOP)
        ended, ended_wall = time.monotonic(), time.time()
        line, said = _said_after(err, start, timeout=60)
        took = said - ended
        assert took < 5.0, f"the broker's end was said {took:.1f}s after it: {line}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, "\n".join(err.lines)
    assert not any("Traceback" in line for line in err.lines), "".join(err.lines)
    if phase == "appending":  # it was mid-stream: entries were appended just before the end
        with Store.open(db, read_only=True) as store:
            row = store.con.execute(
                "SELECT count(*) FROM entries WHERE epoch_us(recorded_at) >= ?",
                [int((ended_wall - 1.0) * 1e6)],
            ).fetchone()
        assert row is not None and row[0] > 0


def test_a_partition_that_comes_back_shorter_while_held_stops_the_run(db_path: Path) -> None:
    """The topic is recreated while this consumer holds it: nothing fetched since (no high
    watermark), the broker lists an end before the ledger's next offset. That is exit 5 once
    the broker has said so for 2 * PROBE_S, never an idle 'lag 0' forever; a listed end that
    catches up in time (a lagging ListOffsets) is no verdict."""
    from aiokafka.structs import TopicPartition

    from ledger.stream.consumer import PROBE_S
    from ledger.stream.kafka_errors import TopicChangedError

    tp = TopicPartition("t", 0)

    class Held:
        def assignment(self) -> set[Any]:
            return {tp}

        def highwater(self, _: Any) -> int | None:
            return None

    settings = load(bootstrap_servers="127.0.0.1:9", topic="t", group="g")
    with Store.open(db_path) as store:
        consumer = LedgerConsumer(store, settings, decode_workers=0)
        consumer._expected[("t", 0)] = 8000
        consumer._check_ends(Held(), {tp: 1500}, now=100.0)  # first said: not yet a verdict
        consumer._check_ends(Held(), {tp: 8000}, now=100.0 + PROBE_S)  # caught up: cleared
        consumer._check_ends(Held(), {tp: 1500}, now=100.0 + 2 * PROBE_S)
        with pytest.raises(
            TopicChangedError, match="ends at offset 1500, before the ledger's 8000"
        ):
            consumer._check_ends(Held(), {tp: 1500}, now=100.0 + 4 * PROBE_S)
