"""bench/RESULTS.md, one section per benchmark, each rewritten only by its own benchmark.

A section is the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`; writing one
leaves every other byte of the file as it was, so benchmarks can run in any order (or at the
same time: writers take a lock and replace the file atomically).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = (
    "# Benchmark results\n\n"
    "Written by `python -m bench [NAME...]`; each section belongs to `bench/bench_NAME.py`.\n"
)
#: glibc settings that keep freed memory (page faults cost ~3.5 µs each on these machines)
MALLOC_TUNING = {
    "MALLOC_TRIM_THRESHOLD_": "100000000000",
    "MALLOC_TOP_PAD_": "1000000000",
    "MALLOC_MMAP_THRESHOLD_": "33554432",
}


def _markers(name: str) -> tuple[str, str]:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"bad section name {name!r}")
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def replace_section(text: str, name: str, markdown: str) -> str:
    """`text` with section `name` set to `markdown` (appended if it was not there)."""
    start, end = _markers(name)
    block = f"{start}\n{markdown.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    return text.rstrip("\n") + "\n\n" + block + "\n"


def read_section(name: str, path: Path = RESULTS) -> str | None:
    start, end = _markers(name)
    if not path.exists():
        return None
    match = re.search(
        re.escape(start) + r"\n?(.*?)\n?" + re.escape(end), path.read_text(), re.DOTALL
    )
    return match.group(1) if match else None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_section(name: str, markdown: str, path: Path = RESULTS) -> None:
    """Replace this benchmark's section of RESULTS.md, leaving the others untouched."""
    with _locked(path):
        text = path.read_text() if path.exists() else HEADER
        updated = replace_section(text, name, markdown)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".RESULTS.", suffix=".md")
        with os.fdopen(fd, "w") as fh:
            fh.write(updated)
        os.replace(tmp, path)


def malloc_settings() -> str:
    """Which glibc malloc settings this process runs under, for the record."""
    set_now = {k: os.environ[k] for k in MALLOC_TUNING if k in os.environ}
    if not set_now:
        return "glibc malloc defaults (no MALLOC_* tuning)"
    return "glibc malloc tuned to keep freed memory: " + ", ".join(
        f"{k}={v}" for k, v in set_now.items()
    )


def environment() -> str:
    """One line: when, on what, under which allocator settings."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores "
        f"(load average {load:.1f} at start), Python {platform.python_version()}, "
        f"{malloc_settings()}"
    )


def timed(fn: Callable[[], object]) -> float:
    """Seconds `fn()` takes, in process (`time.perf_counter`)."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started
