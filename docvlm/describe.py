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

DESCRIPTION = "docvlm.json"


def version() -> str:
    try:
        return metadata.version("docvlm")
    except metadata.PackageNotFoundError:
        return "unknown"


def description(task, image_size: int, decoding, metrics: dict[str, float] | None = None,
                measured_on: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON-able description of a model trained for `task`."""
    return {
        "task": task.name,
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
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the model's description ({e})") from None
    if not isinstance(data, dict) or not (isinstance(data.get("task"), str) or isinstance(data.get("tasks"), list)) \
            or not isinstance(data.get("options", {}), dict):
        raise ValueError(f"{path}: not a docvlm model description (needs 'task' and 'options', or 'tasks')")
    return data


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


def model_card(data: dict[str, Any]) -> str:
    """A Hugging Face model card: what the model does, its metrics, how to run it."""
    if "tasks" in data:
        return mixture_card(data)
    metrics = data.get("metrics") or {}
    measured = data.get("measured_on") or {}
    rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in metrics.items())
    metric_text = (f"Measured on {measured.get('samples', '?')} validation samples ({measured.get('source', 'the run')}"
                   f", step {measured.get('step', '?')}):\n\n| metric | value |\n|---|---|\n{rows}\n"
                   if metrics else "No validation metrics were recorded for this model.\n")
    pad = data["image_mode"] == "pad"
    return f"""---
library_name: transformers
pipeline_tag: image-text-to-text
tags: [docvlm, paligemma2, {data['task']}]
---

# PaliGemma 2 fine-tuned by docvlm for `{data['task']}`

Task `{data['task']}`: prompt `{data['prompt']}`, images {'padded to a white square, then' if pad else ''} resized to
{data['image_size']} px, outputs of up to {data['max_target_tokens']} tokens. docvlm {data['docvlm_version']}.
Task options: `{json.dumps(data['options'], ensure_ascii=False)}`.

## Metrics

{metric_text}
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
model = PaliGemmaForConditionalGeneration.from_pretrained(folder).eval()
processor = PaliGemmaProcessor.from_pretrained(folder)
processor.tokenizer.padding_side = "left"
size = {data['image_size']}

def prepare(path):
    image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")  # 8-bit scans; docvlm also reads 16-bit
{PAD_BLOCK if pad else ""}    return image.resize((size, size), Image.Resampling.BICUBIC)

prompt = {json.dumps(data['prompt'])}
for path in paths:
    inputs = processor(text="<image>" + prompt, images=prepare(path), return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs)  # greedy, max_new_tokens from generation_config.json
    print(processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```
"""


def mixture_card(data: dict[str, Any]) -> str:
    """The model card of a mixture model: every task with its prompt and metrics, then each task's card
    (the prompt chooses the task, with docvlm as with plain `transformers`)."""
    names = [entry["task"] for entry in data["tasks"]]
    score = data.get("score")
    rows = "\n".join(f"| `{entry['task']}` | `{entry['prompt']}` | {entry.get('weight', '')} | "
                     + (", ".join(f"{k} {v:.4f}" for k, v in entry.get("metrics", {}).items()) or "not measured")
                     + " |" for entry in data["tasks"])
    cards = "\n".join(re.sub(r"^#", "##", model_card(pick(data, name)).split("---\n", 2)[2], flags=re.M).replace(
        "docvlm convert --model THIS_FOLDER", f"docvlm convert --model THIS_FOLDER --task {name}").replace(
        'docvlm.load("THIS_FOLDER")', f'docvlm.load("THIS_FOLDER", task="{name}")') for name in names)
    return f"""---
library_name: transformers
pipeline_tag: image-text-to-text
tags: [docvlm, paligemma2, mixture, {', '.join(names)}]
---

# PaliGemma 2 fine-tuned by docvlm on a mixture of {len(names)} tasks

One model for {', '.join(f'`{name}`' for name in names)}: the prompt says which task to do. Trained with
examples drawn by weight (seed {data.get('seed')}); docvlm {data['docvlm_version']}.
{f"Score at the last validation (the mean over tasks of each main metric as a score in [0, 1]): {score:.4f}."
 if score is not None
 else ""}

| task | prompt | weight | metrics |
|---|---|---|---|
{rows}

{cards}"""
