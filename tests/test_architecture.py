"""The package's shape, held by tests: no import cycles, self-contained modules, light entry points.

* No import cycle among ledger modules, counting every import (also those under
  `if TYPE_CHECKING:` and inside functions: a cycle there still couples the modules and becomes
  a real one the day the import moves), and none between the layer packages (ARCHITECTURE).
  `lint-imports` holds the layer order; this holds "no cycles at all", also inside a layer.
* Every public module imports on its own in a fresh interpreter: no module works only because
  another one happened to be imported first.
* Every public module declares its API in `__all__`, every name there exists, and every name
  another ledger module imports from it is there (so `__all__` is the API the package uses).
* The entry points stay light: `ledger --help` (and each command's `--help`) loads neither
  DuckDB nor aiokafka; the decode worker loads no DuckDB; the contract's batch decoder and the
  signed-note primitives load none of DuckDB, aiokafka, click.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ledger"
#: the layer packages and top-level modules of ARCHITECTURE
LAYERS = (
    "contract",
    "tlog",
    "store",
    "stream",
    "query",
    "integrity",
    "demo",
    "cli",
    "config",
    "errors",
    "_text",
)
HEAVY = ("duckdb", "aiokafka", "click")

Graph = Mapping[str, Iterable[str]]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def ledger_modules() -> list[str]:
    """Every module of the source tree, from its files."""
    return sorted(
        module_name(p)
        for p in PACKAGE.rglob("*.py")
        if "__pycache__" not in p.relative_to(ROOT).parts
    )


def is_public(module: str) -> bool:
    """Neither the module nor a package above it starts with `_` (so `__main__` is not)."""
    return not any(part.startswith("_") for part in module.split("."))


PUBLIC = [m for m in ledger_modules() if is_public(m)]

#: Public modules another engineer is giving `__all__` right now. Exempt from the `__all__`
#: checks only while their source still has none; the checks apply again by themselves.
ALL_PENDING = ("ledger.query.custody",)


def declares_all(module: str) -> bool:
    """Whether the module's source assigns `__all__` at top level (read, not imported)."""
    path = PACKAGE.joinpath(*module.split(".")[1:])
    source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    for node in ast.parse(source.read_text("utf-8")).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return True
    return False


ALL_CHECKED = [m for m in PUBLIC if m not in ALL_PENDING or declares_all(m)]


# -- cycles -----------------------------------------------------------------------------------


def import_graph() -> dict[str, set[str]]:
    """ledger module -> the ledger modules it imports, counting every import statement."""
    graph = grimp.build_graph(
        "ledger",
        include_external_packages=True,
        exclude_type_checking_imports=False,
        cache_dir=None,
    )
    ours = {m for m in graph.modules if m == "ledger" or m.startswith("ledger.")}
    return {m: graph.find_modules_directly_imported_by(m) & ours for m in sorted(ours)}


def strongly_connected_components(graph: Graph) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit); components in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    nodes = sorted({*graph, *(w for ws in graph.values() for w in ws)})
    succ = {v: sorted(graph.get(v, ())) for v in nodes}
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = len(index)
                stack.append(v)
                on_stack.add(v)
            if i < len(succ[v]):
                work.append((v, i + 1))
                w = succ[v][i]
                if w not in index:
                    work.append((w, 0))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                components.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return components


def shortest_cycle(graph: Graph, component: list[str]) -> list[str]:
    """One concrete cycle through the component's first module, for the failure message."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph.get(v, ())):
                if w == start:
                    return [*paths[v], start]
                if w in members and w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    return component


def cycles(graph: Graph) -> list[str]:
    """Every import cycle, one line each: 'a -> b -> a (modules in the cycle: ...)'."""
    return [
        " -> ".join(shortest_cycle(graph, c)) + f"  (all in the cycle: {', '.join(c)})"
        for c in strongly_connected_components(graph)
        if len(c) > 1 or c[0] in graph.get(c[0], ())
    ]


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def layer_graph(graph: Graph) -> dict[str, set[str]]:
    """Layer -> the other layers its modules import (facades outside the layers left out)."""
    out: dict[str, set[str]] = {layer: set() for layer in LAYERS}
    for importer, imported in graph.items():
        source = layer_of(importer)
        if source is None:
            continue
        out[source] |= {t for m in imported if (t := layer_of(m)) not in (None, source)}
    return out


def test_no_import_cycles_among_modules() -> None:
    graph = import_graph()
    assert set(graph) == set(ledger_modules()), "grimp and the source tree disagree on modules"
    found = cycles(graph)
    assert found == [], "import cycles:\n" + "\n".join(found)


def test_no_import_cycles_between_layer_packages() -> None:
    found = cycles(layer_graph(import_graph()))
    assert found == [], "cycles between layer packages:\n" + "\n".join(found)


def test_cycle_finder_reports_cycles_and_only_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"a"}}
    assert strongly_connected_components(graph) == [["d"], ["a", "b", "c"], ["e"], ["f"]]
    assert cycles(graph) == [
        "a -> b -> c -> a  (all in the cycle: a, b, c)",
        "e -> e  (all in the cycle: e)",
    ]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    chain = {str(i): {str(i + 1)} for i in range(5000)}  # deeper than the recursion limit
    assert cycles(chain) == []
    assert len(cycles({**chain, "5000": {"0"}})) == 1


def test_layer_graph_folds_modules_into_their_layers() -> None:
    graph = {
        "ledger.store._store": {"ledger.contract.codec", "ledger.store.seen"},
        "ledger.contract.codec": {"ledger.errors"},
        "ledger.errors": set(),
        "ledger.emitter": {"ledger.stream.emitter"},
    }
    folded = layer_graph(graph)
    assert folded["store"] == {"contract"}
    assert folded["contract"] == {"errors"}
    assert cycles(folded) == []
    graph["ledger.contract.codec"] = {"ledger.store.seen"}
    assert cycles(layer_graph(graph)) == [
        "contract -> store -> contract  (all in the cycle: contract, store)"
    ]


def test_grimp_counts_type_checking_and_function_local_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The graph the cycle test walks sees the imports a plain import-time check would miss."""
    package = tmp_path / "cyclepkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cyclepkg import b\n"
    )
    (package / "b.py").write_text("def f() -> None:\n    from cyclepkg import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph(
        "cyclepkg",
        include_external_packages=True,
        exclude_type_checking_imports=False,
        cache_dir=None,
    )
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    assert cycles(edges) == [
        "cyclepkg.a -> cyclepkg.b -> cyclepkg.a  (all in the cycle: cyclepkg.a, cyclepkg.b)"
    ]


# -- each public module stands alone -----------------------------------------------------------


def import_alone(module: str) -> tuple[str, int, str]:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return module, done.returncode, done.stderr


def test_every_public_module_imports_alone_in_a_fresh_interpreter() -> None:
    assert "ledger.contract.columns" in PUBLIC and "ledger.store._store" not in PUBLIC
    with ThreadPoolExecutor(max_workers=max(4, os.cpu_count() or 1)) as pool:
        results = list(pool.map(import_alone, PUBLIC))
    failed = [f"{m}:\n    " + "\n    ".join(err.splitlines()[-3:]) for m, rc, err in results if rc]
    assert failed == [], "modules that do not import alone:\n" + "\n".join(failed)
    _, returncode, stderr = import_alone("ledger.no_such_module")
    assert returncode != 0 and "No module named 'ledger.no_such_module'" in stderr


# -- __all__ ----------------------------------------------------------------------------------


@pytest.mark.parametrize("module", ALL_CHECKED)
def test_public_module_declares_all_and_every_name_exists(module: str) -> None:
    mod = importlib.import_module(module)
    names = getattr(mod, "__all__", None)
    assert isinstance(names, list | tuple), f"{module} has no __all__"
    assert all(isinstance(n, str) for n in names), f"{module}.__all__ holds a non-string"
    assert len(set(names)) == len(names), f"{module}.__all__ repeats a name"
    missing = [n for n in names if not hasattr(mod, n)]
    assert missing == [], f"{module}.__all__ names what it does not define: {missing}"


def imported_names() -> dict[str, set[tuple[str, str]]]:
    """Public module -> (name, importer) of every `from module import name` inside ledger."""
    modules = set(ledger_modules())
    out: dict[str, set[tuple[str, str]]] = {}
    for path in PACKAGE.rglob("*.py"):
        importer = module_name(path)
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if not isinstance(node, ast.ImportFrom) or node.level or node.module not in ALL_CHECKED:
                continue
            for alias in node.names:
                if f"{node.module}.{alias.name}" not in modules and node.module != importer:
                    out.setdefault(node.module, set()).add((alias.name, importer))
    return out


def test_names_other_modules_import_are_in_all() -> None:
    missing = sorted(
        f"{importer} imports {name} from {module}, which is not in its __all__"
        for module, uses in imported_names().items()
        for name, importer in uses
        if name not in getattr(importlib.import_module(module), "__all__", ())
    )
    assert missing == [], "\n".join(missing)


def test_all_exemptions_name_real_public_modules() -> None:
    assert set(ALL_PENDING) <= set(PUBLIC)
    assert declares_all("ledger.contract.columns") and declares_all("ledger.contract")
    assert not declares_all("ledger.__main__")


# -- light entry points ------------------------------------------------------------------------


def loaded_modules(*args: str) -> set[str]:
    """Top-level names of every module a fresh interpreter imports while running `args`."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("import time:")]
    names = {ln.rsplit("|", 1)[-1].strip().split(".")[0] for ln in lines[1:]}  # [0]: header
    assert "ledger" in names, "no import trace: was -X importtime honoured?"
    return names


HELP_OF_EVERY_COMMAND = """
from click.testing import CliRunner
from ledger.cli import cli

def walk(group, prefix):
    for name, command in sorted(group.commands.items()):
        yield [*prefix, name]
        yield from walk(command, [*prefix, name]) if hasattr(command, "commands") else ()

runner = CliRunner()
argvs = list(walk(cli, []))
assert len(argvs) > 10, argvs
for argv in argvs:
    result = runner.invoke(cli, [*argv, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output, (argv, result.output)
"""


@pytest.mark.parametrize(
    ("args", "forbidden"),
    [
        (("-m", "ledger", "--help"), ("duckdb", "aiokafka")),
        (("-c", HELP_OF_EVERY_COMMAND), ("duckdb", "aiokafka")),
        (("-c", "import ledger.stream.workers"), ("duckdb",)),
        (("-c", "import ledger.contract.batch"), HEAVY),
        (("-c", "import ledger.tlog.note"), HEAVY),
    ],
    ids=["ledger --help", "ledger COMMAND --help", "stream.workers", "contract.batch", "tlog.note"],
)
def test_entry_points_stay_light(args: tuple[str, ...], forbidden: tuple[str, ...]) -> None:
    loaded = loaded_modules(*args)
    assert loaded.isdisjoint(forbidden), (
        f"{' '.join(args)[:60]} loads {sorted(loaded & set(forbidden))}"
    )


def test_light_import_check_sees_a_heavy_import() -> None:
    assert {"duckdb", "ledger"} <= loaded_modules("-c", "import ledger.store")
