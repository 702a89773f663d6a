"""`ledger emit`: JSON Lines to the real broker, all or nothing unless --skip-invalid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.cli import cli
from ledger.stream.broker import EmbeddedBroker
from tests import factories as f
from tests.conftest import write_jsonl
from tests.kafkautil import read_all

pytestmark = pytest.mark.integration


def _emit(broker: EmbeddedBroker, topic: str, spool: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli,
        ["emit", *args, "-b", broker.bootstrap_servers, "--topic", topic, "--spool", str(spool)],
    )
    return result.exit_code, result.stdout, result.stderr


def test_one_invalid_line_means_nothing_is_sent(
    broker: EmbeddedBroker, topic: str, tmp_path: Path, spool_path: Path
) -> None:
    path = write_jsonl(
        tmp_path / "in.jsonl",
        [f.principal("agent:a"), "{not json", f.principal("agent:b"), f.granted("", "u:a", "a:b")],
    )

    code, _out, err = _emit(broker, topic, spool_path, str(path))

    assert code == 1
    assert f"{path}:2: not valid JSON" in err
    assert f"{path}:4: data.delegation_id" in err
    assert "2 of 4 lines are invalid; nothing sent" in err
    assert read_all(broker.bootstrap_servers, topic) == []


def test_skip_invalid_sends_the_rest_and_exits_3(
    broker: EmbeddedBroker, topic: str, tmp_path: Path, spool_path: Path
) -> None:
    good = [f.principal(f"agent:{i}") for i in range(20)]
    path = write_jsonl(tmp_path / "in.jsonl", [*good[:10], '{"type": "nope"}', *good[10:]])

    code, out, err = _emit(broker, topic, spool_path, str(path), "--skip-invalid", "--json")

    assert code == 3
    summary = json.loads(out)
    assert (summary["lines"], summary["sent"], summary["skipped"]) == (21, 20, 1)
    assert f"{path}:11: unknown event type 'nope'" in err
    sent = read_all(broker.bootstrap_servers, topic)
    assert len(sent) == 20
    assert {r.key for r in sent} == {e["data"]["principal_id"].encode() for e in good}
