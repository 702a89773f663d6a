"""`ledger consume` as a real process against the real broker: end to end, signals, outages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.cli import cli
from ledger.store import Store
from ledger.stream.broker import EmbeddedBroker, free_port
from tests import factories as f
from tests.conftest import write_jsonl
from tests.kafkautil import Stderr

pytestmark = pytest.mark.integration


def consume_cmd(broker: str, topic: str, db: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ledger", "consume", "-b", broker, "--topic", topic,
            "--db", str(db), *extra]  # fmt: skip


def test_jsonl_emit_consume_verify_every_event_once(
    broker: EmbeddedBroker, topic: str, tmp_path: Path, db_path: Path, spool_path: Path
) -> None:
    sent = [f.principal(f"agent:{i}") for i in range(40)]
    sent += [f.granted(f"d-{i}", "user:alice", f"agent:{i}") for i in range(40)]
    sent += [f.action(f"a-{i}", f"agent:{i}", delegation=f"d-{i}") for i in range(40)]
    path = write_jsonl(tmp_path / "events.jsonl", [*sent, sent[3], sent[50]])
    runner = CliRunner()
    emitted = runner.invoke(
        cli,
        ["emit", str(path), "-b", broker.bootstrap_servers, "--topic", topic,
         "--spool", str(spool_path)],
    )  # fmt: skip
    assert emitted.exit_code == 0, emitted.output

    done = subprocess.run(
        consume_cmd(broker.bootstrap_servers, topic, db_path, "--until-idle", "1", "--json"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert (stats["appended"], stats["duplicates"], stats["quarantined"]) == (120, 2, 0)
    with Store.open(db_path, read_only=True) as store:
        ids = [r[0] for r in store.con.execute("SELECT event_id FROM entries").fetchall()]
    assert sorted(ids) == sorted(e["event_id"] for e in sent)
    verified = runner.invoke(cli, ["verify", "--db", str(db_path)])
    assert verified.exit_code == 0 and "ok: 120 entries verified" in verified.output


def test_sigterm_finishes_the_batch_and_exits_0(
    broker: EmbeddedBroker, topic: str, tmp_path: Path, db_path: Path, spool_path: Path
) -> None:
    path = write_jsonl(tmp_path / "e.jsonl", [f.principal(f"agent:{i}") for i in range(300)])
    CliRunner().invoke(
        cli,
        ["emit", str(path), "-b", broker.bootstrap_servers, "--topic", topic,
         "--spool", str(spool_path)],
    )  # fmt: skip
    proc = subprocess.Popen(
        consume_cmd(broker.bootstrap_servers, topic, db_path),
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        log = Stderr(proc)
        log.wait_for("assigned")
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        log.wait_for("received SIGTERM")
    finally:
        proc.kill()
    with Store.open(db_path, read_only=True) as store:
        assert store.size() == 300
        assert sum(store.offsets(topic).values()) == 300


def test_unreachable_broker_is_retried_and_said_not_silent(tmp_path: Path) -> None:
    """Without --until-idle, an unreachable broker is retried (said on stderr) until a signal,
    which is a clean stop: exit 0."""
    closed = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        consume_cmd(closed, "t", tmp_path / "l.duckdb"),
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "LEDGER_DEBUG": "1"},
    )
    try:
        log = Stderr(proc)
        assert "retrying" in log.wait_for("unreachable")
        time.sleep(2.5)
        assert proc.poll() is None  # still trying, not exited as if caught up
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        proc.kill()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_while_stopping_are_no_interruption(tmp_path: Path, sig: signal.Signals) -> None:
    """A signal stops the run cleanly (exit 0); more signals while it winds down (the worker
    still starting, the file closing: a few hundred ms) never turn that into an interrupted
    run or a traceback."""
    closed = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        consume_cmd(closed, "t", tmp_path / "l.duckdb", "--until-idle", "30"),
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        log = Stderr(proc)
        log.wait_for("unreachable")
        for _ in range(6):
            proc.send_signal(sig)
            time.sleep(0.05)
        code = proc.wait(20)
        time.sleep(0.2)  # the reader thread takes the last lines
        text = "".join(log.lines)
        assert code == 0, text
        assert f"received {sig.name}: finishing" in text
        assert "Traceback" not in text and "KeyboardInterrupt" not in text
    finally:
        proc.kill()


def _children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is `pid`, from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_sigkilled_consumer_takes_its_decode_worker_with_it(
    broker: EmbeddedBroker, topic: str, db_path: Path
) -> None:
    proc = subprocess.Popen(
        consume_cmd(broker.bootstrap_servers, topic, db_path, "--decode-workers", "1"),
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        Stderr(proc).wait_for("assigned")
        deadline = time.monotonic() + 20
        while not (workers := _children(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(workers) == 1, "no decode worker started"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while _alive(workers[0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(workers[0]), "the decode worker outlived its consumer"
    finally:
        proc.kill()
