"""Layers point one way: job -> udfs -> state_machine. Checked on every import statement, including
the ones inside functions (the lazy imports a runtime path takes)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    # pure logic: no Flink, no stores, no AWS, no file or clock access, nothing above it
    "state_machine": {"job", "udfs", "workbench", "bench", "tests", "deploy", "pyflink", "psycopg2", "redis",
                      "boto3", "botocore", "pathlib", "os", "time", "io", "shutil", "tempfile"},
    # the Flink adapters: may use state_machine only
    "udfs": {"job", "workbench", "bench", "tests", "deploy", "psycopg2", "redis", "boto3"},
    # offline tooling over the pure core
    "workbench": {"job", "udfs", "bench", "tests", "deploy", "pyflink"},
    # the job at run time does not use the packaging code, and nothing ships test code
    "job": {"deploy", "bench", "tests"},
    "bench": {"tests"},
    "deploy": {"bench", "tests"},
}  # fmt: skip

OPERATOR_CLI = {"job/commands/msf.py", "job/commands/package.py"}
"""`asset-cycle package` / `asset-cycle msf ...` build and deploy the application: they may use deploy/
(lazily, from the command handler); the job itself never does."""

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
