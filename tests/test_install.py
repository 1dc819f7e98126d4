"""What `pip install -e .` prints in a fresh clone: nothing of docvlm's own (no setuptools warnings about the
CheXpert data folders, no editable-install notice), as the Makefile runs it."""

import shutil
import subprocess
import sys
import zipfile

import pytest


def _clone(repo, dest):
    """The tracked files only, as a fresh clone has them (no egg-info, no build folder)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, dest / name)
    return dest


def _pip(venv, *args):
    return _run([str(venv / "bin" / "python"), "-m", "pip", *args])


def _pip_here(*args):
    return _run([sys.executable, "-m", "pip", *args])


def _run(command):
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.mark.slow
def test_editable_install_prints_nothing_of_docvlms_own(repo, tmp_path):
    clone = _clone(repo, tmp_path / "clone")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    _pip(venv, "install", "-q", "--upgrade", "pip")  # a pip that shows the build backend's warnings, as make's
    out = _pip(venv, "install", "-q", "--no-deps", "-e", str(clone))
    ours = [line for line in out.splitlines() if "BuildBackendWarning" in line or "docvlm" in line
            or "would be ignored" in line or "Editable installation" in line]
    assert ours == [], out


@pytest.mark.slow
def test_wheel_holds_the_chexpert_data(repo, tmp_path):
    """The data folders declared as packages still ship as data: every list, the licence and its source."""
    clone = _clone(repo, tmp_path / "clone")
    _pip_here("wheel", "-q", "--no-deps", "-w", str(tmp_path / "wheel"), str(clone))
    (wheel,) = (tmp_path / "wheel").glob("docvlm-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if "/chexpert_data/" in n}
    source = {f"docvlm/{p.relative_to(clone / 'docvlm').as_posix()}"
              for p in (clone / "docvlm/metrics/chexpert_data").rglob("*") if p.is_file()}
    assert shipped == source and len(source) == 22
