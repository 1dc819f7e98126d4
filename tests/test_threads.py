"""The tiny model on the CPU trains on one intra-op thread (robust on a shared machine, BENCHMARKS.md), unless
OMP_NUM_THREADS asks for another number; other models keep torch's threads."""

import pytest
import torch
from lightning.pytorch import Trainer

import docvlm.tasks
from docvlm.model import ModelSpec
from docvlm.module import DocVLM


@pytest.fixture
def threads():
    """torch's intra-op threads set to 2 for the test, restored after (the setting is the process's)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def set_up(monkeypatch, omp: str | None, name: str = "tiny") -> int:
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    module = DocVLM(model=ModelSpec(name_or_path="tiny", image_size=140, patch_size=28), task=docvlm.tasks.get("text"))
    module.hparams.model.name_or_path = name  # the rule reads the spec's name: the weights need not be real
    module.trainer = Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    module.setup("fit")
    return torch.get_num_threads()


def test_the_tiny_model_on_the_cpu_trains_on_one_thread(threads, monkeypatch):
    assert set_up(monkeypatch, None) == 1


def test_omp_num_threads_is_obeyed(threads, monkeypatch):
    assert set_up(monkeypatch, "2") == 2


def test_a_real_model_keeps_torchs_threads(threads, monkeypatch):
    assert set_up(monkeypatch, None, name="google/paligemma2-3b-pt-896") == 2
