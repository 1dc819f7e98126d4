"""The real configs compose (base + transfer + model, strategy and LoRA overlays) into the paper's settings,
and their validation and checkpoint cadences count optimizer steps under every strategy."""

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch

import docvlm.tasks
from docvlm.callbacks import BestCheckpoint, OptimizerStepCadence
from helpers import config_parser

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# The paper's transfer settings (DESIGN.md, from arXiv 2412.03555): learning rate, label smoothing, longest
# output, image mode and resolution. Radiology's output length is not in the paper (ours: 512).
PAPER = {
    "pubtabnet": dict(task="tables", lr=1e-4, label_smoothing=0.0, output=4096, image_mode="pad", px=896),
    "fintabnet": dict(task="tables", lr=1e-4, label_smoothing=0.0, output=4096, image_mode="pad", px=896),
    "molecules": dict(task="molecules", lr=1e-4, label_smoothing=0.1, output=256, image_mode="pad", px=448),
    "grandstaff": dict(task="music", lr=1e-4, label_smoothing=0.1, output=1024, image_mode="stretch", px=896),
    "mimic_cxr": dict(task="radiology", lr=5e-6, label_smoothing=0.0, output=512, image_mode="stretch", px=448,
                      epochs=8),
    "text": dict(task="text", lr=1e-5, label_smoothing=0.1, output=2048, image_mode="stretch", px=896),
}
TRANSFERS = sorted(p.stem for p in (CONFIGS / "paligemma2").glob("*.yaml") if p.stem != "base")
MODELS = [None, *sorted(p.stem for p in (CONFIGS / "paligemma2" / "models").glob("*.yaml"))]
STRATEGIES = [None, *sorted(p.stem for p in (CONFIGS / "strategies").glob("*.yaml"))]
ADAPTERS = ["lora", "qlora"]


@pytest.fixture(scope="module")
def compose():
    parser = config_parser(CONFIGS / "paligemma2" / "text.yaml")

    def compose(transfer, model=None, strategy=None, adapter=None):
        paths = [CONFIGS / "paligemma2" / f"{transfer}.yaml"]
        paths += [CONFIGS / "paligemma2" / "models" / f"{model}.yaml"] if model else []
        paths += [CONFIGS / "strategies" / f"{strategy}.yaml"] if strategy else []
        paths += [CONFIGS / f"{adapter}.yaml"] if adapter else []
        return parser.parse_args([arg for path in paths for arg in ("--config", str(path))])

    return compose


def test_every_transfer_of_the_paper_ships():
    assert set(PAPER) <= set(TRANSFERS)


def _callbacks(config) -> dict[str, list]:
    found: dict[str, list] = {}
    for callback in config.trainer.callbacks:
        found.setdefault(callback.class_path.rsplit(".", 1)[1], []).append(callback.get("init_args"))
    return found


def _last_checkpoint(config):
    """The init args of the one `ModelCheckpoint` that saves `last.ckpt`."""
    (last,) = [a for a in _callbacks(config)["ModelCheckpoint"] if a.save_last]
    return last


@pytest.mark.parametrize("strategy", [pytest.param(s, marks=[pytest.mark.slow] if s else []) for s in STRATEGIES])
@pytest.mark.parametrize("transfer", TRANSFERS)
def test_every_combination_composes_into_the_papers_settings(compose, transfer, strategy):
    """A transfer the paper has no row for (a task added later) gets the common recipe's checks only."""
    paper = PAPER.get(transfer)
    plain = compose(transfer)
    cadence = (plain.trainer.val_check_interval, _last_checkpoint(plain).every_n_train_steps)
    # every overlay under this strategy; model and adapter overlays touch disjoint keys, so they are not crossed
    for model, adapter in [(model, None) for model in MODELS] + [(None, adapter) for adapter in ADAPTERS]:
        where = (transfer, model, strategy, adapter)
        c = compose(*where)
        if paper:
            task, task_class = c.data.task, type(docvlm.tasks.get(paper["task"]))
            assert task.class_path == f"{task_class.__module__}.{task_class.__qualname__}", where
            assert task.init_args.max_target_tokens == paper["output"], where
            assert task.init_args.image_mode == paper["image_mode"], where
            assert c.model.label_smoothing == paper["label_smoothing"], where
            assert c.model.lr == (2e-4 if adapter else paper["lr"]), where  # LoRA's own rate
            size, px = (model or f"3b-{paper['px']}").split("-")
            assert c.model.model.name_or_path == f"google/paligemma2-{size}-pt-{px}", where
            if "epochs" in paper:
                assert c.trainer.max_epochs == paper["epochs"] and c.trainer.max_steps == -1, where
        assert c.model.decoding.max_new_tokens is None, where  # the task's output length
        # the common recipe: batch 256, AdamW without weight decay, clipping 1, bf16-mixed, greedy
        devices = 1 if c.trainer.devices == "auto" else int(c.trainer.devices)
        assert c.data.batch_size * c.trainer.accumulate_grad_batches * devices == 256, where
        assert c.model.weight_decay == 0.0 and c.trainer.gradient_clip_val == 1.0, where
        assert c.trainer.precision == "bf16-mixed" and c.model.decoding.num_beams == 1, where
        assert c.model.loss_reduction == "per_example", where
        callbacks = _callbacks(c)
        # trainer.checkpoint_callback
        assert c.trainer.callbacks[0].class_path == "docvlm.callbacks.BestCheckpoint", where
        assert callbacks["BestCheckpoint"][0].monitor is None, where  # the task's main metric
        assert "OptimizerStepCadence" in callbacks, where
        last = _last_checkpoint(c)
        assert 1 <= last.every_n_train_steps <= 200, where
        validation = c.trainer.val_check_interval
        if isinstance(validation, float):  # once per epoch: as many samples under every strategy
            assert validation == 1.0 and c.trainer.check_val_every_n_epoch == 1, where
        else:
            assert c.trainer.check_val_every_n_epoch is None, where
        # in optimizer steps, whatever the accumulation: as without overlays
        assert (validation, last.every_n_train_steps) == cadence, where


def test_validation_counts_optimizer_steps_whatever_the_accumulation():
    """An integer interval is multiplied by the accumulation once, even over two fits; a share of an epoch is kept."""
    for accumulate in (1, 3):
        trainer = SimpleNamespace(val_check_interval=2, accumulate_grad_batches=accumulate)
        cadence = OptimizerStepCadence()
        cadence.setup(trainer, None, "fit")
        cadence.setup(trainer, None, "fit")  # a second fit on the same trainer
        assert trainer.val_check_interval == 2 * accumulate
    epochly = SimpleNamespace(val_check_interval=1.0, accumulate_grad_batches=8)
    OptimizerStepCadence().setup(epochly, None, "fit")
    assert epochly.val_check_interval == 1.0


class _Scored(L.LightningModule):
    """A linear model whose validation logs the text task's metrics (cer falls as training goes on)."""

    def __init__(self):
        super().__init__()
        self.task = docvlm.tasks.get("text")
        self.layer = torch.nn.Linear(2, 1)
        self.validated_at: list[int] = []

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        self.validated_at.append(self.global_step)
        self.log_dict({"val/cer": 1.0 / (1 + self.global_step), "val/exact_match": 0.0})

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_run_validates_by_optimizer_steps_and_keeps_the_best_by_the_tasks_metric(tmp_path):
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(24, 2)), batch_size=1)
    module = _Scored()
    best = BestCheckpoint()
    trainer = L.Trainer(max_steps=4, accumulate_grad_batches=3, val_check_interval=2, check_val_every_n_epoch=None,
                        callbacks=[best, OptimizerStepCadence()], num_sanity_val_steps=0, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, data, data)
    assert module.validated_at == [2, 4]
    assert (best.monitor, best.mode) == ("val/cer", "min")  # text declares cer, lower is better
    assert best.best_model_score == pytest.approx(1 / 5) and "step=4" in best.best_model_path
