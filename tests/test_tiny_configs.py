"""Every task has a tiny config, composed over configs/tiny/base.yaml, that trains on its own synthetic data
without losing any of it to `max_target_tokens`; a mixture's tiny config (`data.mixture`) mixes registered tasks,
each of which has its own, and is held to the same rules."""

import importlib
from pathlib import Path

import pytest
import yaml

import docvlm.tasks
from helpers import config_parser

REPO = Path(__file__).resolve().parents[1]
TINY = sorted(p for p in (REPO / "configs" / "tiny").glob("*.yaml") if p.name != "base.yaml")
CONFIGS = TINY + [REPO / "configs" / "demo.yaml"]


@pytest.fixture(scope="module")
def parser():
    return config_parser(CONFIGS[-1])


def task_of(task):
    module, name = task.class_path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**task.init_args.as_dict())


def parts_of(config):
    """(task, training source) of each task the config trains: its one task, or each of its mixture's."""
    if config.data.mixture is not None:
        return [(task_of(part.task), part.train) for part in config.data.mixture.tasks]
    return [(task_of(config.data.task), config.data.train)]


def test_every_task_has_a_tiny_config_named_after_it(parser):
    configs = {path.stem: parser.parse_args(["--config", str(path)]) for path in TINY}
    mixtures = {stem: config for stem, config in configs.items() if config.data.mixture is not None}
    named = {stem: task_of(config.data.task).name for stem, config in configs.items() if stem not in mixtures}
    assert all(stem == name for stem, name in named.items()), named
    assert sorted(named) == docvlm.tasks.names()
    assert list(mixtures) == ["mix"]
    assert {task.name for task, _ in parts_of(mixtures["mix"])} <= set(named)


@pytest.mark.parametrize("path", TINY, ids=[p.stem for p in TINY])
def test_tiny_configs_share_the_base(path, parser):
    """A tiny config includes the base and sets dotted keys only (a nested `data:` block would replace the base's
    whole section): composed, it keeps every base setting it does not name."""
    own = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert own.pop("config") == "base.yaml" and not [key for key in own if "." not in key]
    config = parser.parse_args(["--config", str(path)])
    task = ["--data.task", config.data.task.class_path] if config.data.task is not None else []
    base = parser.parse_args(["--config", str(path.with_name("base.yaml")), *task])
    named = [*own, "config"]
    kept = [key for key in base.as_flat().__dict__ if not any(key == k or key.startswith(k + ".") for k in named)]
    assert [key for key in kept if config[key] != base[key]] == []


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_no_synthetic_training_target_is_over_length(path, parser, tiny_small):
    """The config's training targets (the first 200), with `<eos>`, in the tiny tokenizer (about a token a
    character: the longest any tokenizer makes them): the data module would skip each one over the limit."""
    config = parser.parse_args(["--config", str(path)])
    for task, train in parts_of(config):
        targets = [task.to_target(s) for s in task.synthesize(min(train.synthetic, 200), seed=train.seed)]
        tokenizer = tiny_small[1].tokenizer
        lengths = [len(ids) + 1 for ids in tokenizer(targets, add_special_tokens=False)["input_ids"]]
        over = sum(n > task.max_target_tokens for n in lengths)
        assert over == 0, f"{task.name}: {over} over"
