"""The emitter's on-disk spool: order, torn tails, resume position, size limit, exclusivity."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.errors import ConfigError, SpoolFullError
from ledger.stream.spool import Spool


def _msgs(n: int, start: int = 0) -> list[tuple[bytes, bytes]]:
    return [(f"k{i % 3}".encode(), f"value-{i}".encode() * 3) for i in range(start, start + n)]


def test_messages_come_back_in_order_and_the_files_empty_once_sent(spool_path: Path) -> None:
    spool = Spool(spool_path, 1 << 20)
    spool.append(_msgs(5))
    spool.append(_msgs(5, 5))

    first, pos = spool.read(4)
    spool.advance(pos)
    rest, pos2 = spool.read(100)

    assert first + rest == _msgs(10)
    assert spool.unsent
    spool.advance(pos2)
    assert (spool.unsent, spool.size) == (False, 0)
    spool.close()
    assert not spool_path.exists()


def test_reopened_spool_resumes_after_the_last_sent_message(spool_path: Path) -> None:
    spool = Spool(spool_path, 1 << 20)
    spool.append(_msgs(6))
    _, pos = spool.read(2)
    spool.advance(pos)
    spool.close()

    again = Spool(spool_path, 1 << 20)
    assert again.read(100)[0] == _msgs(6)[2:]
    again.close()


def test_a_torn_frame_at_the_tail_is_cut_off(spool_path: Path) -> None:
    spool = Spool(spool_path, 1 << 20)
    spool.append(_msgs(3))
    spool.close()
    with spool_path.open("ab") as fh:
        fh.write(b"\x00\x00\x01\x00garbage")  # a crash in the middle of a write

    again = Spool(spool_path, 1 << 20)
    assert again.read(100)[0] == _msgs(3)
    again.append(_msgs(1, 3))
    assert again.read(100)[0] == _msgs(4)
    again.close()


def test_a_full_spool_refuses_loudly_and_keeps_what_it_has(spool_path: Path) -> None:
    spool = Spool(spool_path, 200)
    spool.append(_msgs(2))
    with pytest.raises(SpoolFullError, match="full"):
        spool.append(_msgs(10, 2))
    assert spool.read(100)[0] == _msgs(2)
    spool.close()


def test_two_emitters_cannot_share_one_spool(spool_path: Path) -> None:
    spool = Spool(spool_path, 1 << 20)
    with pytest.raises(ConfigError, match="in use"):
        Spool(spool_path, 1 << 20)
    spool.close()
