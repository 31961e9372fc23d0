"""The layering of style.md §5, held by import-linter (contracts in pyproject.toml), and an import graph without cycles."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold():
    """Every import-linter contract in pyproject.toml is kept."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    result = subprocess.run([exe, str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert f"{len(contracts)} kept, 0 broken" in result.stdout


def test_only_the_cli_and_the_daemon_may_use_click_and_apscheduler():
    """The contract that says so names every other top-level module: a new one must be added to it."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    [contract] = [c for c in contracts if set(c["forbidden_modules"]) == {"click", "apscheduler"}]
    package = ROOT / "syncd"
    modules = {f"syncd.{path.stem}" for path in package.glob("*.py") if path.stem != "__init__"}
    modules |= {f"syncd.{path.parent.name}" for path in package.glob("*/__init__.py")}
    assert modules - set(contract["source_modules"]) == {"syncd.cli", "syncd.daemon", "syncd.__main__"}


def test_the_import_graph_has_no_cycles():
    """No module imports, however indirectly, a module that imports it (lazy and TYPE_CHECKING imports count)."""
    import grimp

    graph = grimp.build_graph("syncd")
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                cycles.append(" -> ".join((module, *back)))
    assert not cycles, "\n".join(cycles)


def test_the_package_type_checks_strictly():
    """mypy --strict (the [tool.mypy] settings) finds nothing in syncd/: a typing error fails the suite, not a review."""
    result = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--config-file", str(ROOT / "pyproject.toml")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout
