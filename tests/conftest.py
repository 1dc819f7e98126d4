"""Shared fixtures: offline settings, one tiny model per session, the sample data in tests/data."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# `make test-fast` (`--hypothesis-profile fast`): every property still runs, on a tenth of the examples.
settings.register_profile("fast", max_examples=10)

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # pytest-xdist: the cores shared out, not every worker on all of them
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The sample data every test reads (real dataset excerpts with their licenses and sources; see
    tests/data/README.md): inside the repository, so that a clone on its own passes `make test`."""
    return REPO / "tests" / "data"


@pytest.fixture(scope="session")
def tiny():
    """A tiny PaliGemma 2 at 896 px / patch 56 (256 image tokens) and its processor, shared."""
    from docvlm.model import build_tiny

    model, processor = build_tiny(image_size=896, patch_size=56)
    processor.tokenizer.padding_side = "left"
    return model.eval(), processor


@pytest.fixture(scope="session")
def tiny_small():
    """The tiny model at 224 px / patch 28 (64 image tokens), for tests that train."""
    from docvlm.model import build_tiny

    model, processor = build_tiny(image_size=224, patch_size=28)
    processor.tokenizer.padding_side = "left"
    return model, processor
