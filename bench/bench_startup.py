"""Start-up cost: `ledger --help` as a whole process, and the decode worker's resident memory.

(a) `python -m ledger --help`: wall time of the whole process (spawn, interpreter start-up,
imports, click rendering the help to a pipe, exit), median and min of 15 runs; one more run
under `-X importtime` says whether DuckDB or aiokafka were imported.
(b) The decode worker (`ledger.stream.workers.DecodeWorkers(default_codec(), 1)`) after it has
decoded 5 batches of 2,000 generated events: VmRSS of its PID from /proc, and whether the DuckDB
library is mapped into it (/proc/PID/maps); median of 3 rounds, a fresh worker each.
(c) Baselines in the same run, same method: the RSS of a bare interpreter that imports only
what decoding needs (pyarrow, fastavro, pydantic) and then waits, and of one that also imports
duckdb.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.generate import generate
from bench.results import environment, write_section
from ledger.contract import events
from ledger.contract.codec import Codec, default_codec
from ledger.stream.workers import DecodeWorkers

ROOT = Path(__file__).resolve().parent.parent
HELP_RUNS = 15
ROUNDS = 3
BATCHES = 5
BATCH_SIZE = 2_000
SEED = 2028
HEAVY = ("duckdb", "aiokafka")
#: measured before the layout change on this machine (commit 85a110a), with the same method
BEFORE_HELP_MS = 466
BEFORE_WORKER_MIB = 112.8
BASELINES = {
    "pyarrow, fastavro, pydantic": "import pyarrow, fastavro, pydantic",
    "pyarrow, fastavro, pydantic + duckdb": "import pyarrow, fastavro, pydantic, duckdb",
}


# -- (a) `ledger --help` ---------------------------------------------------------------------


def help_command() -> list[str]:
    return [sys.executable, "-m", "ledger", "--help"]


def time_help() -> float:
    """Seconds from spawning `python -m ledger --help` until the process has exited."""
    started = time.perf_counter()
    done = subprocess.run(help_command(), cwd=ROOT, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or b"Usage" not in done.stdout:
        raise RuntimeError(f"`ledger --help` failed ({done.returncode}): {done.stderr[-500:]!r}")
    return elapsed


def help_imports() -> dict[str, bool]:
    """Which of HEAVY a `ledger --help` process imports (one run under -X importtime)."""
    cmd = [sys.executable, "-X", "importtime", *help_command()[1:]]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    names = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return {mod: any(n == mod or n.startswith(mod + ".") for n in names) for mod in HEAVY}


# -- (b) the decode worker, (c) the baselines -------------------------------------------------


def status_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of `pid`, MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024  # kB
    return fields["VmRSS"], fields["VmHWM"]


def maps_duckdb(pid: int) -> bool:
    """Whether a file of the duckdb package (its extension module) is mapped into `pid`."""
    return any(
        "duckdb" in line.split(maxsplit=5)[-1]
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
        if len(line.split(maxsplit=5)) == 6
    )


def encoded_batches(codec: Codec) -> list[list[bytes | None]]:
    values: list[bytes | None] = [
        codec.encode(events.to_record(events.parse_event(ev)))
        for ev in generate(BATCHES * BATCH_SIZE, SEED)
    ]
    return [values[i : i + BATCH_SIZE] for i in range(0, len(values), BATCH_SIZE)]


def worker_round(batches: Sequence[list[bytes | None]]) -> tuple[float, float, bool]:
    """A fresh decode worker decodes every batch; then its (RSS, peak RSS, DuckDB mapped)."""
    workers = DecodeWorkers(default_codec(), 1)

    async def drive() -> int:
        started = workers.start()
        assert started is not None
        pid = await started
        if not isinstance(pid, int) or workers.in_process:
            raise RuntimeError("the decode worker did not start")
        for values in batches:
            decoded = await workers.submit(values)
            assert len(decoded.accepted) == len(values), decoded.rejected[:3]
        if workers.in_process:
            raise RuntimeError("the decode worker was lost while decoding")
        return pid

    try:
        pid = asyncio.run(drive())
        rss, hwm = status_mib(pid)
        mapped = maps_duckdb(pid)
    finally:
        workers.close()
    return rss, hwm, mapped


def baseline_round(imports: str) -> tuple[float, float, bool]:
    """A bare interpreter that runs `imports` then waits on stdin: its (RSS, peak, DuckDB)."""
    code = f"{imports}; import sys; print('ready', flush=True); sys.stdin.read()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"baseline `{imports}` did not start")
        rss, hwm = status_mib(proc.pid)
        mapped = maps_duckdb(proc.pid)
    finally:
        proc.stdin.close()
        proc.wait(10)
        proc.stdout.close()
    return rss, hwm, mapped


def median_round(rounds: list[tuple[float, float, bool]]) -> tuple[float, float, str]:
    rss = statistics.median(r[0] for r in rounds)
    hwm = statistics.median(r[1] for r in rounds)
    mapped = {r[2] for r in rounds}
    return rss, hwm, ("yes" if mapped == {True} else "no" if mapped == {False} else "varies")


def revision() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "an unknown revision"
    return f"commit {head}" + (" plus uncommitted changes" if dirty else "")


def main() -> None:
    setting = environment()
    begun = time.monotonic()

    imported = help_imports()  # also warms the page cache for the timed runs
    help_ms = [time_help() * 1000 for _ in range(HELP_RUNS)]

    codec = default_codec()
    batches = encoded_batches(codec)
    worker_rounds, base_rounds = [], {name: [] for name in BASELINES}
    for _ in range(ROUNDS):  # interleaved, so drift in the machine hits every row alike
        worker_rounds.append(worker_round(batches))
        for name, imports in BASELINES.items():
            base_rounds[name].append(baseline_round(imports))

    w_rss, w_hwm, w_duck = median_round(worker_rounds)
    base = {name: median_round(rounds) for name, rounds in base_rounds.items()}
    bare_rss = base["pyarrow, fastavro, pydantic"][0]
    help_median = statistics.median(help_ms)

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    def mem_row(what: str, rss: float, hwm: float, duck: str) -> str:
        return f"| {what} | {rss:.1f} | {hwm:.1f} | {rss - bare_rss:+.1f} | {duck} |"

    markdown = "\n".join(
        [
            "## start-up: `ledger --help` and the decode worker's memory",
            "",
            f"{setting}. Tree: {revision()}. `python -m bench startup` "
            f"({time.monotonic() - begun:.0f} s).",
            "",
            f"**`ledger --help`, whole process**: wall time from spawning "
            f"`{Path(sys.executable).name} -m ledger --help` until it has exited (interpreter "
            "start-up, imports, rendering the help into a pipe, exit), "
            f"{HELP_RUNS} runs after one untimed `-X importtime` run:",
            "",
            "| what | median ms | min ms | imports duckdb | imports aiokafka |",
            "|---|---:|---:|---|---|",
            f"| `ledger --help` now | {help_median:.0f} | {min(help_ms):.0f} | "
            f"{yes(imported['duckdb'])} | {yes(imported['aiokafka'])} |",
            f"| before the layout change (commit 85a110a, same method) | {BEFORE_HELP_MS} | "
            "not recorded | yes | not recorded |",
            "",
            f"**Decode worker memory**: `DecodeWorkers(default_codec(), 1)` decodes {BATCHES} "
            f"batches of {BATCH_SIZE:,} generated events (seed {SEED}); then VmRSS and VmHWM "
            "(peak) of the worker PID from /proc/PID/status, and whether a duckdb file is "
            f"mapped (/proc/PID/maps). Median of {ROUNDS} rounds, a fresh worker each; the "
            'baselines are bare `python -c "import ...; sys.stdin.read()"` processes, read '
            "once their imports are done, interleaved with the worker rounds.",
            "",
            "| process | RSS MiB | peak RSS MiB | RSS vs bare baseline MiB | duckdb mapped |",
            "|---|---:|---:|---:|---|",
            mem_row(
                f"**decode worker** now, after {BATCHES * BATCH_SIZE:,} events",
                w_rss,
                w_hwm,
                w_duck,
            ),
            *(mem_row(f"baseline: imports {name}", *base[name]) for name in BASELINES),
            f"| decode worker before the layout change (commit 85a110a, same method) | "
            f"{BEFORE_WORKER_MIB} | not recorded | (other run) | yes |",
            "",
            f"So `ledger --help` takes {help_median:.0f} ms against {BEFORE_HELP_MS} ms before "
            f"({help_median / BEFORE_HELP_MS:.2f}x), and the decode worker holds "
            f"{w_rss:.1f} MiB against {BEFORE_WORKER_MIB} MiB before "
            f"({w_rss - BEFORE_WORKER_MIB:+.1f} MiB). The before figures come from an earlier "
            "run at commit 85a110a; only the rows marked now and the baselines were measured "
            "in this run.",
        ]
    )
    print(markdown)
    write_section("startup", markdown)


if __name__ == "__main__":
    main()
