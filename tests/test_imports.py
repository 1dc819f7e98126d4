"""Dependencies point one way: converters -> metrics -> tasks -> core -> jobs -> CLI (each layer may import
only its own and the layers before it), no module imports another's private name, there are no import
cycles, and the core names no task's metric."""

import ast
from pathlib import Path

import pytest

import docvlm.tasks

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"docvlm.converters": ROOT / "converters", "docvlm.metrics": ROOT / "docvlm" / "metrics",
            "docvlm.tasks": ROOT / "tasks", "docvlm.pipeline": ROOT / "docvlm" / "pipeline", "docvlm": ROOT / "docvlm"}
# Layers, lowest first. `docvlm.errors` (the user errors every layer may raise) imports nothing.
LAYERS = [
    ("errors", {"docvlm.errors"}),
    ("converters", {"docvlm.converters"}),
    ("metrics", {"docvlm.metrics"}),
    ("tasks", {"docvlm.tasks"}),
    ("core", {"docvlm.images", "docvlm.decode", "docvlm.model", "docvlm.module", "docvlm.data", "docvlm.items",
              "docvlm.hub_data", "docvlm.callbacks", "docvlm.export_worker", "docvlm.pages", "docvlm.progress",
              "docvlm.describe", "docvlm.pixels", "docvlm.batching", "docvlm.mixture", "docvlm.outputs"}),
    ("jobs", {"docvlm", "docvlm.inference", "docvlm.convert_run", "docvlm.convert", "docvlm.convert_manifest",
              "docvlm.evaluate", "docvlm.export", "docvlm.report", "docvlm.pipeline"}),
    ("cli", {"docvlm.cli", "docvlm.lightning_cli"}),
]
# Imports against the direction still to be removed, each with why; the test fails once one is gone.
UPWARD: set[tuple[str, str]] = set()


def modules() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package's `__init__` by the package's name)."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.glob("*.py"):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


MODULES = modules()


def layer(module: str) -> int:
    """Index of the layer holding `module`: the entry naming it or its longest named package."""
    best = None
    for index, (_, names) in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (best is None or len(name) > len(best[1])):
                best = (index, name)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")
    return best[0]


def imports(module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import of docvlm in `module`, lazy ones
    (inside functions) included."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    package = module if MODULES[module].stem == "__init__" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [alias.name for alias in node.names]
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES]  # `from docvlm import describe`
            found += [(s, [], node.lineno) for s in submodules]
            if len(submodules) < len(names):
                found.append((base, [n for n in names if f"{base}.{n}" not in MODULES], node.lineno))
    return [(target, names, line) for target, names, line in found if target.split(".")[0] == "docvlm"]


def graph() -> dict[str, set[str]]:
    return {m: {target for target, _, _ in imports(m) if target in MODULES} for m in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module):
    wrong = [f"{MODULES[module].relative_to(ROOT)}:{line}: imports {target} ({LAYERS[layer(target)][0]})"
             for target, _, line in imports(module) if layer(target) > layer(module) and (module, target) not in UPWARD]
    assert not wrong, f"{module} ({LAYERS[layer(module)][0]}) " + "; ".join(wrong)


def test_the_listed_upward_imports_still_exist():
    assert all(target in {t for t, _, _ in imports(module)} for module, target in UPWARD)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_is_imported_from_another_module(module):
    private = [f"{MODULES[module].relative_to(ROOT)}:{line}: {name} from {target}"
               for target, names, line in imports(module)
               for name in names if name.startswith("_") and target != module]
    assert not private


def test_no_import_cycles():
    """Strongly connected components of the module graph (Tarjan's), lazy imports included."""
    edges, index, low, stack, on_stack, components = graph(), {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in edges[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = set()
            while not component or node not in component:
                component.add(stack.pop())
            on_stack.difference_update(component)
            if len(component) > 1:
                components.append(component)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert not components, [sorted(c) for c in components]


def test_the_core_names_no_tasks_metric():
    """Metric names live in the tasks' declarations (`Task.metrics`); the core reads them from there."""
    names = {metric.name for name in docvlm.tasks.names() for metric in docvlm.tasks.get(name).metrics}
    core = [m for m in MODULES if LAYERS[layer(m)][0] in ("core", "jobs", "cli")]
    found = [f"{MODULES[m].relative_to(ROOT)}:{node.lineno}: {node.value!r}" for m in core
             for node in ast.walk(ast.parse(MODULES[m].read_text(encoding="utf-8")))
             if isinstance(node, ast.Constant) and node.value in names]
    assert not found
