"""The dependency direction of DESIGN.md, checked by parsing every module's imports."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"core", "evaluation", "survey", "stats", "wsgi"}
#: package -> the packages of ours it may import
ALLOWED = {"core": set(), "evaluation": {"core", "stats"}, "survey": {"core", "evaluation"},
           "stats": set()}


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def modules(package: str):
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_downstream(package):
    for path in modules(package):
        ours = (imports_of(path) & OURS) - {package}
        assert ours <= ALLOWED[package], f"{path.relative_to(ROOT)} imports {ours - ALLOWED[package]}"


def test_stats_imports_only_stdlib_numpy_scipy():
    allowed = set(sys.stdlib_module_names) | {"numpy", "scipy", "stats", "__future__"}
    for path in modules("stats"):
        assert imports_of(path) <= allowed, f"{path.relative_to(ROOT)}: {imports_of(path) - allowed}"


def test_nothing_imports_a_view():
    for package in ("core", "evaluation", "survey", "stats"):
        for path in modules(package):
            if "views" in path.parts:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and ".views" in f".{node.module}":
                    pytest.fail(f"{path.relative_to(ROOT)} imports {node.module}")
