"""The code's shape, checked from its own imports: no circle, nothing upward, nothing private.

These are the structural contracts of docs/ARCHITECTURE.md, read from the source with :mod:`ast`
(function-level imports included, so a lazy import cannot hide a circle):

* no import circle between modules;
* the packages import one way: ``importance`` none of the others, ``tasks`` only ``importance``,
  ``reports`` none of them (and no TensorFlow or Keras), ``benchmarks`` any of them;
* no underscore name is imported from another module, and a private module is imported only
  from inside its own package; tests do not patch underscore attributes;
* ``importance/`` keeps at most 16 top-level modules (the rest lives in subpackages);
* exactly one registry class: every ``Registry(...)`` is an instance of
  :class:`importance.registry.Registry`.
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("importance", "tasks", "reports", "benchmarks")
# What each package may import, of the project's packages (its own always).
ALLOWED = {
    "importance": set(),
    "tasks": {"importance"},
    "reports": set(),
    "benchmarks": {"importance", "tasks", "reports"},
}
MAX_TOP_LEVEL_MODULES = 16


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources(*packages: str) -> dict[str, pathlib.Path]:
    found = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _sources(*PACKAGES)


def _is_package(name: str) -> bool:
    return MODULES.get(name, pathlib.Path()).name == "__init__.py"


def _imports(name: str, path: pathlib.Path) -> Iterator[tuple[str, str | None, int]]:
    """``(module, imported name or None, line)`` for every import in the file, relative resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if _is_package(name) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield base, alias.name, node.lineno


def _project_edges() -> dict[str, set[str]]:
    """Module -> the project modules it imports (a ``from pkg import mod`` counts as ``pkg.mod``)."""
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for module, imported, _ in _imports(name, path):
            target = f"{module}.{imported}" if imported and f"{module}.{imported}" in MODULES else module
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges[name].add(target)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in edges[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle():
    # A module that imports its own package's face while the face imports it is a circle too.
    assert _cycles(_project_edges()) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_one_way(package):
    wrong = []
    for name, path in MODULES.items():
        if name.split(".")[0] != package:
            continue
        for module, _, line in _imports(name, path):
            top = module.split(".")[0]
            if top in PACKAGES and top != package and top not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
            if package == "reports" and top in ("tensorflow", "keras"):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert wrong == []


def _private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def test_nothing_private_crosses_a_module():
    files = {**MODULES, **_sources("tests")}
    wrong = []
    for name, path in files.items():
        for module, imported, line in _imports(name, path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if imported and _private(imported):
                wrong.append(f"{where} imports {imported} from {module}")
            parts = module.split(".")
            for depth, part in enumerate(parts):
                owner = ".".join(parts[:depth])
                if _private(part) and not (name == owner or name.startswith(owner + ".")):
                    wrong.append(f"{where} imports the private module {module}")
    assert wrong == []


def test_tests_do_not_patch_private_attributes():
    wrong = []
    for _name, path in _sources("tests").items():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "setattr"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
                and _private(node.args[1].value)
            ):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} patches {node.args[1].value}")
    assert wrong == []


def test_importance_keeps_few_top_level_modules():
    top = sorted(p.name for p in (ROOT / "importance").glob("*.py") if p.name != "__init__.py")
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_one_registry_class():
    from importance.registry import Registry

    definitions = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for name, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and "Registry" in node.name
    ]
    assert definitions == ["importance/registry.py:" + str(_line_of_registry_class())]
    import importance.interpret.registry as saliency
    import importance.measures.registry as measures
    import tasks.registry

    for instance in (measures.MEASURES, saliency.SALIENCY, tasks.registry.TASKS):
        assert type(instance) is Registry


def _line_of_registry_class() -> int:
    tree = ast.parse((ROOT / "importance" / "registry.py").read_text())
    return next(n.lineno for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Registry")
