"""The README's snippets run as written.

README.md is parsed when the tests run (not copied here), so an edit to the README is what gets
tested. Checked:

* The set-up: exactly two code blocks precede the first section, each one line of bash; the first
  ends with `ledger demo`, the second ends with the test command (`python -m pytest -q`), and
  `.ci/run` runs that same test command. (`ledger demo` itself runs in tests/demo/test_demo.py.)
* Every ```python block, each by the test that knows what it needs:
  - "For investigators" (`Ledger.open("demo-ledger.duckdb")`): run unchanged in a directory
    holding `demo-ledger.duckdb`, built from the demo scenario's events with `ledger ingest`
    (the same events `ledger demo` sends through Kafka); it exits 0 and prints the root
    principal, a registered human of the scenario, and the chain of hops from the traced
    action's delegation up to that human's root grant.
  - "The hash chain" (`duckdb.connect("audit.duckdb", ...)`): run unchanged on
    examples/events.jsonl ingested into `audit.duckdb`, it exits 0; after one payload byte is
    changed in the file it exits non-zero, naming the tampered seq.
  - The SDK block (`SyncEmitter(...)`, integration): run with only the broker address and the
    topic replaced by the test broker's and a fresh topic; then the README's `ledger consume`
    line (same two replacements, plus `--until-idle 3` so that it ends) appends both events,
    and `ledger trace a-7` shows the action under delegation d-42.
  A python block none of these recognises fails `test_every_python_block_is_checked`: teach
  this module how to run it rather than let it go untested.
* Every line of the ```bash blocks under "For investigators" (the commands and the `authority`
  examples): split with `shlex` (comments dropped, `\\` continuations joined), the leading
  `ledger` run as `python -m ledger`, in the directory holding the demo ledger: exit 0 and
  some output.

Not run: the auditors' bash block (its `EVENT_ID` is a placeholder and `--consistency 1000` needs
a ledger of 1000+ entries), the Development block (it is the test suite, lint and benchmarks),
and inline snippets in the prose (the `async with ... Emitter(...)` form).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from ledger.demo import scenario
from ledger.stream.broker import EmbeddedBroker
from tests.conftest import write_jsonl

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"
EXAMPLE_EVENTS = ROOT / "examples" / "events.jsonl"

INVESTIGATORS = "For investigators"
OPERATOR = "For the ledger operator: consume"
DEMO_DB = "demo-ledger.duckdb"

# What tells the README's python blocks apart; each must match exactly one block.
INVESTIGATOR_MARKER = f'Ledger.open("{DEMO_DB}")'
HASH_CHAIN_MARKER = 'duckdb.connect("audit.duckdb"'
SDK_MARKER = "SyncEmitter("
PYTHON_MARKERS = (INVESTIGATOR_MARKER, HASH_CHAIN_MARKER, SDK_MARKER)

# The SDK block's and the consume line's placeholders, replaced by the test broker and topic.
README_BOOTSTRAP = "kafka-1:9092"
README_TOPIC = "agent-audit-events"

TIMEOUT = 120


@dataclass(frozen=True)
class Block:
    lang: str
    section: str  # the `## ` heading it is under ("" before the first one)
    line: int  # 1-based line of the opening fence
    text: str


def readme_blocks() -> list[Block]:
    """Every fenced code block of README.md, in order, with its language and `##` section."""
    blocks: list[Block] = []
    section = ""
    fence: tuple[str, int] | None = None
    body: list[str] = []
    for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        if fence is None:
            if line.startswith("```"):
                fence, body = (line[3:].strip(), number), []
            elif line.startswith("## "):
                section = line[3:].strip()
        elif line.strip() == "```":
            blocks.append(Block(fence[0], section, fence[1], "\n".join(body) + "\n"))
            fence = None
        else:
            body.append(line)
    assert fence is None, f"README.md: the code block opened at line {fence[1]} is never closed"
    return blocks


def commands(block: Block) -> list[list[str]]:
    """A bash block's commands: `\\` continuations joined, comments dropped, shlex-split."""
    joined: list[str] = []
    pending = ""
    for line in block.text.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    if pending:
        joined.append(pending)
    return [argv for argv in (shlex.split(c, comments=True) for c in joined) if argv]


def python_block(marker: str) -> str:
    found = [b for b in readme_blocks() if b.lang == "python" and marker in b.text]
    assert len(found) == 1, f"expected one ```python block with {marker!r}, found {len(found)}"
    return found[0].text


def investigator_commands() -> list[list[str]]:
    blocks = [b for b in readme_blocks() if b.lang == "bash" and b.section == INVESTIGATORS]
    return [argv for b in blocks for argv in commands(b)]


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a newcomer: no LEDGER_* settings, a home of its own (no spool or cache
    lands in the real one)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LEDGER_") or k == "LEDGER_BROKER_BIN"
    }
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), **extra)
    return env


def run(
    argv: list[str], cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def ledger_cli(argv: list[str]) -> list[str]:
    """A README command line, its leading `ledger` run by this interpreter."""
    assert argv and argv[0] == "ledger", f"not a `ledger` command: {shlex.join(argv)}"
    return [sys.executable, "-m", "ledger", *argv[1:]]


def run_python(
    code: str, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-c", code], cwd, env)


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def ingest(events_file: Path, db: str, cwd: Path) -> None:
    proc = run([sys.executable, "-m", "ledger", "ingest", str(events_file), "--db", db], cwd)
    assert proc.returncode == 0, explain(proc)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding `demo-ledger.duckdb`, ingested from the demo scenario's events."""
    where = tmp_path_factory.mktemp("readme-demo")
    source = write_jsonl(tmp_path_factory.mktemp("readme-events") / "demo.jsonl", scenario.events())
    ingest(source, DEMO_DB, where)
    return where


# -- the two set-up commands --------------------------------------------------------------------


def test_the_readme_opens_with_exactly_two_setup_commands() -> None:
    blocks = readme_blocks()
    preamble = [b for b in blocks if b.section == ""]
    assert [b.lang for b in preamble] == ["bash", "bash"], (
        "the README opens with exactly two set-up commands, each a ```bash block: "
        f"found {[(b.lang, b.line) for b in preamble]}"
    )
    assert blocks[:2] == preamble  # and they are the first two code blocks
    demo, tests = preamble
    for block in preamble:
        lines = [line for line in block.text.splitlines() if line.strip()]
        assert len(lines) == 1, f"README line {block.line}: one line to copy, found {lines}"
    assert demo.text.strip().endswith("ledger demo"), demo.text
    test_command = tests.text.strip().split("&&")[-1].strip()
    assert test_command == "python -m pytest -q", tests.text


def test_ci_runs_the_readme_test_command() -> None:
    readme_test_command = readme_blocks()[1].text.strip().split("&&")[-1].strip()
    ci_lines = [line.strip() for line in CI_RUN.read_text(encoding="utf-8").splitlines()]
    assert "python -m pytest -q" in ci_lines
    assert readme_test_command in ci_lines, f".ci/run does not run `{readme_test_command}`"


# -- python blocks ------------------------------------------------------------------------------


def test_every_python_block_is_checked() -> None:
    for block in (b for b in readme_blocks() if b.lang == "python"):
        hits = [m for m in PYTHON_MARKERS if m in block.text]
        assert len(hits) == 1, (
            f"README line {block.line}: a ```python block no test here runs "
            f"(matched {hits}); teach tests/test_readme.py to run it"
        )
    for marker in PYTHON_MARKERS:
        python_block(marker)  # each known block is still there, once


def test_investigator_python_block_runs_as_written(demo_dir: Path, tmp_path: Path) -> None:
    code = python_block(INVESTIGATOR_MARKER)
    traced = re.search(r'\.trace\("([^"]+)"\)', code)
    assert traced, code
    proc = run_python(code, demo_dir, clean_env(tmp_path / "home"))
    assert proc.returncode == 0, explain(proc)

    # It prints `trace.root_principal` and the hops' delegation ids.
    root, _, rest = proc.stdout.strip().partition(" ")
    chain = ast.literal_eval(rest)
    events = scenario.events()
    humans = {
        e["data"]["principal_id"]
        for e in events
        if e["type"] == "principal.registered" and e["data"]["kind"] == "human"
    }
    grants = {e["data"]["delegation_id"]: e["data"] for e in events
              if e["type"] == "delegation.granted"}  # fmt: skip
    actions = {e["data"]["action_id"]: e["data"] for e in events
               if e["type"] == "action.performed"}  # fmt: skip
    assert root in humans, f"root principal {root!r} is not a human of the scenario {humans}"
    assert chain and all(isinstance(hop, str) for hop in chain), proc.stdout
    assert chain[0] == actions[traced.group(1)]["delegation_id"]
    for hop, parent in zip(chain, [*chain[1:], None], strict=True):
        assert grants[hop]["parent_delegation_id"] == parent, (hop, chain)
    assert grants[chain[-1]]["delegator_id"] == root  # the root grant is the human's


def test_hash_chain_python_block_runs_as_written_and_catches_tampering(tmp_path: Path) -> None:
    code = python_block(HASH_CHAIN_MARKER)
    env = clean_env(tmp_path / "home")
    ingest(EXAMPLE_EVENTS, "audit.duckdb", tmp_path)
    proc = run_python(code, tmp_path, env)
    assert proc.returncode == 0, explain(proc)

    # One payload byte changed in the file: the same block must fail, at that seq.
    con = duckdb.connect(str(tmp_path / "audit.duckdb"))
    try:
        rows = con.execute("SELECT seq, payload FROM entries ORDER BY seq").fetchall()
        seq, payload = rows[len(rows) // 2]
        tampered = bytearray(payload)
        tampered[len(tampered) // 2] ^= 0x01
        con.execute("UPDATE entries SET payload = ? WHERE seq = ?", [bytes(tampered), seq])
    finally:
        con.close()
    proc = run_python(code, tmp_path, env)
    assert proc.returncode != 0, "the README's hash-chain check did not notice a changed payload"
    assert proc.stderr.strip().splitlines()[-1] == f"AssertionError: {seq}", explain(proc)


@pytest.mark.integration
def test_sdk_python_block_and_consume_line_run_as_written(
    broker: EmbeddedBroker, topic: str, tmp_path: Path
) -> None:
    code = python_block(SDK_MARKER)
    for placeholder in (README_BOOTSTRAP, README_TOPIC):
        assert code.count(f'"{placeholder}"') == 1, f"the SDK block no longer uses {placeholder!r}"
    code = code.replace(f'"{README_BOOTSTRAP}"', json.dumps(broker.bootstrap_servers))
    code = code.replace(f'"{README_TOPIC}"', json.dumps(topic))
    spool = tmp_path / "spool" / f"{topic}.spool"
    env = clean_env(tmp_path / "home", LEDGER_SPOOL=str(spool))
    proc = run_python(code, tmp_path, env)
    assert proc.returncode == 0, explain(proc)
    counters = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
    assert {"sent", "spooled", "resent", "failed"} <= set(counters), proc.stdout

    # The operator's consume line, as written but for the broker, the topic and an end.
    operator = [b for b in readme_blocks() if b.lang == "bash" and b.section == OPERATOR]
    lines = [argv for b in operator for argv in commands(b) if argv[:2] == ["ledger", "consume"]]
    assert len(lines) == 1, f"expected one `ledger consume` line under {OPERATOR!r}: {lines}"
    (argv,) = lines
    assert README_BOOTSTRAP in argv and README_TOPIC in argv, argv
    swap = {README_BOOTSTRAP: broker.bootstrap_servers, README_TOPIC: topic}
    argv = [swap.get(arg, arg) for arg in argv]
    db = argv[argv.index("--db") + 1]
    proc = run([*ledger_cli(argv), "--until-idle", "3"], tmp_path, env)
    assert proc.returncode == 0, explain(proc)

    proc = run(ledger_cli(["ledger", "trace", "a-7", "--json", "--db", db]), tmp_path, env)
    assert proc.returncode == 0, explain(proc)
    trace = json.loads(proc.stdout)
    assert trace["action"]["action_id"] == "a-7"
    assert trace["action"]["principal_id"] == "agent:planner"
    assert trace["action"]["delegation_id"] == "d-42"
    hop = trace["chain"][0]
    assert hop["delegation_id"] == "d-42"
    assert (hop["delegator_id"], hop["delegate_id"]) == ("user:alice", "agent:planner")
    assert hop["scopes"] == ["crm:read"] and hop["resources"] == ["crm/accounts/*"]


# -- the investigators' bash blocks -------------------------------------------------------------


def test_investigator_bash_blocks_are_found() -> None:
    blocks = [b for b in readme_blocks() if b.lang == "bash" and b.section == INVESTIGATORS]
    assert len(blocks) >= 2, "the investigators' commands and the `authority` examples"
    verbs = {argv[1] for argv in investigator_commands() if len(argv) > 1}
    assert {"trace", "blast-radius", "violations", "authority", "inventory", "sql"} <= verbs


@pytest.mark.parametrize("argv", investigator_commands(), ids=shlex.join)
def test_investigator_command_runs_as_written(
    argv: list[str], demo_dir: Path, tmp_path: Path
) -> None:
    proc = run(ledger_cli(argv), demo_dir, clean_env(tmp_path / "home"))
    assert proc.returncode == 0, f"README command `{shlex.join(argv)}` failed: {explain(proc)}"
    assert proc.stdout.strip(), f"README command `{shlex.join(argv)}` printed nothing"
