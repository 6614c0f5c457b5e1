"""Layers point one way: cli -> job -> udfs -> state_machine, with stores (PostgreSQL, Redis) below the
job and the command line, the report and the live view (web) below the command line, and workbench the offline tooling over
the pure core. Checked on every import statement, including the ones inside functions (the lazy
imports a runtime path takes); and no import cycle among the project's modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    # pure logic: no Flink, no stores, no AWS, no file or clock access, nothing above it
    "state_machine": {"job", "cli", "stores", "report", "web", "udfs", "workbench", "bench", "tests", "deploy", "pyflink",
                      "psycopg2", "redis", "boto3", "botocore", "pathlib", "os", "time", "io", "shutil", "tempfile"},
    # the Flink adapters: may use state_machine only
    "udfs": {"job", "cli", "stores", "report", "web", "workbench", "bench", "tests", "deploy", "psycopg2", "redis",
             "boto3"},
    # offline tooling over the pure core (the command line and the job's simulator source use it)
    "workbench": {"job", "cli", "stores", "report", "web", "udfs", "bench", "tests", "deploy", "pyflink"},
    # PostgreSQL and Redis: below the job and the command line (state_machine for the reference data types)
    "stores": {"job", "cli", "report", "web", "udfs", "workbench", "bench", "tests", "deploy", "pyflink"},
    # the Flink job: uses udfs, stores, workbench (the simulator); never the command line or the report; at
    # run time it does not use the packaging code, and nothing ships test code
    "job": {"cli", "report", "web", "deploy", "bench", "tests"},
    # the offline report: stores, the pure core and the bundle reader; no Flink
    "report": {"job", "cli", "web", "udfs", "deploy", "bench", "tests", "pyflink"},
    # the live view (asset-cycle serve): stores and the pure core's types and thresholds; no Flink, no job
    "web": {"job", "cli", "report", "udfs", "workbench", "deploy", "bench", "tests", "pyflink"},
    # the command line: everything but the developer tools (deploy only from OPERATOR_CLI)
    "cli": {"deploy", "bench", "tests"},
    "bench": {"tests"},
    "deploy": {"cli", "report", "web", "bench", "tests"},
}  # fmt: skip

PROJECT_PACKAGES = ("state_machine", "udfs", "workbench", "stores", "job", "report", "web", "cli", "deploy", "bench")

OPERATOR_CLI = {"cli/commands/msf.py", "cli/commands/package.py"}
"""`asset-cycle package` / `asset-cycle msf ...` build and deploy the application: they may use deploy/;
nothing else does (the job itself never)."""

FILE_CALLS = {"open"}  # builtins that touch files (state_machine must not)


def imported_roots(path: Path) -> set[str]:
    """Top-level package of every module ``path`` imports (absolute imports)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def package_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package: str):
    files = package_files(package)
    assert files, f"{package}/ has no modules"
    bad = {f"{p.relative_to(ROOT)} imports {root}" for p in files for root in imported_roots(p) & FORBIDDEN[package]
           if not (root == "deploy" and str(p.relative_to(ROOT)) in OPERATOR_CLI)}
    assert not bad, sorted(bad)


def test_the_pure_core_opens_no_files():
    calls = []
    for path in package_files("state_machine"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FILE_CALLS:
                calls.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not calls


def test_the_check_sees_lazy_imports(tmp_path: Path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from job.db import TableNames\n    import psycopg2.sql\n")
    assert imported_roots(module) == {"job", "psycopg2"}


# --------------------------------------------------------------------------- import cycles


def module_paths(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file of every module of ``packages`` under ``root``."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports, module-level and lazy imports alike (``from a.b import c``
    counts as importing ``a.b.c`` when that is a module, else ``a.b``)."""

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(known(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets.update(known(f"{node.module}.{alias.name}") for alias in node.names)
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (each an import cycle), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(cycles)


def test_every_package_has_its_place_in_the_layers():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages | {"bench"} == set(PROJECT_PACKAGES) == set(FORBIDDEN)  # bench/: scripts, not a package


def test_no_import_cycle_among_the_projects_modules():
    modules = module_paths(ROOT, (*PROJECT_PACKAGES, "tests"))
    assert len(modules) > 150
    assert import_cycles(import_graph(modules)) == []


def test_the_cycle_check_finds_a_cycle_through_a_lazy_import(tmp_path: Path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg.b import thing\n")
    (tmp_path / "pkg" / "b.py").write_text("def thing():\n    from pkg import a\n")
    (tmp_path / "pkg" / "c.py").write_text("import pkg.a\n")
    graph = import_graph(module_paths(tmp_path, ("pkg",)))
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": {"pkg.a"}}
    assert import_cycles(graph) == [["pkg.a", "pkg.b"]]
