"""`ledger emit`: JSON Lines to the real broker, all or nothing unless --skip-invalid; the
spool re-sent first, damage and undelivered events reported by exit code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ledger.cli import cli
from ledger.stream.broker import EmbeddedBroker, free_port
from ledger.stream.emitter import Emitter
from ledger.stream.spool import Spool, destination, frame_size
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


def _spool_of(broker_servers: str, topic: str, path: Path, n: int) -> list[dict[str, Any]]:
    """A spool left by an emitter for (broker, topic) holding n events, as `ledger emit
    --spool path` finds it."""
    evs = [f.principal(f"agent:{i}") for i in range(n)]
    encoder = Emitter(broker_servers, topic)  # never started: it only encodes
    spool = Spool(path, 1 << 30, destination=destination(broker_servers, topic))
    spool.append([encoder.prepare(ev) for ev in evs])
    spool.close()
    return evs


def _frame_offsets(path: Path, sizes: list[int]) -> list[int]:
    offset = path.stat().st_size - sum(sizes)
    out = []
    for size in sizes:
        out.append(offset)
        offset += size
    return out


def test_unreachable_kafka_exits_6_and_a_later_emit_resends_the_spool(
    tmp_path: Path, spool_path: Path
) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    evs = [f.principal(f"agent:{i}") for i in range(5)]
    path = write_jsonl(tmp_path / "in.jsonl", evs)
    args = ["-b", bootstrap, "--topic", "later", "--spool", str(spool_path)]

    down = CliRunner().invoke(cli, ["emit", str(path), *args])
    assert down.exit_code == 6, down.output
    assert "0 sent, 0 re-sent from the spool, 0 damaged, 5 unsent" in down.stderr
    assert str(spool_path) in down.stderr

    later = EmbeddedBroker(port=port)
    try:
        later.start()
        later.create_topic("later", 2)
        up = CliRunner().invoke(cli, ["emit", *args, "--json"])  # no FILE: the spool only
        assert up.exit_code == 0, up.output
        summary = json.loads(up.stdout)
        assert (summary["sent"], summary["resent"], summary["unsent"]) == (0, 5, 0)
        got = {r.key for r in read_all(bootstrap, "later")}
    finally:
        later.stop()
    assert got == {e["data"]["principal_id"].encode() for e in evs}
    assert not spool_path.exists()


def test_one_flipped_byte_in_the_spool_costs_one_event_and_exits_7(
    broker: EmbeddedBroker, topic: str, spool_path: Path
) -> None:
    """The issue's run: 5,000 spooled frames, one byte of frame 100 flipped: 4,999 re-sent, one
    reported damaged with its offset in SPOOL.bad, exit 7 (it was: 100 sent, exit 0)."""
    evs = _spool_of(broker.bootstrap_servers, topic, spool_path, 5000)
    encoder = Emitter(broker.bootstrap_servers, topic)
    sizes = [frame_size(*encoder.prepare(ev)) for ev in evs]
    offsets = _frame_offsets(spool_path, sizes)
    raw = bytearray(spool_path.read_bytes())
    raw[offsets[100] + 40] ^= 0x01
    spool_path.write_bytes(bytes(raw))

    code, out, err = _emit(broker, topic, spool_path, "--json")

    assert code == 7, err
    summary = json.loads(out)
    assert (summary["resent"], summary["damaged"], summary["unsent"]) == (4999, 1, 0)
    assert "0 sent, 4,999 re-sent from the spool, 1 damaged, 0 unsent" in err
    assert summary["bad_file"] in err
    bad = [json.loads(line) for line in Path(summary["bad_file"]).read_text().splitlines()]
    assert [(b["offset"], b["length"]) for b in bad] == [(offsets[100], sizes[100])]
    sent = read_all(broker.bootstrap_servers, topic)
    assert len(sent) == 4999
    assert evs[100]["data"]["principal_id"].encode() not in {r.key for r in sent}


def test_a_zeroed_tail_and_a_position_inside_a_frame_end_and_are_reported(
    broker: EmbeddedBroker, topic: str, spool_path: Path
) -> None:
    evs = _spool_of(broker.bootstrap_servers, topic, spool_path, 300)
    encoder = Emitter(broker.bootstrap_servers, topic)
    sizes = [frame_size(*encoder.prepare(ev)) for ev in evs]
    offsets = _frame_offsets(spool_path, sizes)
    raw = bytearray(spool_path.read_bytes())
    raw[offsets[250] :] = bytes(len(raw) - offsets[250])
    spool_path.write_bytes(bytes(raw))
    spool_path.with_name(spool_path.name + ".pos").write_text(str(offsets[10] + 5))

    code, out, err = _emit(broker, topic, spool_path, "--json")

    assert code == 7, err
    summary = json.loads(out)
    assert summary["resent"] == 250 and summary["damaged"] >= 1 and summary["unsent"] == 0
    assert len(read_all(broker.bootstrap_servers, topic)) == 250
