"""`ledger consume --key`: the consumer signs checkpoints on its own, by count and when idle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.cli import cli
from ledger.integrity.checkpoint import write_keypair
from ledger.store import Store
from ledger.store.checkpoints import stored
from ledger.stream.broker import EmbeddedBroker
from tests import factories as f
from tests.kafkautil import produce, wire

pytestmark = pytest.mark.integration  # every test here consumes from the real broker


def test_consumer_checkpoints_every_n_and_when_idle(
    broker: EmbeddedBroker, topic: str, tmp_path: Path, db_path: Path
) -> None:
    key, vkey = write_keypair(tmp_path / "keys")
    produce(broker.bootstrap_servers, topic, [wire(f.principal(f"agent:{i}")) for i in range(250)])
    done = subprocess.run(
        [sys.executable, "-m", "ledger", "consume", "-b", broker.bootstrap_servers,
         "--topic", topic, "--db", str(db_path), "--until-idle", "3", "--batch-size", "50",
         "--key", str(key), "--checkpoint-every", "100", "--checkpoint-interval", "1"],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with Store.open(db_path, read_only=True) as store:
        sizes = [cp.size for cp in stored(store.con)]
    assert len(sizes) >= 2, sizes  # at least one by count on the way, one for the idle rest
    assert sizes == sorted(sizes) and sizes[-1] == 250  # the idle tail got checkpointed too
    verified = CliRunner().invoke(cli, ["verify", "--db", str(db_path), "--public-key", str(vkey)])
    assert verified.exit_code == 0, verified.output


def test_consume_without_key_makes_no_checkpoint(
    broker: EmbeddedBroker, topic: str, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEDGER_KEY", raising=False)
    produce(broker.bootstrap_servers, topic, [wire(f.principal("agent:x"))])
    done = subprocess.run(
        [sys.executable, "-m", "ledger", "consume", "-b", broker.bootstrap_servers,
         "--topic", topic, "--db", str(db_path), "--until-idle", "1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with Store.open(db_path, read_only=True) as store:
        assert stored(store.con) == []
        assert store.size() == 1


def test_consume_signs_the_tail_on_a_clean_exit(
    broker: EmbeddedBroker, topic: str, tmp_path: Path, db_path: Path
) -> None:
    """The reported case: `consume --key` left the entries after its last checkpoint unsigned
    at exit. With the timer off, only the count rule and the exit sign; `--origin` names the
    log the consumer creates."""
    key, vkey = write_keypair(tmp_path / "keys")
    produce(broker.bootstrap_servers, topic, [wire(f.principal(f"agent:{i}")) for i in range(130)])
    done = subprocess.run(
        [sys.executable, "-m", "ledger", "consume", "-b", broker.bootstrap_servers,
         "--topic", topic, "--db", str(db_path), "--until-idle", "2", "--batch-size", "50",
         "--key", str(key), "--checkpoint-every", "100", "--checkpoint-interval", "0",
         "--origin", "corp.example/consumed"],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with Store.open(db_path, read_only=True) as store:
        history = stored(store.con)
        assert store.origin() == "corp.example/consumed"
    assert history[-1].size == 130, [cp.size for cp in history]  # the tail, signed on exit
    assert all(cp.size >= 100 for cp in history)  # before it, only the count rule signed
    assert {cp.origin for cp in history} == {"corp.example/consumed"}
    verified = CliRunner().invoke(cli, ["verify", "--db", str(db_path), "--public-key", str(vkey)])
    assert verified.exit_code == 0, verified.output
