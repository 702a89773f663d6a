"""The emitter's append-only spool: events wait here, on local disk, while Kafka is unreachable.

File format: a sequence of frames `u32 length | u32 crc32 | u16 key length | key | value`.
A torn frame at the tail (a crash mid-write) is ignored. How far re-sending got is kept in a
sidecar `<spool>.pos`, so a restart resumes there; re-sending a frame twice is harmless (the
ledger dedupes by event_id). Once everything is re-sent both files are truncated.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path

from ledger.errors import ConfigError, SpoolFullError

__all__ = ["Message", "Spool"]

_FRAME = struct.Struct(">IIH")
Message = tuple[bytes, bytes]


class Spool:
    """A thread-safe, size-limited, append-only file of (key, value) messages, read in order."""

    def __init__(self, path: str | os.PathLike[str], max_bytes: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._fh = open(self.path, "a+b")  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"cannot open spool {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._fh.close()
            raise ConfigError(f"spool {self.path} is in use by another emitter") from exc
        self._pos_path = self.path.with_name(self.path.name + ".pos")
        self._size = self._valid_size()
        self._pos = min(self._read_pos(), self._size)

    def _read_pos(self) -> int:
        try:
            return int(self._pos_path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _valid_size(self) -> int:
        """Length of the intact prefix; a torn tail frame is cut off."""
        self._fh.seek(0)
        data = self._fh.read()
        pos = 0
        while pos + _FRAME.size <= len(data):
            length, crc, _ = _FRAME.unpack_from(data, pos)
            end = pos + 8 + length
            if end > len(data) or zlib.crc32(data[pos + 8 : end]) != crc:
                break
            pos = end
        if pos != len(data):
            self._fh.truncate(pos)
        return pos

    @property
    def size(self) -> int:
        """Bytes on disk (sent and unsent)."""
        return self._size

    @property
    def pending_bytes(self) -> int:
        return self._size - self._pos

    @property
    def unsent(self) -> bool:
        return self._pos < self._size

    def append(self, messages: Sequence[Message]) -> None:
        """Write all messages or none; raise `SpoolFullError` rather than drop any."""
        if not messages:
            return
        parts = []
        for key, value in messages:
            body = struct.pack(">H", len(key)) + key + value
            parts.append(struct.pack(">II", len(body), zlib.crc32(body)) + body)
        blob = b"".join(parts)
        with self._lock:
            if self._size + len(blob) > self.max_bytes:
                raise SpoolFullError(
                    f"spool {self.path} is full ({self._size:,} of {self.max_bytes:,} bytes) and "
                    f"Kafka is unreachable: {len(messages)} event(s) not accepted"
                )
            self._fh.seek(0, os.SEEK_END)
            self._fh.write(blob)
            self._fh.flush()
            self._size += len(blob)

    def read(self, max_messages: int) -> tuple[list[Message], int]:
        """The next unsent messages in order, and the position after them (for `advance`)."""
        with self._lock:
            self._fh.seek(self._pos)
            data = self._fh.read(min(self._size - self._pos, 8 * 1024 * 1024))
        out: list[Message] = []
        pos = 0
        while len(out) < max_messages and pos + _FRAME.size <= len(data):
            length, _crc, klen = _FRAME.unpack_from(data, pos)
            end = pos + 8 + length
            if end > len(data):
                break
            key_end = pos + _FRAME.size + klen
            out.append((data[pos + _FRAME.size : key_end], data[key_end:end]))
            pos = end
        return out, self._pos + pos

    def advance(self, position: int) -> None:
        """Mark everything before `position` as sent; empty the files once all is sent."""
        with self._lock:
            self._pos = position
            if self._pos >= self._size:
                self._fh.truncate(0)
                self._size = self._pos = 0
                with contextlib.suppress(FileNotFoundError):
                    self._pos_path.unlink()
                return
        tmp = self._pos_path.with_name(self._pos_path.name + ".tmp")
        tmp.write_text(str(position))
        os.replace(tmp, self._pos_path)

    def close(self) -> None:
        with self._lock:
            if self._fh.closed:
                return
            self._fh.flush()
            with contextlib.suppress(OSError):
                os.fsync(self._fh.fileno())
            empty = self._size == 0
            self._fh.close()
        if empty:
            with contextlib.suppress(OSError):
                self.path.unlink()
