"""The pipeline file: which model finds a page's regions, and which model reads each region's label.

    layout: runs/layout/lightning_logs/version_0/hf     # optional when regions are given (`--regions`)
    routes:
      table: {model: runs/pubtabnet/lightning_logs/version_0/hf}
      text: {model: tiny, task: text}                  # task: only where the model does not name it

`layout` is a model (a string) or `{model, task?}`; its task is `layout` unless it says otherwise (a mixture
model names the one it means). Each route is `{model, task?}`. A model given as a relative path is read
relative to the file's folder when it is there (or starts with `./`, `../` or ends with `.ckpt`), so that a
pipeline file travels with its models; anything else (`tiny`, a hub id) is kept as written. Unknown keys are
errors: a misspelt `modle:` would otherwise silently drop a route. Whether a route's label is one of the
layout model's classes is known only once that model is read: the pipeline warns then (a label the layout
model never writes is a route never taken; regions files may still carry it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docvlm.errors import DataError, read_text_file

LAYOUT_TASK = "layout"


class PipelineSpecError(DataError):
    """A pipeline file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class ModelRef:
    """A model as the pipeline names it: its source (resolved path, hub id or `tiny`) and the task it runs."""

    model: str
    task: str | None = None


@dataclass
class PipelineSpec:
    """A pipeline file, checked.

    Attributes:
        layout: the layout model, or None when the regions come from elsewhere.
        routes: region label -> the model (and task) that reads regions of that label.
        path: the file it was read from, or what its dict is called (messages); None: `the pipeline`.
    """

    layout: ModelRef | None = None
    routes: dict[str, ModelRef] = field(default_factory=dict)
    path: Path | None = None

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else "the pipeline"


def read_spec(path: str | Path) -> PipelineSpec:
    """The pipeline file at `path`; `PipelineSpecError` names the file and what is wrong."""
    import yaml

    path = Path(path)
    text = read_text_file(path, "pipeline file", PipelineSpecError)
    try:
        data = yaml.load(text, Loader=_loader())  # noqa: S506  a SafeLoader
    except yaml.YAMLError as e:
        raise PipelineSpecError(f"{path}: not YAML ({' '.join(str(e).split())})") from None
    return spec_from_dict(data, str(path), Path(os.path.abspath(path)).parent, path)


def spec_from_dict(data: Any, where: str, base: Path | None = None, path: Path | None = None) -> PipelineSpec:
    """A pipeline from its parsed YAML (`where` names it in errors); relative model paths resolve under `base`."""
    if not isinstance(data, dict):
        raise PipelineSpecError(f"{where}: expected a mapping with `routes` (and `layout`), not {_kind(data)}")
    unknown = sorted(set(data) - {"layout", "routes"})
    if unknown:
        raise PipelineSpecError(f"{where}: unknown key {unknown[0]!r} (a pipeline has `layout` and `routes`)")
    routes = data.get("routes")
    if not isinstance(routes, dict) or not routes:
        raise PipelineSpecError(f"{where}: `routes` must map region labels to models, e.g. "
                                f"`routes: {{table: {{model: runs/tables/hf}}}}`, not "
                                f"{'an empty mapping' if routes == {} else _kind(routes)}")
    layout = None
    if data.get("layout") is not None:
        layout = _model_ref(data["layout"], f"{where}: layout", base, default_task=LAYOUT_TASK)
    checked = {}
    for label, entry in routes.items():
        if not isinstance(label, str) or not label.strip() or not label.isprintable() or ";" in label or "<" in label:
            raise PipelineSpecError(f"{where}: routes: {label!r} is not a region label")
        checked[label] = _model_ref(entry, f"{where}: routes: {label}", base)
    return PipelineSpec(layout, checked, path if path is not None else Path(where))


def _model_ref(entry: Any, where: str, base: Path | None, default_task: str | None = None) -> ModelRef:
    if isinstance(entry, str) and default_task is not None:  # `layout: DIR`
        entry = {"model": entry}
    if not isinstance(entry, dict):
        raise PipelineSpecError(f"{where}: expected {{model: ..., task: ...}}, not {_kind(entry)}")
    unknown = sorted(set(entry) - {"model", "task"})
    if unknown:
        raise PipelineSpecError(f"{where}: unknown key {unknown[0]!r} (expected `model` and optionally `task`)")
    model, task = entry.get("model"), entry.get("task", default_task)
    if not isinstance(model, str) or not model.strip():
        raise PipelineSpecError(f"{where}: `model` must name a model (a folder, a .ckpt, a hub id or `tiny`), "
                                f"not {_kind(model)}")
    if task is not None:
        import docvlm.tasks

        if not isinstance(task, str) or task not in docvlm.tasks.names():
            raise PipelineSpecError(f"{where}: task {task!r} is not one of {', '.join(docvlm.tasks.names())}")
    return ModelRef(_resolve(model.strip(), base), task)


def _resolve(model: str, base: Path | None) -> str:
    """A relative model path under the pipeline file's folder, where it is meant as a path."""
    path = Path(model).expanduser()
    if base is None or path.is_absolute() or model == "tiny":
        return str(path) if path.is_absolute() else model
    if (base / path).exists() or model.startswith(("./", "../")) or model.endswith(".ckpt"):
        return os.path.normpath(base / path)
    return model


def _loader():
    """PyYAML's SafeLoader refusing a key given twice in one mapping (it keeps the last: a second `table:`
    route would silently replace the first)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)):
                    continue  # unhashable: SafeLoader says so itself
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"{key!r} is given twice",
                                                            key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return Loader


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return repr(value) if isinstance(value, (str, int, float, bool)) else f"a {type(value).__name__}"

