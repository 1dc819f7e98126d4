"""An exported folder is readable as a whole, as the umask allows: the weights as well as the rest."""

import os
import stat

import pytest

import docvlm.tasks
from docvlm.model import ModelSpec
from docvlm.module import DocVLM


@pytest.fixture(scope="module")
def module():
    return DocVLM(model=ModelSpec(name_or_path="tiny", image_size=140, patch_size=28), task=docvlm.tasks.get("text"))


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_every_exported_file_has_the_mode_the_umask_gives(module, tmp_path, umask):
    previous = os.umask(umask)
    try:
        module.export(tmp_path / "hf")
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "hf").iterdir()}
    assert "model.safetensors" in modes and "docvlm.json" in modes
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)
