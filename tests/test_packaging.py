"""The schemas producers read (top-level schemas/) are the ones the wheel ships and decodes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP = ROOT / "schemas"
SHIPPED = ROOT / "ledger" / "schemas"


def avsc_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.avsc"))}


def python_files(root: Path) -> set[str]:
    """Every `ledger/**/*.py` under root, as wheel member names (`ledger/contract/codec.py`)."""
    return {
        p.relative_to(root).as_posix()
        for p in (root / "ledger").rglob("*.py")
        if "__pycache__" not in p.parts
    }


def test_shipped_schemas_match_top_level_byte_for_byte() -> None:
    top, shipped = avsc_files(TOP), avsc_files(SHIPPED)
    assert "audit_event.avsc" in top
    assert top == shipped


@pytest.mark.slow
def test_wheel_ships_the_schema_and_every_module(tmp_path: Path) -> None:
    """Build the wheel from a copy of the sources (the work tree stays untouched).

    Every module must be in it: setuptools only finds packages it is told about (and a folder
    without `__init__.py` is silently left out), so a new subpackage can vanish from the wheel
    while every test of the work tree still passes.
    """
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("LICENSE", "LICENSE.txt"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "ledger", src / "ledger", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    sources = python_files(src)  # the copy is the source tree the wheel is built from
    assert {"ledger/__init__.py", "ledger/contract/columns.py", "ledger/cli/_common.py"} <= sources
    out = tmp_path / "dist"
    build = (
        "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", build, str(out)],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = out / done.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert zf.read("ledger/schemas/audit_event.avsc") == (TOP / "audit_event.avsc").read_bytes()
        for rel, data in avsc_files(TOP).items():
            assert zf.read(f"ledger/schemas/{rel}") == data
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "ledger = ledger.cli:main" in zf.read(entry_points).decode()
    assert "ledger/py.typed" in names
    assert sources - set(names) == set(), "modules missing from the wheel"


@pytest.mark.slow
def test_an_editable_install_shows_the_types_to_type_checkers(tmp_path: Path) -> None:
    """`pip install -e .` must put the source directory on sys.path with a plain `.pth` line:
    setuptools' other editable mode, an import hook, is invisible to mypy and pyright, which
    then see no `ledger` at all (so no py.typed either). Built from a copy of the sources,
    installed by hand into a bare venv, then checked with mypy from elsewhere."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "ledger", src / "ledger", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    build = (
        "import sys; from setuptools import build_meta; "
        "print(build_meta.build_editable(sys.argv[1]))"
    )
    out = tmp_path / "dist"
    done = subprocess.run([sys.executable, "-c", build, str(out)], cwd=src, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    with zipfile.ZipFile(out / done.stdout.strip().splitlines()[-1]) as zf:
        names = zf.namelist()
        assert not [n for n in names if n.endswith("_finder.py")], names  # no import hook
        (pth,) = [n for n in names if n.endswith(".pth")]
        entries = zf.read(pth).decode().split()
    assert entries == [str(src)]
    assert (Path(entries[0]) / "ledger" / "py.typed").is_file()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)  # fmt: skip
    python = venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = subprocess.run([str(python), "-c", purelib], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    (Path(site) / "agent_ledger.pth").write_text(entries[0] + "\n")  # what the install writes
    user = tmp_path / "user"
    user.mkdir()
    (user / "use.py").write_text(
        "from ledger.emitter import SyncEmitter\n"
        "from ledger.stream.emitter import EmitReport\n"
        "def f(em: SyncEmitter) -> EmitReport:\n"
        "    return em.close()\n"
        "x: int = f\n"  # a type error mypy can only see with the package's own types
    )
    mypy = subprocess.run(
        [sys.executable, "-m", "mypy", "--python-executable", str(python), "--no-incremental",
         "--cache-dir", str(tmp_path / "cache"), "use.py"],
        cwd=user, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert "import-not-found" not in mypy.stdout, mypy.stdout
    assert '"Callable[[SyncEmitter], EmitReport]"' in mypy.stdout, mypy.stdout
