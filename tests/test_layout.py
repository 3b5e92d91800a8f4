"""The package layout: dependencies between stages point one way, no module imports itself back
through others (no cycle anywhere in ssd/), and ssd.data never loads TensorFlow."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A module may import its own subpackage, or one of a lower rank. Rank 0 is the shared contracts
# at the top of `ssd/`. Stages of equal rank (engine, deploy) do not import each other. The commands
# (`ssd.cli`) sit on top: they alone may import the dataset sources (`ssd_datasets`, the `datasets/` folder).
RANKS = {"core": 1, "data": 1, "modeling": 2, "evaluation": 3, "engine": 4, "deploy": 4, "cli": 5}
OUTSIDE = ("datasets", "tools", "train_detector", "detect", "export_graph")


def stage(module: str) -> str:
    """"ssd.core.boxes" -> "core"; a top-level module ("ssd.config") -> "" (the contracts)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in RANKS else ""


def imports_of(path: Path) -> set[str]:
    """Every module named in an import statement anywhere in the file (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def ssd_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / "ssd").rglob("*.py"))}


def wrong_way(importer: str, imported: str, known: set[str]) -> str | None:
    """Why `importer` may not import `imported`, or None if it may."""
    if imported.split(".")[0] in OUTSIDE:
        return "the library never imports tools/ or the top-level scripts (nor `datasets`: its name is ssd_datasets)"
    if imported.split(".")[0] == "ssd_datasets" and stage(importer) != "cli":
        return "only the commands (ssd.cli) import the dataset sources"
    if not imported.startswith("ssd.") or imported not in known:
        return None
    src, dst = stage(importer), stage(imported)
    if src == dst:
        return None
    if src == "":
        return "the shared contracts at the top of ssd/ import no stage"
    if src == "data" and dst != "":
        return "ssd.data depends on the other stages only through NumPy arrays"
    if dst and RANKS[dst] >= RANKS[src]:
        return f"{src} (rank {RANKS[src]}) may not import {dst} (rank {RANKS[dst]})"
    return None


def test_stage_dependencies_point_one_way():
    modules = ssd_modules()
    known = set(modules) | {m.rsplit(".", 1)[0] for m in modules}
    problems = [f"{name} imports {imp}: {why}"
                for name, path in modules.items()
                for imp in sorted(imports_of(path))
                if (why := wrong_way(name, imp, known))]
    assert problems == []


def test_the_rules_catch_wrong_way_edges():
    known = set(ssd_modules())
    assert wrong_way("ssd.core.boxes", "ssd.modeling.model", known)
    assert wrong_way("ssd.deploy.export", "ssd.engine.trainer", known)
    assert wrong_way("ssd.data.pipeline", "ssd.core.boxes", known)
    assert wrong_way("ssd.detections", "ssd.evaluation.voc", known)
    assert wrong_way("ssd.config", "ssd_datasets.voc", known)
    assert wrong_way("ssd.engine.trainer", "ssd_datasets", known)
    assert wrong_way("ssd.cli.train", "train_detector", known)
    assert wrong_way("ssd.cli.train", "ssd_datasets", known) is None
    assert wrong_way("ssd.cli.train", "ssd.engine.trainer", known) is None
    assert wrong_way("ssd.engine.trainer", "ssd.cli.train", known)
    assert wrong_way("ssd.engine.trainer", "ssd.evaluation.loop", known) is None
    assert wrong_way("ssd.data.augment", "ssd.config", known) is None


def import_graph() -> dict[str, set[str]]:
    """ssd module -> the ssd modules it imports (lazy imports included), with the packages they sit in."""
    modules = ssd_modules()
    graph = {}
    for name, path in modules.items():
        named = {imp for imp in imports_of(path) if imp in modules}
        packages = {imp.rsplit(".", k)[0] for imp in named for k in range(1, imp.count(".") + 1)}
        graph[name] = (named | packages) & set(modules) - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One import loop per strongly connected group of modules (Tarjan), as a path a -> ... -> a."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(_loop(graph, set(group), node))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _loop(graph: dict[str, set[str]], group: set[str], start: str) -> list[str]:
    """A shortest path start -> ... -> start inside one strongly connected group (breadth first)."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(graph[node] & group):
                if nxt == start:
                    return paths[node] + [start]
                if nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    raise AssertionError(f"{start} is in no loop of {sorted(group)}")


def test_no_import_cycle_anywhere_in_ssd():
    assert [" -> ".join(loop) for loop in cycles(import_graph())] == []


def test_the_cycle_check_finds_loops_lazy_imports_included(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": {"e"}}
    assert cycles(graph) == [["a", "b", "c", "a"], ["e", "e2", "e"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    lazy = tmp_path / "lazy.py"
    lazy.write_text("def f():\n    from ssd.deploy.export import export_run\n")
    assert "ssd.deploy.export" in imports_of(lazy)


def test_datasets_import_only_the_shared_contracts():
    for path in sorted((ROOT / "datasets").rglob("*.py")):
        for imp in imports_of(path):
            if imp.startswith("ssd."):
                assert stage(imp) == "", f"{path.name} imports {imp}: datasets/ knows only ssd's contracts"


def test_data_package_never_imports_tensorflow():
    code = ("import sys, ssd.data, ssd.data.augment, ssd.data.pipeline; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')); "
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_package_is_installed():
    """pyproject's explicit package list (needed for the datasets/ -> ssd_datasets mapping) misses none."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {module_name(p.parent) for p in (ROOT / "ssd").rglob("__init__.py")}
    assert on_disk | {"ssd_datasets"} == set(config["packages"])
    assert config["package-dir"] == {"ssd_datasets": "datasets"}


def test_no_file_edits_sys_path():
    """Everything is imported as installed (`make setup`), so no script reaches into sys.path."""
    edit = re.compile(r"sys\.path(\.insert|\.append|\.extend|\[[^]]*\]\s*=|\s*[+]?=)")
    offenders = [str(path.relative_to(ROOT)) for path in ROOT.rglob("*.py")
                 if ".venv" not in path.parts and edit.search(path.read_text())]
    assert offenders == []
