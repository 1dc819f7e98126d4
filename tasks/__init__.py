"""Tasks: one module per domain, each registering a `Task` subclass.

Every module in this package is imported here, so a new task needs no edit anywhere else.
"""

import importlib
import pkgutil

from docvlm.tasks.base import Metric, Parsed, Sample, Task, get, names, register

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Metric", "Parsed", "Sample", "Task", "get", "names", "register"]
