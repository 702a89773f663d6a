"""`ledger demo` end to end (real broker, emitter, consumer, DuckDB file) and the notebooks on its
ledger, executed headless as CI would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from ledger.demo import scenario

pytestmark = pytest.mark.integration
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


@pytest.fixture(scope="module")
def demo_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    where = tmp_path_factory.mktemp("demo")
    db = where / "demo-ledger.duckdb"  # the default, as a newcomer runs it: `ledger demo`
    proc = subprocess.run(
        [sys.executable, "-m", "ledger", "demo"],
        cwd=where,
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    return db, proc


def test_demo_explains_the_incident(
    demo_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    db, proc = demo_run
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"Chain of custody of {scenario.INCIDENT_ACTION}" in out
    assert "WHO AUTHORIZED: user:dana made the root grant" in out
    assert "SCOPE_ESCALATION" in out and "DENIED_BUT_EXECUTED" in out
    assert "LONG_LIVED_CREDENTIAL" in out and "BURST" in out
    assert f"Blast radius of {scenario.COMPROMISED_AGENT}" in out
    assert "verify: ok" in out
    assert "stopped the embedded broker" in proc.stderr
    assert "emitted 200/" in proc.stderr  # progress is visible while it runs
    assert db.exists() and db.with_suffix(".checkpoint").exists()


def test_the_suggested_next_commands_work(
    demo_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    db, proc = demo_run
    out = proc.stdout
    commands = out[out.index("== Try next") :].splitlines()[1:]
    commands = [c.strip() for c in commands if c.strip().startswith("ledger ")]
    assert len(commands) >= 6
    for command in commands:
        done = subprocess.run(
            command.replace("ledger ", f"{sys.executable} -m ledger ", 1)
            .replace("&& ledger ", f"&& {sys.executable} -m ledger "),
            shell=True, cwd=db.parent, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, (command, done.stderr)


def test_demo_again_on_the_same_file_adds_nothing(
    demo_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    db, _ = demo_run
    proc = subprocess.run(
        [sys.executable, "-m", "ledger", "demo", "--db", str(db), "--json"],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["consumed"]["appended"] == 0
    assert report["consumed"]["duplicates"] == len(scenario.events())
    assert report["entries"] == len(scenario.events())
    assert report["verify"]["ok"] is True
    assert report["trace"]["root_principal"] == "user:dana"
    assert [h["delegation_id"] for h in report["trace"]["chain"]] == [
        "del-summarizer", "del-report-writer", "del-q1-report",
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["investigate", "audit"])
def test_notebook_runs_top_to_bottom(
    name: str,
    demo_run: tuple[Path, subprocess.CompletedProcess[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db, proc = demo_run
    assert proc.returncode == 0, proc.stderr
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "strip outputs"
    monkeypatch.setenv("LEDGER_DB", str(db))
    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # fmt: skip
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "display_data" and "image/png" in o.get("data", {})]  # fmt: skip
    if name == "investigate":
        assert len(images) == 2  # the delegation graph and the timeline
