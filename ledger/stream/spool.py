"""The emitter's spool: an append-only log on local disk that every event passes through, and
where it waits while Kafka is unreachable. It survives crashes and damage, and belongs to one
destination (bootstrap servers + topic).

Why a log of its own, and why it checks everything: an event lost on the agent's side is lost
for good, so the spool must give back every frame it still holds intact, whatever happened to
the file (a crash mid-write, a flipped bit, a zeroed block, a stale or damaged `.pos`).

File format (integers big-endian). A header, then frames:

    header  b"LEDGSPL2" | u64 base seq | u16 n | destination (n bytes, UTF-8) | u32 crc32
    frame   magic b"\\xa7LSf" | u32 body length | u64 seq | u32 destination tag | u16 key length
            | u32 crc32(body) | u32 crc32(the 26 bytes before it) | body = key + value

Every frame carries a magic, so a reader that meets a bad byte finds the next frame again
(`bytes.find` of the magic, then both checksums); a sequence number, increasing over the whole
life of the file, so a gap between two good frames says how many were lost (even when whole
frames were cut out and no bad byte is left), a repeat is dropped, and how far re-sending got
(`<spool>.pos`: next seq, offset, crc) is a seq, never a byte position that could land inside
a frame; and a destination tag (crc32 of the destination), so a frame written for another
broker or topic is never sent to this one. A gap once reported is filled with a tombstone (an
empty frame, key length 0xFFFF) when the file is rewritten, so it is counted once. What no
check can see: whole frames cut off the very end of the file.
Cost: 30 bytes per frame (about 10 % of a typical 300-byte event) and two CRC-32s per frame
written and read, about 1.5 us; opening scans the whole file once (about 1 s for a full
256 MiB spool; an empty one is a header).

Recovery (on open, and on every read): a region that fails its checks is copied to
`<spool>.bad` (one JSON line: offset, length, reason, the seqs around it, how many frames it
lost, its bytes in base64) and skipped with a warning; a zero-filled region the same, without
its bytes. A frame cut short at the end of the file (a crash while writing it, so its `emit()`
never returned) is a *torn tail*: kept in `.bad` too, counted apart. Reading always ends: every
step moves forward by at least one byte. Once everything is re-sent the file is cut back to its
header; once a large prefix is sent, the rest is copied to a fresh file (atomic rename).

Durability: `append` hands frames to the OS (they survive the process being killed); `sync`
makes them survive a power cut (fsync), one fsync for every thread waiting at the time (group
commit). Exclusivity: an OS lock on `<spool>.lock` (fcntl on POSIX, msvcrt on Windows).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import mmap
import os
import struct
import sys
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import IO, Any

from ledger.errors import ConfigError, SpoolError, SpoolFullError

if sys.platform == "win32":
    import msvcrt

    def _try_lock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


__all__ = [
    "Batch",
    "Damage",
    "Message",
    "Spool",
    "destination",
    "frame_size",
    "spool_file",
]

log = logging.getLogger("ledger.stream.spool")

Message = tuple[bytes, bytes]
#: a replacement file and the state it starts with: path, frames start, size, base seq,
#: next seq, frames held
_Plan = tuple[Path, int, int, int, int, int]

FILE_MAGIC = b"LEDGSPL2"
MAGIC = b"\xa7LSf"
_FILE_HEAD = struct.Struct(">8sQH")  # magic, base seq, destination length
_HEAD = struct.Struct(">4sIQIHII")  # magic, length, seq, tag, key length, body crc, head crc
HEAD_SIZE = _HEAD.size  # 30
_CRC_SPAN = HEAD_SIZE - 4
_LEGACY = struct.Struct(">IIH")  # agent-ledger 0.1: length, crc, key length
#: a frame's body is at most this long (Kafka's own limit is far below); longer is damage
MAX_BODY = 64 << 20
#: the key length of a tombstone: an empty frame standing for a gap of seqs already reported
TOMB = 0xFFFF
#: once this much of the file is sent and the rest is all sent too, the file is cut back
TRUNCATE_AT = 1 << 20
#: once this much is sent and at most a quarter of that waits, the rest moves to a fresh file
COMPACT_AT = 16 << 20
_FSYNC = getattr(os, "fdatasync", os.fsync)


def destination(bootstrap_servers: str, topic: str) -> str:
    """The identity of a destination: its brokers (trimmed, lower-cased, sorted) and topic."""
    servers = sorted({s.strip().lower() for s in bootstrap_servers.split(",") if s.strip()})
    return f"{','.join(servers)}/{topic}"


def spool_file(base: str | os.PathLike[str] | None, bootstrap_servers: str, topic: str) -> Path:
    """Where the spool of a destination lives: `TOPIC-HASH.spool` (HASH from the brokers and
    the topic) inside `base` when it is a directory (or ends with a separator), in
    `~/.cache/agent-ledger/` (`$XDG_CACHE_HOME`) when `base` is None; `base` itself otherwise
    (that file then refuses events for another destination)."""
    name = f"{topic}-{sha256(destination(bootstrap_servers, topic).encode()).hexdigest()[:12]}"
    if base is None:
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(cache) / "agent-ledger" / f"{name}.spool"
    text = os.fspath(base)
    path = Path(text).expanduser()
    if text.endswith(("/", os.sep)) or path.is_dir():
        return path / f"{name}.spool"
    return path


def frame_size(key: bytes, value: bytes) -> int:
    """Bytes one message takes in the spool."""
    return HEAD_SIZE + len(key) + len(value)


def _tag(dest: str) -> int:
    return zlib.crc32(dest.encode())


def _file_header(base_seq: int, dest: str) -> bytes:
    raw = dest.encode()
    head = _FILE_HEAD.pack(FILE_MAGIC, base_seq, len(raw)) + raw
    return head + struct.pack(">I", zlib.crc32(head))


def _tombstone(seq: int, tag: int) -> bytes:
    head = _HEAD.pack(MAGIC, 0, seq, tag, TOMB, zlib.crc32(b""), 0)[:_CRC_SPAN]
    return head + struct.pack(">I", zlib.crc32(head))


def _frames(messages: Sequence[Message], first_seq: int, tag: int) -> bytes:
    parts: list[bytes] = []
    for seq, (key, value) in enumerate(messages, first_seq):
        body = key + value
        head = _HEAD.pack(MAGIC, len(body), seq, tag, len(key), zlib.crc32(body), 0)[:_CRC_SPAN]
        parts += (head, struct.pack(">I", zlib.crc32(head)), body)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class Damage:
    """A region of the spool that failed its checks (or a torn tail), as kept in `.bad`."""

    offset: int
    length: int
    reason: str
    after_seq: int | None  # the last good frame before it
    before_seq: int | None  # the first good frame after it
    torn: bool = False

    @property
    def lost(self) -> int:
        """Frames it destroyed: exact between two good frames, else at least one."""
        if self.torn:
            return 0
        if self.after_seq is not None and self.before_seq is not None:
            return max(self.before_seq - self.after_seq - 1, 0)
        return 1


@dataclass(slots=True)
class Batch:
    """What one `read` found: messages in order, their seqs, and where reading got to."""

    messages: list[Message] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    position: int = 0
    next_seq: int = 0
    damage: list[Damage] = field(default_factory=list)


@dataclass(slots=True)
class _Scan:
    frames: list[tuple[int, int, int, int]]  # offset, end, seq, key length
    damage: list[Damage]
    end: int


def _check(buf: Any, pos: int, end: int, tag: int | None) -> tuple[int, int, int, int] | str:
    """(frame end, seq, tag, key length) of a valid frame at `pos`, else what is wrong."""
    if end - pos < HEAD_SIZE:
        return "short"
    magic, length, seq, ftag, klen, bcrc, hcrc = _HEAD.unpack_from(buf, pos)
    if magic != MAGIC:
        return "no frame magic"
    if zlib.crc32(buf[pos : pos + _CRC_SPAN]) != hcrc or length > MAX_BODY:
        return "frame header fails its checksum"
    if klen > length and not (klen == TOMB and length == 0):
        return "frame header fails its checksum"
    fend = pos + HEAD_SIZE + length
    if fend > end:
        return "cut"
    if zlib.crc32(buf[pos + HEAD_SIZE : fend]) != bcrc:
        return "frame body fails its checksum"
    if tag is not None and ftag != tag:
        return "frame for another destination"
    return fend, seq, ftag, klen


def _scan(buf: Any, pos: int, end: int, tag: int | None, last_seq: int | None,
          limit: int) -> _Scan:  # fmt: skip
    """Good frames from `pos` on (at most `limit` of events), and the damaged regions between them;
    `last_seq` is the seq of the good frame before `pos` (None: unknown)."""
    frames: list[tuple[int, int, int, int]] = []
    damage: list[Damage] = []
    bad: tuple[int, str, int | None] | None = None  # start, reason, first cut frame
    count = 0  # frames of events (tombstones aside), up to `limit`
    while pos < end and count < limit:
        got = _check(buf, pos, end, tag)
        if isinstance(got, tuple) and (last_seq is None or got[1] > last_seq):
            if bad is not None:
                damage.append(_region(buf, bad[0], pos, bad[1], last_seq, got[1]))
                bad = None
            elif last_seq is not None and got[1] > last_seq + 1 and got[3] != TOMB:
                # whole frames cut out (a tombstone stands for a gap reported before)
                damage.append(Damage(pos, 0, "frames missing (a gap in the sequence)",
                                     last_seq, got[1]))  # fmt: skip
            frames.append((pos, got[0], got[1], got[3]))
            count += got[3] != TOMB
            last_seq, pos = got[1], got[0]
            continue
        if isinstance(got, tuple):
            got = f"repeated frame (seq {got[1]} after {last_seq})"
        if bad is None:
            bad = (pos, got, None)
        if got == "cut" and bad[2] is None:
            bad = (bad[0], bad[1], pos)
        nxt = buf.find(MAGIC, pos + 1, end)
        pos = end if nxt < 0 else nxt
    if bad is not None:  # the region runs to the end of the file
        start, reason, cut = bad
        tail = buf[start:end] if cut is None and end - start < HEAD_SIZE else b""
        if cut is None and tail and (tail.startswith(MAGIC) or MAGIC.startswith(tail)):
            cut = start  # a frame header cut short
        if cut is not None:
            if cut > start:
                damage.append(_region(buf, start, cut, reason, last_seq, None))
            damage.append(Damage(cut, end - cut, "torn tail (a write cut short)", last_seq,
                                 None, torn=True))  # fmt: skip
        else:
            damage.append(_region(buf, start, end, reason, last_seq, None))
    return _Scan(frames, damage, pos)


def _region(buf: Any, start: int, end: int, reason: str, after: int | None,
            before: int | None) -> Damage:  # fmt: skip
    if reason == "cut":
        reason = "frame length runs past the next frame"
    if buf[start:end].count(0) == end - start:
        reason = "zero-filled"
    return Damage(start, end - start, reason, after, before)


class Spool:
    """A thread-safe, size-limited, append-only log of (key, value) messages for one
    destination, read in order; see the module docstring for the format and recovery."""

    def __init__(
        self, path: str | os.PathLike[str], max_bytes: int, *, destination: str = ""
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.destination = destination
        self.tag = _tag(destination)
        self.pos_path = self.path.with_name(self.path.name + ".pos")
        self.bad_path = self.path.with_name(self.path.name + ".bad")
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock = threading.Lock()
        self._sync_cond = threading.Condition()
        self._syncing = False
        self._closed = False
        self._reserved = 0
        #: damage found since open: regions, frames lost, bytes, torn tails
        self.damaged_regions = self.damaged = self.damaged_bytes = self.torn = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fh = self._acquire()
        try:
            self._open()
        except BaseException:
            self._lock_fh.close()
            raise

    # -- opening ------------------------------------------------------------------------

    def _acquire(self) -> IO[bytes]:
        for _ in range(10):
            try:
                fh = open(self._lock_path, "a+b")  # noqa: SIM115
            except OSError as exc:
                raise ConfigError(f"cannot open spool {self.path}: {exc.strerror}") from exc
            try:
                _try_lock(fh.fileno())
            except OSError as exc:
                fh.close()
                raise ConfigError(f"spool {self.path} is in use by another emitter") from exc
            try:  # the lock file may have been removed by its last holder meanwhile
                if os.path.samestat(os.fstat(fh.fileno()), os.stat(self._lock_path)):
                    return fh
            except OSError:
                pass
            fh.close()
        raise ConfigError(f"spool {self.path}: cannot take its lock file {self._lock_path}")

    def _open(self) -> None:
        try:
            self._fh = open(self.path, "r+b" if self.path.exists() else "w+b")  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"cannot open spool {self.path}: {exc.strerror}") from exc
        size = os.fstat(self._fh.fileno()).st_size
        pos_seq, pos_note = self._read_pos()
        if pos_note:
            log.warning("spool %s: %s", self.path, pos_note)
        if size == 0:
            self._fresh(pos_seq or 0)
            return
        with mmap.mmap(self._fh.fileno(), size, access=mmap.ACCESS_READ) as mm:
            header = self._parse_header(mm, size)
            plan: _Plan | None
            if header is None and self._legacy(mm, size):
                plan = self._convert_legacy(mm, size)
            else:
                plan = self._recover(mm, size, header, pos_seq)
        if plan is not None:  # the file is replaced only once it is no longer mapped
            self._swap(*plan)

    def _fresh(self, base_seq: int) -> None:
        head = _file_header(base_seq, self.destination)
        self._fh.seek(0)
        self._fh.truncate(0)
        self._fh.write(head)
        self._fh.flush()
        _FSYNC(self._fh.fileno())
        _fsync_dir(self.path.parent)
        self._set_state(len(head), len(head), base_seq, base_seq, 0)

    def _set_state(self, start: int, size: int, pos_seq: int, next_seq: int, frames: int) -> None:
        self._start = self._pos = start  # where frames begin; where re-sending resumes
        self._size = size
        self._pos_seq = pos_seq  # the seq re-sending expects next
        self._next_seq = next_seq  # the seq the next append gets
        self._synced_seq = next_seq - 1
        self._pending = frames

    def _parse_header(self, mm: Any, size: int) -> tuple[int, int, str] | None:
        """(frames start, base seq, destination) of an intact header, else None."""
        if size < _FILE_HEAD.size + 4:
            return None
        magic, base, n = _FILE_HEAD.unpack_from(mm, 0)
        end = _FILE_HEAD.size + n
        if magic != FILE_MAGIC or end + 4 > size:
            return None
        (crc,) = struct.unpack_from(">I", mm, end)
        if zlib.crc32(mm[:end]) != crc:
            return None
        try:
            return end + 4, base, mm[_FILE_HEAD.size : end].decode()
        except UnicodeDecodeError:
            return None

    def _refuse(self, theirs: str) -> ConfigError:
        return ConfigError(
            f"spool {self.path} holds events for {theirs}, not for {self.destination}: they "
            "are never sent elsewhere. Send them to their destination (`ledger emit --spool "
            "PATH -b SERVERS --topic TOPIC`), or give this emitter another spool"
        )

    def _recover(self, mm: Any, size: int, header: tuple[int, int, str] | None,
                 pos_seq: int | None) -> _Plan | None:  # fmt: skip
        """Check every frame; keep what was not sent yet; move the damage to `.bad`."""
        last: int | None
        if header is not None:
            start, base, theirs = header
            if theirs != self.destination:
                last = None if pos_seq is None else pos_seq - 1
                if _scan(mm, start, size, None, last, 1).frames:
                    raise self._refuse(theirs)
                log.info("spool %s: taken over for %s (nothing waited in it for %s)",
                         self.path, self.destination, theirs)  # fmt: skip
                self._fresh(max(base, pos_seq or 0))
                return None
            last = base - 1
        else:
            first = mm.find(MAGIC, 0, size)
            while first >= 0:  # whose frames these are: the first good one says
                got = _check(mm, first, size, None)
                if isinstance(got, tuple):
                    if got[2] != self.tag:
                        raise self._refuse("another destination (its header is damaged)")
                    break
                first = mm.find(MAGIC, first + 1, size)
            log.warning("spool %s: its header is damaged; its frames are recovered by their own "
                        "checks", self.path)  # fmt: skip
            start, base, last = 0, pos_seq or 0, None
        found = _scan(mm, start, size, self.tag, last, 1 << 62)
        frames = found.frames
        # below the recorded seq everything was sent: re-sending resumes after the last of those
        sent = 0
        if pos_seq is not None:
            while sent < len(frames) and frames[sent][2] < pos_seq:
                sent += 1
        resume_at = frames[sent - 1][1] if sent else start
        keep = frames[sent:]
        next_seq = max([base, pos_seq or 0] + [f[2] + 1 for f in frames[-1:]])
        first_seq = keep[0][2] if keep else next_seq
        resume_seq = first_seq if pos_seq is None else min(pos_seq, first_seq)
        damage = [  # frames below the recorded seq were sent: only those after it are lost
            d if pos_seq is None or (d.after_seq is not None and d.after_seq >= pos_seq - 1)
            else replace(d, after_seq=pos_seq - 1)
            for d in found.damage
            if d.offset >= resume_at
        ]  # fmt: skip
        damage = [d for d in damage if d.length or d.lost]  # a gap among sent frames: none
        if header is None and damage and damage[0].offset == 0 and damage[0].after_seq is None:
            # Before the first good frame: the damaged header (its length is known: it names
            # this destination); past it, frames were destroyed too, how many unknown unless
            # `.pos` said where sending was (then after_seq is set above).
            first, head_len = damage[0].before_seq, len(_file_header(0, self.destination))
            if damage[0].length <= head_len:
                damage[0] = replace(damage[0], reason="damaged file header", torn=False,
                                    after_seq=None if first is None else first - 1)  # fmt: skip
            else:
                damage[0] = replace(damage[0], reason="damaged file header and frames",
                                    torn=False)  # fmt: skip
        if damage:
            self._quarantine(mm, damage)
        events = sum(1 for f in keep if f[3] != TOMB)
        if damage or header is None or resume_at - start >= TRUNCATE_AT:
            # a gap already reported gets a tombstone, so no later read counts it again
            gaps = {d.before_seq for d in damage
                    if d.lost and d.before_seq is not None and d.after_seq is not None}  # fmt: skip
            parts = [_file_header(resume_seq, self.destination)]
            for offset, end, seq, _ in keep:
                if seq in gaps:
                    parts.append(_tombstone(seq - 1, self.tag))
                parts.append(mm[offset:end])
            return self._write_tmp_bytes(parts, resume_seq, next_seq, events)
        self._set_state(start, size, resume_seq, next_seq, events)
        self._pos = resume_at
        return None

    def _write_tmp(self, mm: Any, spans: list[tuple[int, int]], base_seq: int, next_seq: int,
                   frames: int) -> _Plan:  # fmt: skip
        """A new file beside the spool: a header and `spans` of the mapped file, fsynced."""
        return self._write_tmp_bytes([_file_header(base_seq, self.destination)]
                                     + [mm[a:b] for a, b in spans],
                                     base_seq, next_seq, frames)  # fmt: skip

    def _write_tmp_bytes(self, parts: list[bytes], base_seq: int, next_seq: int,
                         frames: int) -> _Plan:  # fmt: skip
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as out:
            out.writelines(parts)
            out.flush()
            _FSYNC(out.fileno())
            size = out.tell()
        return tmp, len(parts[0]), size, base_seq, next_seq, frames

    def _swap(self, tmp: Path, start: int, size: int, base_seq: int, next_seq: int,
              frames: int) -> None:  # fmt: skip
        """Put the new file in the spool's place (atomic rename) and carry on from it."""
        self._fh.close()
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        self._fh = open(self.path, "r+b")  # noqa: SIM115
        self._set_state(start, size, base_seq, next_seq, frames)
        self._write_pos()

    def _legacy(self, mm: Any, size: int) -> bool:
        """A spool of agent-ledger 0.1 (no header, frames `u32 length | u32 crc | u16 key
        length | key | value`) whose first frame is intact."""
        if size < _LEGACY.size:
            return False
        length, crc, klen = _LEGACY.unpack_from(mm, 0)
        if length < 2 or klen > length - 2 or 8 + length > size:
            return False
        return bool(zlib.crc32(mm[8 : 8 + length]) == crc)

    def _convert_legacy(self, mm: Any, size: int) -> _Plan:
        """Rewrite a 0.1 spool in this format, its events taken as this destination's."""
        try:
            sent = int(self.pos_path.read_text().strip() or 0)
        except (OSError, ValueError):
            sent = 0
        messages: list[Message] = []
        pos = 0
        while pos + _LEGACY.size <= size:
            length, crc, klen = _LEGACY.unpack_from(mm, pos)
            end = pos + 8 + length
            if length < 2 or end > size or klen > length - 2:
                break
            if zlib.crc32(mm[pos + 8 : end]) != crc:
                break
            if end > sent:  # a position inside a frame re-sends that frame
                messages.append((mm[pos + 10 : pos + 10 + klen], mm[pos + 10 + klen : end]))
            pos = end
        if pos < size:
            self._quarantine(mm, [Damage(pos, size - pos, "agent-ledger 0.1 frame fails its "
                                         "checksum", None, None)])  # fmt: skip
        log.warning("spool %s: written by agent-ledger 0.1, which recorded no destination; its "
                    "%d unsent events are taken as events for %s", self.path, len(messages),
                    self.destination)  # fmt: skip
        with contextlib.suppress(FileNotFoundError):
            self.pos_path.unlink()
        parts = [_file_header(0, self.destination), _frames(messages, 0, self.tag)]
        return self._write_tmp_bytes(parts, 0, len(messages), len(messages))

    # -- the position file ----------------------------------------------------------------

    def _read_pos(self) -> tuple[int | None, str]:
        """(next unsent seq or None, a warning to give) from `.pos`."""
        try:
            text = self.pos_path.read_text()
        except FileNotFoundError:
            return None, ""
        except OSError as exc:
            return None, f"cannot read {self.pos_path.name} ({exc.strerror}): re-sending it all"
        parts = text.split()
        if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
            body = f"{parts[0]} {parts[1]}"
            if f"{zlib.crc32(body.encode()):08x}" == parts[2]:
                return int(parts[0]), ""
        return None, (f"{self.pos_path.name} is damaged ({text[:40]!r}): re-sending every "
                      "frame (the ledger drops the repeats)")  # fmt: skip

    def _write_pos(self) -> None:
        body = f"{self._pos_seq} {self._pos}"
        tmp = self.pos_path.with_name(self.pos_path.name + ".tmp")
        try:
            tmp.write_text(f"{body} {zlib.crc32(body.encode()):08x}\n")
            os.replace(tmp, self.pos_path)
        except OSError as exc:  # only costs repeats after a restart
            log.warning("spool %s: cannot record the position: %s", self.path, exc)

    # -- damage -----------------------------------------------------------------------------

    def _quarantine(self, mm: Any, damage: Sequence[Damage]) -> None:
        """Copy each damaged region to `.bad` with its offset, count it and warn."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        lines = []
        for d in damage:
            data = mm[d.offset : d.offset + d.length]
            record = {
                "spool": str(self.path), "found_at": now, "offset": d.offset,
                "length": d.length, "reason": d.reason, "after_seq": d.after_seq,
                "before_seq": d.before_seq, "lost_frames": d.lost, "torn": d.torn,
                "data": "" if d.reason == "zero-filled" else base64.b64encode(data).decode(),
            }  # fmt: skip
            lines.append(json.dumps(record) + "\n")
            if d.torn:
                self.torn += 1
                log.warning("spool %s: torn tail of %d bytes at offset %d (a write cut short "
                            "by a crash; that emit() never returned), moved to %s", self.path,
                            d.length, d.offset, self.bad_path)  # fmt: skip
            else:
                self.damaged_regions += 1
                self.damaged += d.lost
                self.damaged_bytes += d.length
                lost = (f"{d.lost} frame(s) lost" if d.before_seq is not None
                        and d.after_seq is not None else "at least 1 frame lost")  # fmt: skip
                log.warning("spool %s: %d damaged bytes at offset %d (%s; %s), moved to %s",
                            self.path, d.length, d.offset, d.reason, lost,
                            self.bad_path)  # fmt: skip
        try:
            with open(self.bad_path, "a", encoding="utf-8") as out:
                out.writelines(lines)
                out.flush()
                _FSYNC(out.fileno())
        except OSError as exc:
            raise SpoolError(f"spool {self.path}: cannot write {self.bad_path}: {exc}") from exc

    # -- state ------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Bytes of frames on disk (sent and unsent; the header not counted)."""
        return self._size - self._start

    @property
    def pending_bytes(self) -> int:
        """Bytes of frames not yet re-sent (what `max_bytes` bounds)."""
        return self._size - self._pos

    @property
    def pending(self) -> int:
        """Frames not yet re-sent."""
        return self._pending

    @property
    def unsent(self) -> bool:
        return self._pos < self._size

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def reserve(self, nbytes: int) -> None:
        """Hold room for `nbytes` of frames to come (`append(..., reserved=nbytes)`), or raise
        `SpoolFullError`: what is accepted is never refused later for want of room."""
        with self._lock:
            self._room(nbytes, 0)
            self._reserved += nbytes

    def release(self, nbytes: int) -> None:
        with self._lock:
            self._reserved = max(self._reserved - nbytes, 0)

    def _room(self, nbytes: int, reserved: int) -> None:
        held = self._size - self._pos + self._reserved - reserved
        if held + nbytes > self.max_bytes:
            raise SpoolFullError(
                f"spool {self.path} is full ({held:,} of {self.max_bytes:,} bytes wait for "
                f"Kafka {self.destination}): event(s) not accepted"
            )

    # -- writing ----------------------------------------------------------------------------

    def append(self, messages: Sequence[Message], reserved: int = 0) -> int:
        """Write all messages or none (to the OS: they survive the process, not a power cut
        until `sync`); raise `SpoolFullError` rather than drop any. Returns the last seq."""
        if not messages:
            return self._next_seq - 1
        with self._lock:
            if self._closed:
                raise SpoolError(f"spool {self.path} is closed")
            blob = _frames(messages, self._next_seq, self.tag)
            self._room(len(blob), reserved)
            try:
                self._fh.seek(self._size)
                self._fh.write(blob)
                self._fh.flush()
            except OSError as exc:
                with contextlib.suppress(OSError):
                    self._fh.truncate(self._size)
                raise SpoolError(f"cannot write spool {self.path}: {exc}") from exc
            self._reserved = max(self._reserved - reserved, 0)
            self._size += len(blob)
            self._pending += len(messages)
            self._next_seq += len(messages)
            return self._next_seq - 1

    def sync(self, seq: int | None = None) -> None:
        """Return once every frame up to `seq` (default: all written) is on stable storage.
        One fsync serves every thread waiting at the time (group commit)."""
        target_seq = self._next_seq - 1 if seq is None else seq
        with self._sync_cond:
            while self._synced_seq < target_seq and self._syncing:
                self._sync_cond.wait()
            if self._synced_seq >= target_seq:
                return
            self._syncing = True
        synced = None
        try:
            with self._lock:
                written, fd = self._next_seq - 1, self._fh.fileno()
            _FSYNC(fd)
            synced = written
        except (OSError, ValueError) as exc:
            raise SpoolError(f"cannot fsync spool {self.path}: {exc}") from exc
        finally:
            with self._sync_cond:
                if synced is not None:
                    self._synced_seq = max(self._synced_seq, synced)
                self._syncing = False
                self._sync_cond.notify_all()

    # -- reading ----------------------------------------------------------------------------

    def read(self, max_messages: int) -> Batch:
        """The next unsent messages in order (checked; damage found on the way is moved to
        `.bad` and skipped), and where reading got to (for `advance`)."""
        with self._lock:
            pos, size, last = self._pos, self._size, self._pos_seq - 1
            fd = self._fh.fileno()
        batch = Batch(position=pos, next_seq=last + 1)
        if pos >= size:
            return batch
        with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as mm:
            found = _scan(mm, pos, size, self.tag, last, max_messages)
            for offset, end, seq, klen in found.frames:
                if klen == TOMB:
                    continue
                batch.messages.append((mm[offset + HEAD_SIZE : offset + HEAD_SIZE + klen],
                                       mm[offset + HEAD_SIZE + klen : end]))  # fmt: skip
                batch.seqs.append(seq)
            if found.damage:
                self._quarantine(mm, found.damage)
        batch.damage = found.damage
        batch.position = found.end
        batch.next_seq = found.frames[-1][2] + 1 if found.frames else last + 1
        return batch

    def advance(self, batch: Batch) -> None:
        """Mark everything `batch` covered as sent; cut the file back once all is sent."""
        with self._lock:
            self._pos = batch.position
            self._pos_seq = max(self._pos_seq, batch.next_seq)
            self._pending -= len(batch.messages)
            drained = self._pos >= self._size
            sent = self._pos - self._start
            small = self._size - self._pos <= sent // 4
        if drained and sent >= TRUNCATE_AT:
            self._cut(compact=False)
        elif sent >= COMPACT_AT and small:
            self._cut(compact=True)
        else:
            self._write_pos()

    def _cut(self, compact: bool) -> None:
        """Drop the sent prefix: cut the file back to a new header (all sent), or copy what
        waits to a fresh file (atomic rename). Waits for any fsync under way."""
        with self._sync_cond:
            while self._syncing:
                self._sync_cond.wait()
            self._syncing = True
        try:
            with self._lock:
                if not compact and self._pos >= self._size:
                    head = _file_header(self._pos_seq, self.destination)
                    self._fh.truncate(0)  # first: a crash now leaves an empty file, not
                    self._fh.seek(0)  # a new header before frames it says were sent
                    self._fh.write(head)
                    self._fh.flush()
                    _FSYNC(self._fh.fileno())
                    self._set_state(len(head), len(head), self._pos_seq, self._next_seq, 0)
                else:
                    pending, pos, size = self._pending, self._pos, self._size
                    with mmap.mmap(self._fh.fileno(), size, access=mmap.ACCESS_READ) as mm:
                        plan = self._write_tmp(mm, [(pos, size)], self._pos_seq,
                                               self._next_seq, pending)  # fmt: skip
                    self._swap(*plan)
                self._write_pos()
            done = True
        except OSError as exc:
            done = False
            raise SpoolError(f"cannot cut back spool {self.path}: {exc}") from exc
        finally:
            with self._sync_cond:
                if done:  # the new file was fsynced whole
                    self._synced_seq = self._next_seq - 1
                self._syncing = False
                self._sync_cond.notify_all()

    def close(self) -> None:
        """Sync and close; an empty spool leaves no files behind (but `.bad`)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._fh.flush()
                _FSYNC(self._fh.fileno())
            except (OSError, ValueError) as exc:
                log.warning("spool %s: fsync on close: %s", self.path, exc)
            empty = self._pos >= self._size
            self._fh.close()
        if empty:
            for path in (self.path, self.pos_path, self._lock_path):
                with contextlib.suppress(OSError):
                    path.unlink()
        self._lock_fh.close()


def _fsync_dir(directory: Path) -> None:
    """Make a created or renamed file's name durable (POSIX; Windows has no directory fds)."""
    if sys.platform == "win32":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
