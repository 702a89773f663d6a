"""The embedded Tansu broker: starts on a free port, answers Kafka, stops by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ledger.errors import BrokerError
from ledger.stream.broker import (
    EmbeddedBroker,
    free_port,
    metadata_brokers,
    port_in_use,
    resolve_broker_bin,
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split()[2] != "Z"


@pytest.mark.integration
def test_starts_answers_metadata_and_stops_by_pid() -> None:
    with EmbeddedBroker() as embedded:
        pid = embedded.pid
        assert pid is not None and _alive(pid)
        host, port = embedded.bootstrap_servers.split(":")
        assert host == "127.0.0.1"
        assert metadata_brokers(host, int(port)) == [(host, int(port))]
    assert not _alive(pid)
    assert not port_in_use(int(port))


@pytest.mark.integration
def test_stops_when_the_body_raises() -> None:
    broker = EmbeddedBroker()
    with pytest.raises(RuntimeError), broker:
        pid = broker.pid
        raise RuntimeError("boom")
    assert pid is not None and not _alive(pid)


@pytest.mark.integration
def test_a_busy_port_is_a_clear_error(broker: EmbeddedBroker) -> None:
    port = int(broker.bootstrap_servers.rsplit(":", 1)[1])
    with pytest.raises(BrokerError, match="already in use"):
        EmbeddedBroker(port=port).start()


def test_binary_resolution_honours_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_BROKER_BIN", "/nonexistent/tansu")
    with pytest.raises(BrokerError, match="LEDGER_BROKER_BIN"):
        resolve_broker_bin()
    monkeypatch.delenv("LEDGER_BROKER_BIN")
    assert os.access(resolve_broker_bin(), os.X_OK)


@pytest.mark.integration
def test_ledger_broker_command_runs_in_the_foreground_until_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ledger", "broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert f"127.0.0.1:{port}" in lines[1]
        assert metadata_brokers("127.0.0.1", port)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        deadline = time.monotonic() + 5
        while port_in_use(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not port_in_use(port)
    finally:
        proc.kill()
