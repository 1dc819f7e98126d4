"""Metrics with the reference implementations' exact semantics, one module per domain.

`docvlm.metrics.teds(...)` reaches every name a module lists in its `__all__`. The names are read from the
modules' source, and a module is imported on first use, so that one domain's metrics do not load every
domain's libraries (RDKit, lxml, ...). A new module needs no edit here.
"""

import ast
import functools
import importlib
import pkgutil
from pathlib import Path


@functools.cache
def _exports() -> dict[str, str]:
    """Each exported name -> the module (of this package) whose `__all__` lists it."""
    where: dict[str, str] = {}
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        source = Path(module.module_finder.path) / module.name
        tree = ast.parse((source / "__init__.py" if module.ispkg else source.with_suffix(".py")).read_bytes())
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
                where.update(dict.fromkeys(ast.literal_eval(node.value), module.name))
    return where


def __getattr__(name: str):
    if name == "__all__":
        return sorted(_exports())
    if name not in _exports():
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_exports()[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_exports()))
