"""Decoding on the second core: a worker process turns message values into columns.

Decoding is pure Python and the consumer's largest cost; DuckDB, the chain and Kafka keep the
consumer's own process busy. A worker decodes batch k+1 while the consumer appends batch k.
It holds no state that matters: the ledger's transaction stays in the consumer, and if the
worker dies the consumer decodes in-process from then on.

The worker is `python -m ledger.stream.workers`, talking length-prefixed pickles over its stdin and
stdout. Not `multiprocessing`: its spawn mode re-imports the caller's main module, which would
re-run any unguarded script that embeds a consumer. The worker exits when its stdin closes or
its parent dies (Linux PR_SET_PDEATHSIG), and ignores Ctrl-C, which the consumer handles by
finishing its batch. Schema ids the consumer resolves while it runs (`ledger.stream.registry`)
reach the worker before the first batch that may name them (`("ids", Codec.id_state())`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from ledger.contract.batch import Decoded, decode_values
from ledger.contract.codec import Codec
from ledger.contract.fastdecode import BatchDecoder
from ledger.stream._proc import die_with_parent, tune_process

__all__ = ["DecodeWorkers", "WorkerLost", "default_workers", "main"]

log = logging.getLogger("ledger.consume")

_FRAME = struct.Struct(">Q")
#: this module's importable name, whatever package it was moved into (`python -m` runs it)
_MODULE = __spec__.name if __spec__ is not None else "ledger.stream.workers"


def default_workers() -> int:
    """One decode worker where there is a second core to run it; none on a single core."""
    return 1 if (os.cpu_count() or 1) >= 2 else 0


class WorkerLost(Exception):
    """The worker process exited, or answered with an error instead of a decoded batch."""


def _send(stream: IO[bytes], obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_FRAME.pack(len(data)))
    stream.write(data)
    stream.flush()


def _recv(stream: IO[bytes]) -> Any:
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        raise EOFError("stream closed")
    (size,) = _FRAME.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("stream closed mid-message")
    return pickle.loads(data)  # noqa: S301 (our own child process, over its private pipe)


class _Worker:
    """One decode process; `call` is blocking and runs on the owner's single I/O thread."""

    def __init__(self, codec: Codec) -> None:
        # the package this process runs, even if it is not installed where the child looks
        here = str(Path(__file__).resolve().parents[_MODULE.count(".")])
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": here + (os.pathsep + path if path else "")}
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-P", "-m", _MODULE],  # -P: not the caller's cwd first on the path
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._errors,
            close_fds=True,
            env=env,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in, self._out = self.proc.stdin, self.proc.stdout
        self.codec = codec
        self._ids_version = codec.ids_version
        try:
            self.pid = int(self._call((os.getpid(), codec.extra_schemas, codec.id_state())))
        except WorkerLost:
            self.stop(timeout=1.0)
            raise

    def _call(self, request: object) -> Any:
        try:
            _send(self._in, request)
            kind, answer = _recv(self._out)
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            raise WorkerLost(f"decode worker stopped answering ({self._last_words(exc)})") from exc
        if kind != "ok":
            raise WorkerLost(f"decode worker failed: {answer}")
        return answer

    def _last_words(self, exc: BaseException) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(1.0)
        code = self.proc.poll()
        said = ""
        with contextlib.suppress(OSError):
            self._errors.seek(0)
            lines = self._errors.read().decode(errors="replace").strip().splitlines()
            said = lines[-1] if lines else ""
        if code is None:
            return f"{type(exc).__name__}: {exc}"
        if code < 0:
            return f"killed by signal {-code}" + (f": {said}" if said else "")
        return f"exit code {code}" + (f": {said}" if said else "")

    def decode(self, values: Sequence[bytes | None]) -> Decoded:
        version = self.codec.ids_version
        if version != self._ids_version:  # ids resolved (or refused) since: the worker first
            self._call(("ids", self.codec.id_state()))
            self._ids_version = version
        decoded: Decoded = self._call(values)
        return decoded

    def stop(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(OSError):
            self._in.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):
            self._out.close()
        self._errors.close()


class DecodeWorkers:
    """`submit(values)` decodes on a worker process, or in-process when there is none (or it
    died). One worker: batches are decoded in order, one ahead of the append."""

    def __init__(self, codec: Codec, processes: int) -> None:
        self.codec = codec
        self._local = BatchDecoder(codec)
        self._enabled = processes > 0
        self._worker: _Worker | None = None
        self._io = ThreadPoolExecutor(1, thread_name_prefix="ledger-decode-io")

    @property
    def in_process(self) -> bool:
        return not self._enabled

    def _ensure(self) -> _Worker:
        if self._worker is None:
            self._worker = _Worker(self.codec)
            log.info("decoding on worker process %d", self._worker.pid)
        return self._worker

    def start(self) -> asyncio.Future[object] | None:
        """Start the worker now (it takes a moment to import), not on the first batch."""
        if not self._enabled:
            return None
        return asyncio.get_running_loop().run_in_executor(self._io, self._start_quietly)

    def _start_quietly(self) -> object:
        try:
            return self._ensure().pid
        except (OSError, WorkerLost) as exc:
            self.lost(exc)
            return None

    def submit(self, values: Sequence[bytes | None]) -> asyncio.Future[Decoded]:
        """Decoding of `values` under way; in-process decoding is already done on return."""
        loop = asyncio.get_running_loop()
        if self._enabled:
            return loop.run_in_executor(self._io, self._decode_remote, values)
        done: asyncio.Future[Decoded] = loop.create_future()
        done.set_result(decode_values(values, self._local))
        return done

    def _decode_remote(self, values: Sequence[bytes | None]) -> Decoded:
        if self._enabled:
            try:
                return self._ensure().decode(values)
            except (OSError, WorkerLost) as exc:
                self.lost(exc)
        return decode_values(values, self._local)

    def lost(self, exc: BaseException) -> None:
        """Decode in-process from now on (the consumer keeps going; it only gets slower)."""
        if self._enabled:
            log.warning("%s; decoding in the consumer process from now on", exc)
        self._enabled = False
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop(timeout=1.0)

    def close(self) -> None:
        """Stop the worker (EOF on its stdin), then the thread that started it: the worker's
        death signal is tied to that thread."""
        self._io.submit(self._stop_worker).result()
        self._io.shutdown(wait=True)

    def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop()


def main() -> None:
    """The worker process: a decoder serving one batch at a time until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not corrupt replies
    try:
        parent, extra_schemas, ids = _recv(requests)
    except EOFError:
        return
    die_with_parent(signal.SIGKILL, parent)
    tune_process()
    codec = Codec(extra_schemas)
    codec.load_id_state(ids)
    decoder = BatchDecoder(codec)
    _send(replies, ("ok", os.getpid()))
    while True:
        try:
            values = _recv(requests)
        except EOFError:
            return
        try:
            if isinstance(values, tuple) and values[:1] == ("ids",):
                codec.load_id_state(values[1])
                reply: tuple[str, object] = ("ok", None)
            else:
                reply = ("ok", decode_values(values, decoder))
        except Exception as exc:
            reply = ("error", f"{type(exc).__name__}: {exc}")
        _send(replies, reply)


if __name__ == "__main__":
    main()
