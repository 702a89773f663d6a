"""The emitter's on-disk spool: order, resume, size limit, exclusivity, one destination per
file, and recovery from damage (flipped bytes, zeroed blocks, truncation, bad `.pos`)."""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.errors import ConfigError, SpoolFullError
from ledger.stream import spool as sp
from ledger.stream.spool import HEAD_SIZE, MAGIC, Message, Spool, destination, spool_file

DEST = destination("kafka-1:9092", "agent-audit-events")


def _msgs(n: int, start: int = 0) -> list[Message]:
    return [(f"k{i % 3}".encode(), f"value-{i}".encode() * 3) for i in range(start, start + n)]


def _open(path: Path, limit: int = 1 << 30, dest: str = DEST) -> Spool:
    return Spool(path, limit, destination=dest)


def _drain(spool: Spool, chunk: int = 7) -> list[Message]:
    """Everything the spool gives back, marked sent as it goes."""
    out: list[Message] = []
    while spool.unsent:
        batch = spool.read(chunk)
        out += batch.messages
        spool.advance(batch)
    return out


def _layout(path: Path, messages: list[Message]) -> list[tuple[int, int]]:
    """The byte span of each message's frame in the file (frames follow the header)."""
    sizes = [sp.frame_size(k, v) for k, v in messages]
    offset = path.stat().st_size - sum(sizes)
    spans = []
    for size in sizes:
        spans.append((offset, offset + size))
        offset += size
    return spans


def _bad(spool_path: Path) -> list[dict[str, Any]]:
    bad = spool_path.with_name(spool_path.name + ".bad")
    if not bad.exists():
        return []
    return [json.loads(line) for line in bad.read_text().splitlines()]


# -- the basics ---------------------------------------------------------------------------------


def test_messages_come_back_in_order_and_the_files_go_once_sent(spool_path: Path) -> None:
    spool = _open(spool_path)
    spool.append(_msgs(5))
    spool.append(_msgs(5, 5))
    assert spool.pending == 10

    first = spool.read(4)
    spool.advance(first)
    rest = spool.read(100)

    assert first.messages + rest.messages == _msgs(10)
    assert first.seqs + rest.seqs == list(range(10))
    assert spool.unsent
    spool.advance(rest)
    assert (spool.unsent, spool.pending) == (False, 0)
    spool.close()
    assert sorted(p.name for p in spool_path.parent.iterdir()) == []


def test_reopened_spool_resumes_after_the_last_sent_message(spool_path: Path) -> None:
    spool = _open(spool_path)
    spool.append(_msgs(6))
    spool.advance(spool.read(2))
    spool.close()

    again = _open(spool_path)
    assert again.pending == 4
    assert _drain(again) == _msgs(6)[2:]
    again.append(_msgs(1, 6))
    assert again.read(10).seqs == [6]  # seqs go on over the whole life of the file
    again.close()


def test_a_full_spool_refuses_loudly_and_keeps_what_it_has(spool_path: Path) -> None:
    spool = _open(spool_path, limit=200)
    spool.append(_msgs(2))
    with pytest.raises(SpoolFullError, match="full"):
        spool.append(_msgs(10, 2))
    with pytest.raises(SpoolFullError, match="full"):
        spool.reserve(200)
    assert spool.read(100).messages == _msgs(2)
    spool.close()


def test_two_emitters_cannot_share_one_spool(spool_path: Path) -> None:
    spool = _open(spool_path)
    with pytest.raises(ConfigError, match="in use"):
        _open(spool_path)
    spool.close()
    _open(spool_path).close()  # free again once closed


def test_group_commit_syncs_every_thread_that_waits(spool_path: Path) -> None:
    spool = _open(spool_path)
    done: list[int] = []

    def writer(i: int) -> None:
        for j in range(20):
            seq = spool.append([(b"k", f"{i}-{j}".encode())])
            spool.sync(seq)
        done.append(i)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(done) == list(range(8))
    assert spool.pending == 160
    spool.close()


def test_the_file_is_cut_back_and_compacted_as_it_is_sent(
    spool_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sp, "TRUNCATE_AT", 500)
    monkeypatch.setattr(sp, "COMPACT_AT", 2_000)
    spool = _open(spool_path)
    spool.append(_msgs(40))
    spool.advance(spool.read(40))  # all sent: cut back to the header
    assert spool.size == 0
    spool.append(_msgs(100, 40))
    spool.advance(spool.read(90))  # most of it sent: the rest moves to a fresh file
    assert spool.size < 1_000 and spool.pending == 10
    spool.close()
    again = _open(spool_path)
    batch = again.read(100)
    assert batch.messages == _msgs(10, 130) and batch.seqs == list(range(130, 140))
    again.close()


# -- one destination per spool ------------------------------------------------------------------


def test_spool_files_are_keyed_by_brokers_and_topic(tmp_path: Path) -> None:
    a = spool_file(tmp_path, "kafka-1:9092,kafka-2:9092", "t")
    assert a == spool_file(tmp_path, " KAFKA-2:9092, kafka-1:9092", "t")  # the same cluster
    assert a.parent == tmp_path and a.name.startswith("t-") and a.suffix == ".spool"
    assert a != spool_file(tmp_path, "kafka-1:9092", "t")
    assert a != spool_file(tmp_path, "kafka-1:9092,kafka-2:9092", "u")
    assert spool_file(tmp_path / "x.spool", "b:1", "t") == tmp_path / "x.spool"
    assert spool_file(None, "b:1", "t").parent.name == "agent-ledger"


def test_a_spool_never_gives_its_events_to_another_destination(spool_path: Path) -> None:
    spool = _open(spool_path, dest=destination("a:9092", "t"))
    spool.append(_msgs(3))
    spool.close()
    with pytest.raises(ConfigError, match=r"holds events for a:9092/t, not for b:9092/t"):
        _open(spool_path, dest=destination("b:9092", "t"))
    with pytest.raises(ConfigError, match="holds events for"):
        _open(spool_path, dest=destination("a:9092", "u"))
    # even with its header destroyed, the frames' own tags say whose they are
    data = bytearray(spool_path.read_bytes())
    data[2] ^= 0xFF
    spool_path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="another destination"):
        _open(spool_path, dest=destination("b:9092", "t"))
    mine = _open(spool_path, dest=destination("a:9092", "t"))
    assert _drain(mine) == _msgs(3)
    mine.close()


def test_a_spool_with_nothing_waiting_is_taken_over(spool_path: Path) -> None:
    spool = _open(spool_path, dest=destination("a:9092", "t"))
    spool.append(_msgs(3))
    _drain(spool)
    spool.close()
    spool_path.write_bytes(sp._file_header(3, destination("a:9092", "t")))  # left by a crash
    other = _open(spool_path, dest=destination("b:9092", "t"))
    other.append(_msgs(1))
    assert other.read(5).seqs == [3]
    other.close()


def test_a_spool_of_agent_ledger_0_1_is_converted(spool_path: Path) -> None:
    frames = []
    for key, value in _msgs(4):
        body = struct.pack(">H", len(key)) + key + value
        frames.append(struct.pack(">II", len(body), zlib.crc32(body)) + body)
    spool_path.write_bytes(b"".join(frames))
    pos = spool_path.with_name(spool_path.name + ".pos")
    pos.write_text(str(len(frames[0]) + 3))  # inside the second frame: it is sent again
    spool = _open(spool_path)
    assert _drain(spool) == _msgs(4)[1:]
    spool.close()


# -- damage ---------------------------------------------------------------------------------------


def _written(spool_path: Path, n: int) -> tuple[list[Message], list[tuple[int, int]]]:
    messages = _msgs(n)
    spool = _open(spool_path)
    spool.append(messages)
    spool.close()
    return messages, _layout(spool_path, messages)


def _damage(spool_path: Path, offset: int, data: bytes) -> None:
    raw = bytearray(spool_path.read_bytes())
    raw[offset : offset + len(data)] = data
    spool_path.write_bytes(bytes(raw))


def test_one_flipped_byte_costs_one_frame_reported_with_its_offset(spool_path: Path) -> None:
    """The issue's run: 5,000 frames, a byte of frame 100 flipped (in its body, then in its
    length field): 4,999 come back, the damaged one is in `.bad` and counted."""
    for where in (HEAD_SIZE + 2, 5):  # in the body; in the length field
        spool_path.unlink(missing_ok=True)
        spool_path.with_name(spool_path.name + ".bad").unlink(missing_ok=True)
        messages, spans = _written(spool_path, 5000)
        start, end = spans[100]
        raw = bytearray(spool_path.read_bytes())
        raw[start + where] ^= 0x01
        spool_path.write_bytes(bytes(raw))

        spool = _open(spool_path)
        assert (spool.damaged, spool.damaged_regions, spool.torn) == (1, 1, 0)
        assert _drain(spool, 1000) == messages[:100] + messages[101:]
        spool.close()
        (bad,) = _bad(spool_path)
        assert (bad["offset"], bad["length"], bad["lost_frames"]) == (start, end - start, 1)
        assert (bad["after_seq"], bad["before_seq"]) == (99, 101)


def test_zeroed_blocks_and_tails_are_skipped_with_a_warning(
    spool_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    messages, spans = _written(spool_path, 400)
    block = spans[100][0] + 7
    _damage(spool_path, block, bytes(4096))
    _damage(spool_path, spans[390][0], bytes(spool_path.stat().st_size - spans[390][0]))
    caplog.set_level(logging.WARNING, "ledger.stream.spool")

    spool = _open(spool_path)
    got = _drain(spool, 50)
    spool.close()

    survivors = [m for m, (a, b) in zip(messages, spans, strict=True)
                 if b <= block or (a >= block + 4096 and b <= spans[390][0])]  # fmt: skip
    assert got == survivors
    assert "zero-filled" in caplog.text
    reasons = [r["reason"] for r in _bad(spool_path)]
    assert reasons[-1] == "zero-filled" and len(reasons) == 2
    assert spool.damaged >= (400 - len(survivors)) - 10 + 1  # exact inside, >= 1 at the tail


def test_a_position_inside_a_frame_or_garbage_never_hangs_nor_skips(
    spool_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    messages, spans = _written(spool_path, 50)
    pos = spool_path.with_name(spool_path.name + ".pos")
    caplog.set_level(logging.WARNING, "ledger.stream.spool")
    for text in (str(spans[10][0] + 3), "garbage", "", "99999999999 1 deadbeef"):
        pos.write_text(text)
        spool = _open(spool_path)
        assert spool.read(1000).messages == messages  # all again: the ledger drops repeats
        spool.close()
    assert "damaged" in caplog.text
    # a well-formed position whose offset lies inside a frame: the seq decides
    body = f"20 {spans[10][0] + 3}"
    pos.write_text(f"{body} {zlib.crc32(body.encode()):08x}\n")
    spool = _open(spool_path)
    assert spool.read(1000).messages == messages[20:]
    spool.close()


def test_damage_while_the_spool_is_open_is_found_by_read(spool_path: Path) -> None:
    spool = _open(spool_path)
    messages = _msgs(30)
    spool.append(messages)
    spans = _layout(spool_path, messages)
    with spool_path.open("r+b") as fh:  # someone else writes into the file
        fh.seek(spans[12][0] + HEAD_SIZE)
        fh.write(b"\xff\xff")
    got = _drain(spool, 5)
    assert got == messages[:12] + messages[13:]
    assert spool.damaged == 1
    spool.close()


def test_a_torn_tail_is_kept_apart_and_the_spool_goes_on(spool_path: Path) -> None:
    _written(spool_path, 3)
    with spool_path.open("ab") as fh:
        fh.write(MAGIC + b"\x00\x00\x01")  # a crash in the middle of a write
    spool = _open(spool_path)
    assert (spool.torn, spool.damaged) == (1, 0)
    spool.append(_msgs(1, 3))
    assert _drain(spool) == _msgs(4)
    spool.close()
    assert [r["torn"] for r in _bad(spool_path)] == [True]


def test_frames_cut_out_whole_are_counted_by_the_gap_once(spool_path: Path) -> None:
    messages, spans = _written(spool_path, 30)
    raw = spool_path.read_bytes()
    spool_path.write_bytes(raw[: spans[10][0]] + raw[spans[13][0] :])  # frames 10-12 gone
    spool = _open(spool_path)
    assert (spool.damaged, spool.damaged_regions) == (3, 1)
    batch = spool.read(15)
    assert batch.messages == messages[:10] + messages[13:18]
    spool.advance(batch)
    spool.close()
    (bad,) = _bad(spool_path)
    assert (bad["length"], bad["lost_frames"], bad["after_seq"], bad["before_seq"]) == (0, 3, 9, 13)
    again = _open(spool_path)  # the gap was filled with a tombstone: not counted again
    assert again.damaged == 0 and _drain(again) == messages[18:]
    again.close()
    assert len(_bad(spool_path)) == 1


def test_a_damaged_header_loses_nothing(spool_path: Path) -> None:
    messages, _ = _written(spool_path, 20)
    _damage(spool_path, 0, b"XXXX")
    spool = _open(spool_path)
    assert _drain(spool) == messages
    spool.close()


# -- the campaign: random corruption, truncation and zeroing -------------------------------------


@dataclass(frozen=True)
class Hit:
    kind: str  # flip, zero, garbage, truncate
    at: float  # where, as a fraction of the file
    length: int
    byte: int


hits = st.builds(
    Hit,
    kind=st.sampled_from(["flip", "zero", "garbage", "truncate"]),
    at=st.floats(0.0, 1.0),
    length=st.integers(1, 600),
    byte=st.integers(1, 255),
)
payloads = st.lists(
    st.tuples(
        st.binary(max_size=12),
        st.one_of(st.binary(max_size=300), st.binary(max_size=40).map(lambda b: b + MAGIC + b)),
    ),
    min_size=1,
    max_size=60,
)


#: LEDGER_SPOOL_CAMPAIGN=5000 for a longer campaign than CI's
CAMPAIGN = int(os.environ.get("LEDGER_SPOOL_CAMPAIGN", "300"))


@settings(max_examples=CAMPAIGN, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    messages=payloads,
    damage=st.lists(hits, min_size=0, max_size=4),
    sent=st.integers(0, 60),
    pos_damage=st.sampled_from(["none", "garbage", "missing"]),
    cut=st.one_of(st.none(), st.tuples(st.integers(0, 59), st.integers(1, 5))),
)
def test_every_undamaged_frame_is_recovered_exactly_once_in_order(
    tmp_path_factory: pytest.TempPathFactory,
    messages: list[Message],
    damage: list[Hit],
    sent: int,
    pos_damage: str,
    cut: tuple[int, int] | None,
) -> None:
    path = tmp_path_factory.mktemp("campaign") / "s.spool"
    spool = _open(path)
    spool.append(messages)
    sent = min(sent, len(messages) - 1)  # all sent would leave no file to damage
    if sent:
        spool.advance(spool.read(sent))
    spool.close()
    spans = _layout(path, messages)
    before = path.read_bytes()
    raw = bytearray(before)
    for hit in damage:
        at = int(hit.at * len(raw))
        if hit.kind == "flip" and raw:
            raw[min(at, len(raw) - 1)] ^= hit.byte
        elif hit.kind == "zero":
            raw[at : at + hit.length] = bytes(len(raw[at : at + hit.length]))
        elif hit.kind == "garbage":
            chunk = bytes((hit.byte * (i + 7)) % 256 for i in range(hit.length))
            raw[at : at + hit.length] = chunk[: len(raw[at : at + hit.length])]
        elif hit.kind == "truncate":
            del raw[at:]
    intact = [raw[a:b] == before[a:b] and b <= len(raw) for a, b in spans]
    removed: list[int] = []
    if cut is not None and cut[0] < len(messages):  # whole frames cut out at their boundaries
        first, last = cut[0], min(cut[0] + cut[1], len(messages))
        removed = list(range(first, last))
        if spans[last - 1][1] <= len(raw):
            del raw[spans[first][0] : spans[last - 1][1]]
        else:
            removed = []
        for i in removed:
            intact[i] = False
    path.write_bytes(bytes(raw))
    pos = path.with_name(path.name + ".pos")
    if pos_damage == "garbage":
        pos.write_text("17 garbage")
    elif pos_damage == "missing":
        pos.unlink(missing_ok=True)
    resumed = sent if pos_damage == "none" else 0

    spool = _open(path)
    got = _drain(spool, 5)
    expected = [m for i, m in enumerate(messages) if intact[i] and i >= resumed]
    assert got == expected
    # Damage is never silent: every damaged frame after the resume point still on disk is
    # covered by a `.bad` record, and counted (exactly between good frames; torn tails apart).
    lost = [i for i in range(resumed, len(messages)) if not intact[i] and i not in removed
            and spans[i][0] < len(raw)]  # fmt: skip
    if not removed:  # offsets in `.bad` are those of the file as damaged (no cut before them)
        regions = [(r["offset"], r["offset"] + r["length"]) for r in _bad(path)]
        for i in lost:
            a, b = spans[i]
            assert any(lo < min(b, len(raw)) and hi > a for lo, hi in regions), (i, regions)
    if lost:
        assert spool.damaged + spool.torn >= 1
    # frames cut out whole are seen by the gap they leave: when an intact frame follows them
    # and something says where the sequence stood before them (an intact frame, the file
    # header, or `.pos`)
    if removed and removed[-1] >= resumed and any(intact[removed[-1] + 1 :]):
        header = raw[: spans[0][0]] == before[: spans[0][0]]
        known = header or (pos_damage == "none" and sent > 0) or any(intact[: removed[0]])
        if known:
            assert spool.damaged >= 1
    spool.close()
    # and recovery sticks: the next open finds nothing more to send, and no new damage
    again = _open(path)
    assert (again.pending, again.damaged_regions) == (0, 0)
    again.close()
