"""The tiny configs train on their own task's synthetic data without losing any of it to `max_target_tokens`."""

import importlib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs" / "tiny").glob("*.yaml")) + [REPO / "configs" / "demo.yaml"]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_no_synthetic_training_target_is_over_length(path, tiny_small):
    """The config's training targets (the first 200), with `<eos>`, in the tiny tokenizer (about a token a
    character: the longest any tokenizer makes them): the data module would skip each one over the limit."""
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    task_config, train = config["data"]["task"], config["data"]["train"]
    module, name = task_config["class_path"].rsplit(".", 1)
    task = getattr(importlib.import_module(module), name)(**task_config.get("init_args", {}))
    targets = [task.to_target(s) for s in task.synthesize(min(train["synthetic"], 200), seed=train["seed"])]
    tokenizer = tiny_small[1].tokenizer
    lengths = [len(ids) + 1 for ids in tokenizer(targets, add_special_tokens=False)["input_ids"]]
    assert max(lengths) <= task.max_target_tokens, f"{sum(n > task.max_target_tokens for n in lengths)} over"
