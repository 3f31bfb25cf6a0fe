"""The declared dependencies match the imports, and uv.lock matches pyproject.toml (pure: no server).

Every third-party module imported by the package, the tests, the benchmarks or the scripts must come
from a distribution declared in pyproject.toml (the package's imports from the runtime list, the
tests' from runtime + ``dev``, the benchmarks' from runtime + ``bench``); every runtime distribution
must be imported somewhere, except the few in ``NOT_IMPORTED`` below.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = {
    "tauxcharge_assets": ("runtime",),
    "tauxcharge_assets_tests": ("runtime", "dev"),
    "benchmarks": ("runtime", "bench"),
    "scripts": ("runtime", "dev"),
}

# Runtime dependencies that no module imports, on purpose.
NOT_IMPORTED = {
    "dagster-webserver",  # the UI behind `dagster dev` (scripts/dagster_dev.sh), run as a program
    "dagster-postgres",  # the documented production run/event storage, named in dagster.yaml
    # Named by the product card (README, "Dependencies"): kept whether or not a module imports them
    # directly (tensorflow is Keras' backend; dagster-mlflow and scikit-learn may be used indirectly).
    "dagster",
    "dagster-mlflow",
    "elasticsearch",
    "tensorflow",
    "pandas",
    "scikit-learn",
}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, f"unreadable requirement {requirement!r}"
    return _normalize(match.group(1))


@cache
def _declared() -> dict[str, set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {"runtime": {_requirement_name(r) for r in project["dependencies"]}}
    for extra, requirements in project.get("optional-dependencies", {}).items():
        declared[extra] = {_requirement_name(r) for r in requirements}
    return declared


def _local_modules() -> set[str]:
    """Top-level names that are this repository's own code (folders, and the benchmarks' sibling modules)."""
    names = set(SOURCE_FOLDERS)
    for folder in ("benchmarks", "scripts"):
        names |= {path.stem for path in (ROOT / folder).glob("*.py")}
    return names


@cache
def _imports() -> dict[str, dict[str, set[str]]]:
    """folder -> third-party top-level module -> the files importing it."""
    local = _local_modules() | {"__future__"}
    found: dict[str, dict[str, set[str]]] = {}
    for folder in SOURCE_FOLDERS:
        modules: dict[str, set[str]] = {}
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top not in sys.stdlib_module_names and top not in local:
                        modules.setdefault(top, set()).add(str(path.relative_to(ROOT)))
        found[folder] = modules
    return found


@cache
def _distributions_of(module: str) -> set[str]:
    """The distributions providing a top-level module; for one not installed here (the ``bench``
    extras are not in the default environment), the distribution of the same name."""
    installed = importlib.metadata.packages_distributions().get(module)
    return {_normalize(name) for name in installed} if installed else {_normalize(module)}


def test_the_scan_sees_the_imports() -> None:
    imports = _imports()
    assert {"dagster", "numpy", "keras"} <= set(imports["tauxcharge_assets"])
    assert "pytest" in imports["tauxcharge_assets_tests"]
    assert "statsforecast" in imports["benchmarks"]


def test_every_import_comes_from_a_declared_distribution() -> None:
    declared = _declared()
    undeclared = []
    for folder, groups in SOURCE_FOLDERS.items():
        allowed = set().union(*(declared.get(group, set()) for group in groups))
        for module, files in sorted(_imports()[folder].items()):
            if not _distributions_of(module) & allowed:
                undeclared.append(
                    f"{module} (from {' or '.join(sorted(_distributions_of(module)))}; "
                    f"imported by {', '.join(sorted(files))}) is not declared in {' / '.join(groups)}"
                )
    assert not undeclared, "\n".join(undeclared)


def test_every_runtime_dependency_is_imported_somewhere() -> None:
    imported = set().union(*(set(modules) for modules in _imports().values()))
    providers = set().union(*(_distributions_of(module) for module in imported))
    unused = sorted(_declared()["runtime"] - providers - NOT_IMPORTED)
    assert not unused, f"declared in pyproject.toml but imported nowhere: {unused}"


def test_the_allow_list_names_declared_runtime_dependencies() -> None:
    assert _normalize("scikit_learn") in _declared()["runtime"]
    assert {_normalize(name) for name in NOT_IMPORTED} <= _declared()["runtime"]


def _uv() -> str | None:
    """uv from PATH, or where scripts/bootstrap.sh's `pip install --user uv` puts it."""
    found = shutil.which("uv")
    if found:
        return found
    user_bin = Path.home() / ".local" / "bin" / "uv"
    return str(user_bin) if user_bin.is_file() else None


def test_the_lock_file_is_up_to_date_with_pyproject() -> None:
    assert (ROOT / "uv.lock").is_file(), "uv.lock is missing: run `uv lock` and commit it"
    uv = _uv()
    if uv is None:
        pytest.skip("uv is not installed (neither on PATH nor in ~/.local/bin): cannot run `uv lock --check`")
    # --offline: an up-to-date lock is checked from the lock alone; an outdated one fails either way.
    result = subprocess.run(
        [uv, "lock", "--check", "--offline"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, (
        "uv.lock does not match pyproject.toml: run `uv lock` (or `uv lock --upgrade-package NAME`) "
        f"and commit uv.lock\n{result.stdout}{result.stderr}"
    )
