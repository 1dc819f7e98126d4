"""What an exported model folder says about itself, so that nobody has to remember how it was trained.

Every folder `docvlm fit` or `docvlm export` writes holds, beside the weights and the processor:
- `docvlm.json`: the task (registered name and options), its prompt, image mode and size, the output
  length, the decoding settings, the docvlm version, and the last validation metrics with what they were
  measured on. `docvlm convert`, `evaluate` and `docvlm.load` read the task from it.
- `generation_config.json` with the task's `max_new_tokens` and docvlm's `<eos>`/`<pad>`: plain
  `transformers` `generate` would otherwise stop at 20 tokens.
- `README.md`, a model card: what the model does, its metrics, and how to run it three ways.

A mixture model (`docvlm.mixture`) lists its tasks under `tasks`, each with the keys above that are a
task's own; `pick` gives one of them as a single task's description.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from docvlm import tasks
from docvlm.errors import SettingsError, check_range
from docvlm.tasks.base import MAX_NEW_TOKENS, Task

DESCRIPTION = "docvlm.json"


def version() -> str:
    try:
        return metadata.version("docvlm")
    except metadata.PackageNotFoundError:
        return "unknown"


def description(task, image_size: int, decoding, metrics: dict[str, float] | None = None,
                measured_on: dict[str, Any] | None = None, base_model: str | None = None) -> dict[str, Any]:
    """The JSON-able description of a model trained for `task` from `base_model` (a hub id, a folder, `tiny`)."""
    return {
        "task": task.name,
        "base_model": base_model,
        "options": task.options(),
        "prompt": task.prefix,
        "image_mode": task.image_mode,
        "image_size": image_size,
        "max_target_tokens": task.max_target_tokens,
        "decoding": asdict(decoding),
        "docvlm_version": version(),
        "metrics": metrics or {},
        "measured_on": measured_on,
    }


def read(folder: Path) -> dict[str, Any] | None:
    """A folder's description, or None for a folder without one (an older export, a hub model)."""
    path = Path(folder) / DESCRIPTION
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else e
        raise SettingsError(f"{path}: cannot read the model's description ({reason})") from None
    return check(data, str(path))


def check(data: Any, where: str) -> dict[str, Any]:
    """`data` if it is a description every field of which can be used, else a `SettingsError` naming `where`
    and the field: a model folder or checkpoint is not trusted to be what `description` wrote. A mixture's
    (`tasks`) has each of its tasks checked as a single task's description would be (`pick`)."""
    if isinstance(data, dict) and "tasks" in data and "task" not in data:
        return _check_mixture(data, where)
    if not isinstance(data, dict) or not isinstance(data.get("task"), str):
        raise SettingsError(f"{where}: not a docvlm model description (needs 'task' and 'options', or 'tasks')")
    return _check_one(data, where)


def _check_one(data: dict[str, Any], where: str) -> dict[str, Any]:
    """`check` of a single task's description."""
    from docvlm.decode import Decoding
    from docvlm.model import MAX_IMAGE_SIZE

    _check_kinds(data, where)
    unknown = sorted(set(data.get("decoding") or {}) - set(Decoding.__dataclass_fields__))
    if unknown:
        raise SettingsError(f"{where}: decoding has no setting {unknown[0]!r:.60}; its settings: "
                            f"{', '.join(Decoding.__dataclass_fields__)}")
    try:
        task = make_task(data["task"], data.get("options", {}))
        Decoding(**data.get("decoding") or {})
    except (KeyError, ValueError) as e:  # KeyError: an unknown task
        message = e.args[0] if isinstance(e, KeyError) else str(e)
        raise SettingsError(f"{where}: {message}") from None
    if data.get("image_mode", task.image_mode) not in ("pad", "stretch"):
        raise SettingsError(f"{where}: image_mode must be 'pad' or 'stretch', not {data['image_mode']!r:.60}")
    check_range(where, "image_size", data.get("image_size", 1), 1, MAX_IMAGE_SIZE)
    check_range(where, "max_target_tokens", data.get("max_target_tokens", 1), 1, MAX_NEW_TOKENS)
    return data


_KINDS = {"options": (dict,), "prompt": (str,), "image_mode": (str,), "image_size": (int,), "max_target_tokens": (int,),
          "decoding": (dict,), "docvlm_version": (str,), "metrics": (dict,), "measured_on": (dict, type(None)),
          "base_model": (str, type(None))}


def _check_kinds(data: dict, where: str, known: dict[str, tuple[type, ...]] = _KINDS) -> None:
    """Each `known` field of the kind `description` writes (no bool for a number), metrics numbers."""
    for key, kinds in known.items():
        value = data.get(key)
        if key in data and (not isinstance(value, kinds) or isinstance(value, bool)):
            raise SettingsError(f"{where}: {key} must be {' or '.join(k.__name__ for k in kinds)}, "
                                f"not {type(value).__name__}")
    for name, value in (data.get("metrics") or {}).items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise SettingsError(f"{where}: metric {name!r:.60} must be a number, not {type(value).__name__}")


_MIXTURE_KINDS = {"seed": (int,), "score": (int, float, type(None))}
_ENTRY_KINDS = {"weight": (int, float)}


def _check_mixture(data: dict[str, Any], where: str) -> dict[str, Any]:
    """`check` of a mixture's description: its shared fields, then each task as `pick` gives it, named by its
    place (`tasks[1]`) and task."""
    entries = data["tasks"]
    if not isinstance(entries, list) or not entries:
        raise SettingsError(f"{where}: tasks must be a non-empty list of task descriptions, not "
                            f"{type(entries).__name__ if entries else 'empty'}")
    _check_kinds(data, where, {**_KINDS, **_MIXTURE_KINDS})
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("task"), str):
            raise SettingsError(f"{where}: tasks[{i}] must be a task's description with its 'task' name, not "
                                f"{type(entry.get('task') if isinstance(entry, dict) else entry).__name__}")
        name = entry["task"]
        if name in seen:
            raise SettingsError(f"{where}: tasks[{i}]: task {name!r:.60} is listed twice")
        seen.add(name)
        here = f"{where}: tasks[{i}] ({name:.60})"
        _check_kinds(entry, here, _ENTRY_KINDS)
        if "weight" in entry and not entry["weight"] > 0:
            raise SettingsError(f"{here}: weight must be above 0, not {entry['weight']!r:.60}")
        _check_one(pick(data, name), here)
    return data


def make_task(name: str, options: dict[str, Any]) -> Task:
    """`tasks.get(name, **options)`, with a message listing the task's options on a bad key."""
    import dataclasses

    cls = type(tasks.get(name))
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"task {name!r} has no option {', '.join(map(repr, unknown))}; "
                         f"its options: {', '.join(known)}")
    try:
        return tasks.get(name, **options)
    except SettingsError:  # names the task and the option already
        raise
    except (TypeError, ValueError) as e:
        raise ValueError(f"task {name!r}: bad option ({e})") from None


def max_new_tokens(data: dict[str, Any]) -> int:
    """The most tokens the model writes: the run's decoding setting, else the task's target length."""
    return data["decoding"].get("max_new_tokens") or data["max_target_tokens"]


def pick(data: dict[str, Any], task: str | None) -> dict[str, Any]:
    """The description of task `task` of a mixture model (its own keys over the shared ones); a
    single-task description as it is. A mixture without `task`, or with one it lacks, is an error listing
    its tasks."""
    if "tasks" not in data:
        return data
    names = [entry["task"] for entry in data["tasks"]]
    if task not in names:
        said = "names no task" if task is None else f"asks for task {task!r}, which it was not trained for"
        raise ValueError(f"a mixture model of tasks {', '.join(names)}: the call {said}; choose one "
                         f"(--task {names[0]}, or docvlm.load(model, task={names[0]!r}))")
    shared = {key: value for key, value in data.items() if key not in ("tasks", "score", "seed")}
    return {**shared, **data["tasks"][names.index(task)]}


def set_generation_config(model, processor, max_new_tokens: int) -> None:
    """Plain `generate` on the saved model decodes as docvlm does: greedy, the task's length, our eos/pad."""
    config = model.generation_config
    config.max_new_tokens = max_new_tokens
    config.eos_token_id = processor.tokenizer.eos_token_id
    config.pad_token_id = processor.tokenizer.pad_token_id
    config.do_sample = False


def write(folder: Path, data: dict[str, Any]) -> None:
    """`docvlm.json` and the model card (the weights, processor and generation config are saved apart)."""
    folder = Path(folder)
    (folder / DESCRIPTION).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(model_card(data), encoding="utf-8")


PAD_BLOCK = """    # image mode "pad": centre on a white square first
    side = max(image.size)
    square = Image.new("RGB", (side, side), "white")
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    image = square
"""


GEMMA_TERMS = "https://ai.google.dev/gemma/terms"
GEMMA_POLICY = "https://ai.google.dev/gemma/prohibited_use_policy"
PHYSIONET_LICENSE = "https://physionet.org/about/licenses/physionet-credentialed-health-data-license-150/"


def model_card(data: dict[str, Any]) -> str:
    """A Hugging Face model card: what the model does and within which limits, its metrics, its licences, how to
    run it. Every figure comes from `data` (what `docvlm.json` holds), so the card cannot contradict the folder.
    A mixture model's is `mixture_card`."""
    if "tasks" in data:
        return mixture_card(data)
    return f"""---
{_card_metadata(data)}---

# PaliGemma 2 fine-tuned by docvlm for `{data['task']}`

{_what_it_does(data)}

## Metrics

{_metrics_text(data)}
## Licences

{_licence_text(data)}

## Use

With docvlm, which reads the task from `docvlm.json` and parses and exports the outputs:

```bash
docvlm convert --model THIS_FOLDER scans/ --out converted/
```

```python
import docvlm
model = docvlm.load("THIS_FOLDER")
results = model(["scan.png"])          # .text, .value (parsed), .problems
```

With plain `transformers` (the same preprocessing and text; docvlm's own loop guard is not applied):

```python
import sys
import torch
from PIL import Image, ImageOps
from transformers import PaliGemmaForConditionalGeneration, PaliGemmaProcessor

folder, paths = sys.argv[1], sys.argv[2:]
model = PaliGemmaForConditionalGeneration.from_pretrained(folder, trust_remote_code=False).eval()
processor = PaliGemmaProcessor.from_pretrained(folder, trust_remote_code=False)
processor.tokenizer.padding_side = "left"
size = {data['image_size']}

def prepare(path):
    image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")  # 8-bit scans; docvlm also reads 16-bit
{PAD_BLOCK if data["image_mode"] == "pad" else ""}    return image.resize((size, size), Image.Resampling.BICUBIC)

prompt = {json.dumps(data['prompt'])}
for path in paths:
    inputs = processor(text="<image>" + prompt, images=prepare(path), return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs)  # greedy, max_new_tokens from generation_config.json
    print(processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```
"""


def mixture_card(data: dict[str, Any]) -> str:
    """The model card of a mixture model: every task with its prompt, weight and metrics, the licences once, then
    each task's own card (what it does and within which limits, its metrics in words, how to run it with
    `--task`), a heading level below: the prompt chooses the task, with docvlm as with plain `transformers`."""
    names = _task_names(data)
    score = data.get("score")
    rows = "\n".join(f"| `{entry['task']}` | `{entry['prompt']}` | {entry.get('weight', '')} | "
                     + (", ".join(f"{k} {v:.4f}" for k, v in entry.get("metrics", {}).items()) or "not measured")
                     + " |" for entry in data["tasks"])
    cards = "\n".join(_task_card(data, name) for name in names)
    base = f" from `{data['base_model']}`" if data.get("base_model") else ""
    return f"""---
{_card_metadata(data)}---

# PaliGemma 2 fine-tuned by docvlm on a mixture of {len(names)} tasks

One model for {', '.join(f'`{name}`' for name in names)}: the prompt says which task to do. Trained{base} with
examples drawn by weight (seed {data.get('seed')}); docvlm {data['docvlm_version']}.
{f"Score at the last validation (the mean over tasks of each main metric as a score in [0, 1]): {score:.4f}."
 if score is not None
 else ""}

| task | prompt | weight | metrics |
|---|---|---|---|
{rows}

## Licences

{_licence_text(data)}

{cards}"""


def _task_card(data: dict[str, Any], name: str) -> str:
    """Task `name`'s card within a mixture's: a single task's card without its front matter and licences (said
    once for the whole model), its headings a level down, its commands choosing the task."""
    picked = pick(data, name)
    body = model_card(picked).split("---\n", 2)[2].replace(
        f"# PaliGemma 2 fine-tuned by docvlm for `{name}`", f"# Task `{name}`", 1)
    body = re.sub(r"^## Licences\n.*?(?=^## )", "", body, flags=re.M | re.S)
    limit, longest = max_new_tokens(picked), max_new_tokens(data)
    if limit != longest:  # generation_config.json holds the longest task's limit: plain `generate` is told this one
        body = body.replace(
            "`generation_config.json` says the same",
            f"`generation_config.json` holds the longest task's, {longest}: plain `generate` below is given {limit}",
        ).replace(
            "output = model.generate(**inputs)  # greedy, max_new_tokens from generation_config.json",
            f"output = model.generate(**inputs, max_new_tokens={limit})  # greedy",
        )
    return re.sub(r"^#", "##", body, flags=re.M).replace(
        "docvlm convert --model THIS_FOLDER", f"docvlm convert --model THIS_FOLDER --task {name}").replace(
        'docvlm.load("THIS_FOLDER")', f'docvlm.load("THIS_FOLDER", task="{name}")')


def _task_names(data: dict[str, Any]) -> list[str]:
    """The task of a description, or a mixture's tasks."""
    return [entry["task"] for entry in data["tasks"]] if "tasks" in data else [data["task"]]


def _what_it_does(data: dict[str, Any]) -> str:
    """Prompt, image fitting and the real output limit (the decoding setting when the run set one)."""
    fitting = "padded to a white square, then resized" if data["image_mode"] == "pad" else "resized"
    limit, target = max_new_tokens(data), data["max_target_tokens"]
    beams = data["decoding"].get("num_beams") or 1
    how = "greedily" if beams == 1 else f"by beam search ({beams} beams)"
    bound = (f"the task's targets run to {target} tokens, but this model was set to decode at most {limit}"
             if limit != target else "the task's target length")
    base = f" from `{data['base_model']}`" if data.get("base_model") else ""
    if not _from_gemma(data):
        base += " (docvlm's tiny model, random weights)"
    return (f"Task `{data['task']}`, trained{base} with docvlm {data['docvlm_version']}: the prompt "
            f"`{data['prompt']}`; images {fitting} to {data['image_size']} px; outputs of at most {limit} new "
            f"tokens ({bound}; `generation_config.json` says the same), decoded {how}.\n"
            f"Task options: `{json.dumps(data['options'], ensure_ascii=False)}`.")


def _metrics_text(data: dict[str, Any]) -> str:
    metrics = data.get("metrics") or {}
    if not metrics:
        return "No validation metrics were recorded for this model.\n"
    measured = data.get("measured_on") or {}
    samples = measured.get("source") or f"{measured.get('samples', '?')} validation samples"
    rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in metrics.items())
    return f"Measured at step {measured.get('step', '?')} on {samples}:\n\n| metric | value |\n|---|---|\n{rows}\n"


def _from_gemma(data: dict[str, Any]) -> bool:
    """Whether the weights descend from Google's (anything but docvlm's random-weight `tiny` model)."""
    return data.get("base_model") != "tiny"


def _card_metadata(data: dict[str, Any]) -> str:
    """The card's YAML header: library, pipeline, tags, and the licence the Hub shows."""
    names = _task_names(data)
    tags = ["docvlm", "paligemma2", *(["mixture"] if "tasks" in data else []), *names]
    lines = ["library_name: transformers", "pipeline_tag: image-text-to-text", f"tags: [{', '.join(tags)}]"]
    base = data.get("base_model") or ""
    if _from_gemma(data) and base.startswith("google/"):
        lines.append(f"base_model: {base}")
    if "radiology" in names:  # two sets of terms: the Hub's field takes one name
        name = "gemma-terms-and-physionet-credentialed-health-data" if _from_gemma(data) else \
            "physionet-credentialed-health-data-1.5.0"
        lines += ["license: other", f"license_name: {name}",
                  f"license_link: {GEMMA_TERMS if _from_gemma(data) else PHYSIONET_LICENSE}"]
    elif _from_gemma(data):
        lines += ["license: gemma", f"license_link: {GEMMA_TERMS}"]
    return "".join(line + "\n" for line in lines)


def _licence_text(data: dict[str, Any]) -> str:
    """What whoever uses or shares this model is bound by: the base weights' terms and the training data's."""
    parts = []
    if _from_gemma(data):
        parts.append(
            f"This model is a fine-tune of PaliGemma 2, whose weights Google publishes under the [Gemma Terms of "
            f"Use]({GEMMA_TERMS}): it is a Model Derivative under those terms, and its use is bound by them and by "
            f"the [Gemma Prohibited Use Policy]({GEMMA_POLICY}). Whoever shares it must pass those use restrictions "
            f"on and give a copy of the terms with it.")
    else:
        parts.append("The weights began as docvlm's tiny model with random weights (no Gemma weights): the Gemma "
                     "Terms of Use do not apply to them.")
    if "radiology" in _task_names(data):
        parts.append(
            f"A radiology model is trained on chest radiographs and their reports; when those came from MIMIC-CXR "
            f"(the radiology task's reader, and PaliGemma 2's transfer), the model derives from credentialed data "
            f"under the [PhysioNet Credentialed Health Data License 1.5.0]({PHYSIONET_LICENSE}) and its Data Use "
            f"Agreement: use and share it only with people who hold that credentialed access and have signed the "
            f"agreement (PhysioNet asks that models trained on MIMIC be shared through PhysioNet under the same "
            f"terms), and do not send the data to online services that may keep it. "
            f"If this model was trained on other reports, their own terms apply instead: edit this section.")
    return "\n\n".join(parts)
