"""Inference: load a model for decoding and run it on images, the same way everywhere.

`docvlm.load(model)` returns a `Model`; `docvlm convert` and `docvlm evaluate` are thin layers over it, and
the Lightning module's validation decodes with the same `docvlm.decode.generate`, `TaskDataset` items and
`Collator`, so all of them give the same text for the same model, images and prompts.

A model is a Hugging Face folder (a run's exported `hf/`, which names its task in `docvlm.json`), a hub id,
a `docvlm fit` checkpoint (`.ckpt`: read with `weights_only=True`, LoRA merged; no Lightning module is
built), or `tiny`. One set of rules picks device and dtype: the first CUDA device when there is one, else the
CPU; bfloat16 on CUDA, float32 elsewhere.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docvlm.tasks
from docvlm import describe
from docvlm.decode import MAX_BEAMS, Decoding, Generation
from docvlm.describe import make_task
from docvlm.errors import SettingsError
from docvlm.tasks.base import MAX_NEW_TOKENS, Parsed, Sample, Task


class ModelLoadError(ValueError):
    """A model that cannot be loaded; the message names it and says why."""


class TaskMismatchError(ValueError):
    """The task asked for contradicts the one the model was trained for."""


# ---- device, dtype, loading ------------------------------------------------------------------------
def resolve_device(device: str | None = None):
    """`device`, or the first CUDA device when there is one, else the CPU."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device {device!r}: {e}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available on this machine")
    return resolved


def resolve_dtype(dtype: str | None, device) -> str:
    """`dtype`, or bfloat16 on CUDA and float32 elsewhere (`auto`/None)."""
    if dtype in (None, "auto"):
        return "bfloat16" if device.type == "cuda" else "float32"
    return dtype


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def load_weights(source: str | Path, dtype: str = "float32"):
    """(model, processor, description or None) for decoding; raises `ModelLoadError` naming `source`."""
    from docvlm.model import ModelSpec, RemoteCodeError, load

    source = str(source)
    path = Path(source).expanduser()
    check_source(source)
    if source.endswith(".ckpt"):
        return _from_checkpoint(path, dtype)
    try:
        model, processor = load(ModelSpec(name_or_path=source, dtype=dtype))
    except RemoteCodeError as e:
        raise ModelLoadError(str(e)) from None
    except Exception as e:  # noqa: BLE001  unknown hub id, no network, incomplete folder
        where = "model folder" if path.is_dir() else "folder, and not a model the Hugging Face Hub could give"
        raise ModelLoadError(f"{source}: cannot load (no such {where}: {type(e).__name__}: {e})") from None
    return model, processor, describe.read(path) if path.is_dir() else None


def _without_config(folder: Path) -> str:
    """Why a folder without `config.json` cannot be loaded, from what it holds."""
    pickles = sorted(p.name for p in folder.glob("pytorch_model*.bin"))
    if pickles:
        return (f"it holds {pickles[0]} (pickled weights) but no config.json: weights alone do not say which "
                f"model they belong to; save the model with save_pretrained (config.json, model.safetensors and "
                f"the processor's files)")
    return "no config.json (expected config.json, model.safetensors and the processor's files)"


def check_source(source: str | Path) -> None:
    """Raise `ModelLoadError` for a local model that is not there (or not a model), without loading anything:
    the commands call it first, so that a mistyped path is named before a task is asked for or a file written."""
    source = str(source)
    path = Path(source).expanduser()
    if source.endswith(".ckpt"):
        if not path.is_file():
            raise ModelLoadError(f"{path}: no such checkpoint file")
    elif source != "tiny" and not path.is_dir():
        if path.exists():
            raise ModelLoadError(f"{source}: not a model folder "
                                 f"(expected a Hugging Face folder, a .ckpt, a hub id or 'tiny')")
        if not _HUB_ID.match(source) or source.startswith((".", "/", "~")):
            raise ModelLoadError(f"{source}: no such model folder")
    if path.is_dir() and not (path / "config.json").is_file():
        raise ModelLoadError(f"{source}: not a Hugging Face model folder: {_without_config(path)}")


def read_checkpoint(path: Path, mmap: bool = False):
    """(model settings, trained weights, description or None) of a `docvlm fit` checkpoint, every setting and
    field checked (`weights_only=True`: no pickled code runs); `ModelLoadError` names the file and the field.
    With `mmap`, tensors are mapped, not read: a cheap check before processes are launched."""
    import pickle

    import torch

    from docvlm.model import ModelSpec, model_spec

    if not path.is_file():
        raise ModelLoadError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        settings = checkpoint["hyper_parameters"]["model"]
        state = {k[len("net."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    except (RuntimeError, KeyError, EOFError, ValueError, TypeError, AttributeError, pickle.UnpicklingError) as e:
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ModelLoadError(f"{path}: not a docvlm checkpoint that can be read safely "
                             f"({type(e).__name__}: {reason})") from None
    try:
        if not isinstance(settings, (dict, ModelSpec)):
            raise SettingsError(f"model settings must be a mapping, not {type(settings).__name__}")
        spec = model_spec(settings)
        description = describe.check(checkpoint["docvlm"], "its description") if "docvlm" in checkpoint else None
    except SettingsError as e:
        raise ModelLoadError(f"{path}: {e}") from None
    return spec, state, description


def _from_checkpoint(path: Path, dtype: str):
    """The checkpoint's model rebuilt from its `model` settings, its trained weights loaded, LoRA merged."""
    from docvlm.model import DTYPES, load, unwrap

    spec, state, description = read_checkpoint(path)
    try:
        model, processor = load(spec)
    except Exception as e:  # noqa: BLE001  the base model it names: an unknown hub id, no network, a bad folder
        raise ModelLoadError(f"{path}: cannot load its base model {spec.name_or_path!r} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    missing = sorted(trained - state.keys()) if spec.quantize else []
    if missing:  # a 4-bit base is not in the checkpoint, its adapters must be
        raise ModelLoadError(f"{path}: lacks {len(missing)} trained weights of this model, e.g. {missing[0]}")
    try:
        model.load_state_dict(state, strict=spec.quantize is None)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise ModelLoadError(f"{path}: its weights do not fit its model settings ({str(e).splitlines()[0]})") from None
    if description is not None:  # checkpoints before docvlm.json named its base model: the card's licence needs it
        description.setdefault("base_model", spec.name_or_path)
    return unwrap(model).to(DTYPES[dtype]), processor, description


def resolve_task(description: dict | None, name: str | None, options: dict[str, Any] | None = None) -> Task:
    """The model's task (from its description), or `name` for a model that does not describe itself.

    `options` override the model's task options (e.g. a scoring convention); a `name` that contradicts the
    model's task is an error, as converting with another task's prompt and parser gives garbage. A mixture
    model's task is the one `name` picks among its tasks (`describe.pick`: none is an error listing them).
    """
    options = dict(options or {})
    if description is not None:
        description = pick(description, name)
        if name is not None and name != description["task"]:
            raise TaskMismatchError(f"the model was trained for task {description['task']!r}, not {name!r}")
        return make_task(description["task"], {**description.get("options", {}), **options})
    if name is None:
        raise TaskMismatchError(f"the model does not name its task (no {describe.DESCRIPTION}): give --task "
                                f"({', '.join(docvlm.tasks.names())})")
    return make_task(name, options)


def pick(description: dict, name: str | None) -> dict:
    """`describe.pick`: a mixture model's task `name`, its error a `TaskMismatchError`."""
    try:
        return describe.pick(description, name)
    except ValueError as e:
        raise TaskMismatchError(str(e)) from None


# ---- decoding a set of items -----------------------------------------------------------------------
def decode_items(model, processor, items: Iterable[list[dict]], decoding: Decoding, max_new_tokens: int,
                 token_scores: bool = False) -> Iterator[list[tuple[dict, Generation | Exception]]]:
    """For each group of `TaskDataset`-style items, [(item, its Generation or the error)] in order; with
    `token_scores` (a task that `wants_token_scores`), generations carry their tokens' probabilities.

    An item whose image failed to load carries the error message; if a whole batch fails to decode, each
    item is decoded alone, so that one bad page fails alone. The next group's pixel values are made in a
    thread while the model decodes this one (a large share of a page on a CPU, for a small model).
    """
    from concurrent.futures import ThreadPoolExecutor

    from docvlm.decode import generate
    from docvlm.items import Collator

    collate = Collator(processor, with_targets=False)

    def run(group: list[dict], pixel_values=None) -> list[Generation]:
        return generate(model, processor, collate(group, pixel_values), decoding, max_new_tokens, token_scores)

    with ThreadPoolExecutor(1, thread_name_prefix="docvlm-pixels") as pool:
        def ahead(group: list[dict]):
            good = [item for item in group if "error" not in item]
            return group, good, pool.submit(collate.pixel_values, [item["image"] for item in good]) if good else None

        for group, good, pixels in _one_ahead(map(ahead, items)):
            yield _decoded(group, good, pixels, run)


def _decoded(group: list[dict], good: list[dict], pixels, run) -> list[tuple[dict, Generation | Exception]]:
    """[(item, its Generation or the error)] of one group: its `good` items in one batch (with the pixel
    values made ahead), or each alone when the batch fails."""
    results: dict[int, Generation | Exception] = {id(i): ValueError(i["error"]) for i in group if "error" in i}
    if good:
        try:
            results.update(zip(map(id, good), run(good, pixels.result())))
        except Exception as e:  # noqa: BLE001
            if len(good) == 1:
                results[id(good[0])] = e
            else:
                _free_accelerator_memory()
                for item in good:
                    try:
                        results[id(item)] = run([item])[0]
                    except Exception as e1:  # noqa: BLE001
                        results[id(item)] = e1
    return [(item, results[id(item)]) for item in group]


def _one_ahead(iterable: Iterable) -> Iterator:
    """`iterable`'s elements, each taken from it once the one after it is (so that work that taking one
    starts runs while the caller uses the one before)."""
    iterator = iter(iterable)
    current = next(iterator, _END)
    while current is not _END:
        following = next(iterator, _END)
        yield current
        current = following


_END = object()


def _free_accelerator_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def with_decoding_problems(parsed: Parsed, generation: Generation) -> Parsed:
    parsed.problems = [*generation.problems, *parsed.problems]
    return parsed


# ---- the Python API --------------------------------------------------------------------------------
@dataclass
class Model:
    """A model ready to read documents; `docvlm.load(...)` makes one.

        model = docvlm.load("runs/pubtabnet/lightning_logs/version_0/hf")
        tables = model(["scan1.png", "scan2.png"], batch_size=8)
        tables[0].text, tables[0].value, tables[0].problems
        convert_with(model, ["scans/", "report.pdf"], "converted/")   # `docvlm convert` (docvlm.convert)
    """

    net: Any
    processor: Any
    task: Task
    device: Any
    description: dict | None = None
    decoding: Decoding = field(default_factory=Decoding)
    source: str | None = None  # what it was loaded from (`source_name`): convert's manifest rows record it

    @property
    def image_size(self) -> int:
        return self.processor.image_processor.size["height"]

    def __call__(self, images: Sequence, prompts: Sequence[str | None] | None = None, *, batch_size: int = 8,
                 num_beams: int | None = None, max_new_tokens: int | None = None,
                 repetition_guard: bool | None = None) -> list[Parsed]:
        """The task's parsed results for `images` (PIL images or paths), in order.

        `prompts` are per-image prompt parts appended to the task's prompt (e.g. a radiology INDICATION),
        exactly as training builds prompts from a sample's `prefix`. Each result has `.text`, `.value`
        (the domain object; a layout model's regions each with their confidence as `.score`) and `.problems`
        (decoding and parsing problems)."""
        from docvlm.items import TaskDataset, check_prompts

        if prompts is not None and len(prompts) != len(images):
            raise ValueError(f"{len(prompts)} prompts for {len(images)} images")
        samples = [Sample(id=str(i), image=image, prefix=(prompts[i] if prompts else None) or "",
                          source=f"prompts[{i}]") for i, image in enumerate(images)]
        check_prompts(self.task, samples, self.processor, self.net)
        dataset = TaskDataset(samples, self.task, self.image_size, targets=[None] * len(samples))
        decoding, max_new = self.decoding_for(num_beams, max_new_tokens, repetition_guard)
        groups = ([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
                  for start in range(0, len(dataset), batch_size))
        results: list[Parsed] = []
        for group in decode_items(self.net, self.processor, groups, decoding, max_new, self.task.wants_token_scores):
            for item, generation in group:
                if isinstance(generation, Exception):
                    raise generation
                results.append(with_decoding_problems(self.task.parse_generation(generation), generation))
        return results

    def decoding_for(self, num_beams=None, max_new_tokens=None, repetition_guard=None) -> tuple[Decoding, int]:
        """This model's decoding settings with the given ones overriding, and the output budget."""
        decoding = Decoding(
            num_beams=num_beams or self.decoding.num_beams,
            max_new_tokens=max_new_tokens or self.decoding.max_new_tokens,
            repetition_guard=self.decoding.repetition_guard if repetition_guard is None else repetition_guard,
        )
        return decoding, decoding.max_new_tokens or self.task.max_target_tokens


def load(model: str | Path, device: str | None = None, dtype: str | None = None, task: str | None = None,
         **task_options) -> Model:
    """A `Model` from a Hugging Face folder, hub id, `docvlm fit` checkpoint or `tiny`, on `device`
    (default: CUDA when there is one) in `dtype` (default: bfloat16 on CUDA, float32 elsewhere).

    The task comes from the model's `docvlm.json`; `task` is needed only for a model without one, or to
    choose one of a mixture model's tasks."""
    resolved = resolve_device(device)
    net, processor, description = load_weights(model, resolve_dtype(dtype, resolved))
    description = pick(description, task) if description is not None else None
    chosen = resolve_task(description, task, task_options)
    decoding = Decoding(**description["decoding"]) if description and description.get("decoding") else Decoding()
    return Model(net.to(resolved).eval(), processor, chosen, resolved, description, decoding, source_name(model))


def source_name(model: str | Path) -> str:
    """A model as `docvlm convert` records it: a folder or checkpoint by its absolute path, else as given."""
    return os.path.abspath(model) if os.path.exists(model) else str(model)


# ---- the decoding options shared by `convert` and `evaluate` -----------------------------------------
def positive(kind: type, most: int | None = None):
    def check(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"{text!r} is more than {most}")
        return value

    return check


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """`--model`, `--task`, `--task-option` and the decoding flags, the same for every command that decodes."""
    group = parser.add_argument_group("model and decoding (the same for convert and evaluate)")
    group.add_argument("--model", metavar="MODEL",
                       help="Hugging Face folder (e.g. a run's exported hf/), hub id, a `docvlm fit` checkpoint "
                            "(.ckpt), or `tiny` (random test model)")
    group.add_argument("--task", choices=docvlm.tasks.names(),
                       help="the task; read from the model when it names one (docvlm.json), needed otherwise")
    group.add_argument("--task-option", action="append", type=task_option, default=[], metavar="KEY=VALUE",
                       help="task option, value read as a YAML scalar (repeatable), e.g. encoding=bekern")
    group.add_argument("--batch-size", type=positive(int), default=8, help="pages per decoding batch (default 8)")
    group.add_argument("--num-beams", type=positive(int, MAX_BEAMS),
                       help="beam width; 1 = greedy (default: the model's, else 1)")
    group.add_argument("--max-new-tokens", type=positive(int, MAX_NEW_TOKENS),
                       help="longest output in tokens (default: the task's max_target_tokens)")
    group.add_argument("--repetition-guard", action=argparse.BooleanOptionalAction, default=None,
                       help="stop an output stuck repeating one pattern (default: on)")
    group.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                       help="weights' dtype (default auto: bfloat16 on CUDA, float32 elsewhere)")
    group.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)")
    group.add_argument("--num-workers", type=int, default=2,
                       help="processes that load and fit images ahead of the model (default 2)")


def task_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected key=value (e.g. encoding=bekern)")
    return key.strip(), parse_scalar(value)


def parse_scalar(text: str) -> Any:
    """A `--task-option` value as a YAML scalar (`512` -> int, `true` -> bool, `null` -> None); text that
    is not a YAML scalar (`a: b`, `[x`) stays the string it is."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if value is None or isinstance(value, (str, int, float, bool)) else text


def load_from_args(args: argparse.Namespace, device=None) -> Model:
    """`load` with the command's flags; `ModelLoadError`/`ValueError` say what is wrong."""
    return load(args.model, device=str(device) if device is not None else args.device,
                dtype=args.dtype, task=args.task, **dict(args.task_option))


def check_task_early(args: argparse.Namespace) -> None:
    """Usage errors about the task and the model's settings before any weights load (and before `--devices N`
    launches N processes, each of which would report them): a folder's `docvlm.json` or a checkpoint's settings
    (its tensors mapped, not read) are checked cheaply."""
    check_source(args.model)
    path = Path(str(args.model)).expanduser()
    description = describe.read(path) if path.is_dir() else None
    if str(args.model).endswith(".ckpt") and path.is_file():  # once, before any process is launched
        description = read_checkpoint(path, mmap=True)[2]
    if description is None and (path.is_dir() or str(args.model) == "tiny" or not str(args.model).endswith(".ckpt")):
        resolve_task(None, args.task, dict(args.task_option))
    elif description is not None:
        resolve_task(description, args.task, dict(args.task_option))
