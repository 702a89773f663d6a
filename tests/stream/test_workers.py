"""The decode worker: a real child process that decodes like the consumer would, and never
takes the consumer down with it (or outlives it)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from ledger.contract import events
from ledger.contract.batch import Decoded, decode_values
from ledger.contract.codec import Codec
from ledger.contract.fastdecode import BatchDecoder
from ledger.stream.workers import DecodeWorkers
from tests import factories as f
from tests.contract.test_codec import OLD_DATUM, older_schema, write_with


def _values(codec: Codec, n: int = 40) -> list[bytes | None]:
    out: list[bytes | None] = []
    for i in range(n):
        ev = f.principal(f"agent:{i}") if i % 2 else f.action(f"a-{i}", f"agent:{i}")
        out.append(codec.encode(events.to_record(events.parse_event(ev))))
    if n > 7:
        out[5] = b"\x00garbage"
        out[7] = None
    return out


def _same(a: Decoded, b: Decoded) -> bool:
    return a._replace(seconds=0, rows={}) == b._replace(seconds=0, rows={}) and all(
        a.rows[k].equals(b.rows[k]) for k in b.rows
    )


async def _run(workers: DecodeWorkers, batches: list[list[bytes | None]]) -> list[Decoded]:
    workers.start()
    jobs = [workers.submit(values) for values in batches]
    return [await job for job in jobs]


def _pid(workers: DecodeWorkers) -> int:
    worker: Any = workers._worker
    assert worker is not None
    return int(worker.proc.pid)


def test_a_worker_process_decodes_exactly_like_the_consumer(codec: Codec) -> None:
    batches = [_values(codec), _values(codec, 10), []]
    workers = DecodeWorkers(codec, 1)
    try:
        got = asyncio.run(_run(workers, batches))
        pid = _pid(workers)
    finally:
        workers.close()

    assert pid != os.getpid()
    local = BatchDecoder(codec)
    for decoded, values in zip(got, batches, strict=True):
        assert _same(decoded, decode_values(values, local))
    assert got[0].rejected[0][0] == 5 and got[0].rejected[1] == (7, "empty message (no value)")


def test_a_ledger_package_in_the_working_directory_is_not_the_one_the_worker_runs(
    codec: Codec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m` puts the cwd first on the path; the worker must still run this package."""
    decoy = tmp_path / "ledger"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise SystemExit('the decoy package was imported')\n")
    monkeypatch.chdir(tmp_path)
    values = _values(codec, 10)
    workers = DecodeWorkers(codec, 1)
    try:
        (got,) = asyncio.run(_run(workers, [values]))
        assert not workers.in_process and workers._worker is not None  # still on the worker
    finally:
        workers.close()
    assert _same(got, decode_values(values, BatchDecoder(codec)))


def test_the_worker_gets_the_consumers_extra_schemas() -> None:
    codec = Codec(extra_writer_schemas=[older_schema()])
    old = write_with(older_schema(), OLD_DATUM)
    workers = DecodeWorkers(codec, 1)
    try:
        (got,) = asyncio.run(_run(workers, [[old]]))
    finally:
        workers.close()
    assert (got.accepted, got.event_id, got.rejected) == ([0], ["old-1"], [])


def test_schema_ids_resolved_after_the_worker_started_reach_it(codec: Codec) -> None:
    """The consumer registers ids while it runs (`ledger.stream.registry`): the worker decodes
    the next batch with them, and quarantines a refused id with the consumer's reason."""
    from ledger.contract.codec import current_schema

    mine = Codec()
    value = b"\x00\x00\x00\x00\x05" + _values(codec, 1)[0][10:]  # type: ignore[index]
    workers = DecodeWorkers(mine, 1)

    async def scenario() -> list[Decoded]:
        workers.start()
        first = await workers.submit([value])
        mine.register_id(5, current_schema())
        mine.refuse_id(6, "schema id 6: not in the registry")
        second = await workers.submit([value, b"\x00\x00\x00\x00\x06" + value[5:]])
        return [first, second]

    try:
        first, second = asyncio.run(scenario())
        assert not workers.in_process  # both decoded by the worker process
    finally:
        workers.close()
    assert first.accepted == [] and "unknown schema id 5" in first.rejected[0][1]
    assert second.accepted == [0] and second.rejected == [(1, "schema id 6: not in the registry")]


def test_a_killed_worker_is_replaced_by_decoding_in_process(
    codec: Codec, caplog: pytest.LogCaptureFixture
) -> None:
    values = _values(codec)
    workers = DecodeWorkers(codec, 1)

    async def scenario() -> tuple[Decoded, Decoded]:
        first = await workers.submit(values)
        os.kill(_pid(workers), signal.SIGKILL)
        second = await workers.submit(values)
        return first, second

    try:
        with caplog.at_level(logging.WARNING, "ledger.consume"):
            first, second = asyncio.run(scenario())
    finally:
        workers.close()

    assert _same(second, first)
    assert workers.in_process
    assert "decoding in the consumer process from now on" in caplog.text


def test_ctrl_c_does_not_reach_the_worker_and_close_ends_it(codec: Codec) -> None:
    workers = DecodeWorkers(codec, 1)
    try:
        asyncio.run(_run(workers, [_values(codec, 4)]))
        worker: Any = workers._worker
        os.kill(worker.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends the group
        (again,) = asyncio.run(_run(workers, [_values(codec, 4)]))
        assert not workers.in_process and again.accepted == [0, 1, 2, 3]
    finally:
        workers.close()
    assert worker.proc.returncode == 0


def test_no_worker_means_decoding_in_process(codec: Codec) -> None:
    values = _values(codec)
    workers = DecodeWorkers(codec, 0)
    try:
        (got,) = asyncio.run(_run(workers, [values]))
    finally:
        workers.close()
    assert workers.in_process and workers._worker is None
    assert _same(got, decode_values(values, BatchDecoder(codec)))


def test_a_worker_that_cannot_start_is_said_once_with_its_last_words(
    codec: Codec, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/sh")  # `sh -m ledger.workers`: refuses -m
    values = _values(codec)
    workers = DecodeWorkers(codec, 1)
    try:
        with caplog.at_level(logging.WARNING, "ledger.consume"):
            got = asyncio.run(_run(workers, [values, values]))
    finally:
        workers.close()

    assert all(_same(d, decode_values(values, BatchDecoder(codec))) for d in got)
    assert workers.in_process
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "decode worker stopped answering (exit code 2: " in warning
    assert "decoding in the consumer process from now on" in warning
