"""Honest dependencies: every module of the packages imports, every declared runtime dependency is
imported somewhere in them, and every third-party module they import is declared in pyproject.toml.

The source is read with ``ast`` (imports inside functions count: heavy modules are imported lazily).
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import pkgutil
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "classifiers", "flows", "reports")
# Distribution name -> the top-level module it provides, where the two differ.
IMPORT_NAMES = {"scikit-learn": "sklearn", "scikit-image": "skimage", "pillow": "PIL", "pyyaml": "yaml",
                "prefect-dask": "prefect_dask", "dask": "dask", "jinja2": "jinja2"}
# Declared but never imported by name, and why.
USED_INDIRECTLY = {"pyarrow": "pandas' parquet engine: pd.read_parquet / DataFrame.to_parquet load it"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> tuple[set[str], set[str]]:
    """(runtime dependencies, dependencies of the optional extras except dev), normalised names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {_normalise(re.match(r"[A-Za-z0-9._-]+", r).group(0)) for r in requirements}

    extras = {n for extra, reqs in project.get("optional-dependencies", {}).items() if extra != "dev"
              for n in names(reqs)}
    return names(project["dependencies"]), extras


def imported_modules() -> dict[str, set[str]]:
    """Top-level third-party module -> the source files (under PACKAGES) that import it."""
    out: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in PACKAGES and top != "__future__":
                        out.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return out


def import_name(distribution: str) -> str:
    return IMPORT_NAMES.get(distribution, distribution.replace("-", "_"))


def test_every_module_of_the_packages_imports() -> None:
    failures = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}."):
            try:
                importlib.import_module(info.name)
            except Exception as exc:  # noqa: BLE001 - report every broken module at once
                failures.append(f"{info.name}: {type(exc).__name__}: {exc}")
    assert not failures, failures


def test_every_declared_runtime_dependency_is_imported() -> None:
    runtime, _ = declared()
    imported = set(imported_modules())
    unused = sorted(d for d in runtime if import_name(d) not in imported and d not in USED_INDIRECTLY)
    assert not unused, (f"declared in pyproject.toml but imported nowhere under {', '.join(PACKAGES)}: {unused}; "
                        f"remove them, or add them to USED_INDIRECTLY with the reason")


def test_every_third_party_import_is_declared() -> None:
    runtime, extras = declared()
    provided = {import_name(d): d for d in runtime | extras}
    undeclared = {module: sorted(files) for module, files in imported_modules().items() if module not in provided}
    assert not undeclared, (f"imported but not declared in pyproject.toml: {undeclared}; add the distribution "
                            f"(range in pyproject.toml, pin in constraints.txt)")


def test_indirect_dependencies_are_still_declared_and_installed() -> None:
    runtime, _ = declared()
    for distribution in USED_INDIRECTLY:
        assert distribution in runtime
        assert importlib.metadata.version(distribution)


@pytest.mark.parametrize("distribution", sorted(IMPORT_NAMES))
def test_import_name_map_matches_the_installed_distributions(distribution: str) -> None:
    """The hand-written map agrees with the installed metadata (skipped for what is not installed)."""
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{distribution} is not installed")
    providers = importlib.metadata.packages_distributions().get(IMPORT_NAMES[distribution], [])
    assert distribution in {_normalise(p) for p in providers}
