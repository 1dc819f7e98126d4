"""`docvlm convert` over several processes: Fabric ranks (`--devices 2 --accelerator cpu`, gloo) and
`--shard I/N`; a whole run killed with SIGKILL and resumed with another world size; export workers that
crash or hang. Run through the console script, as a user runs it."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import docvlm.tasks.base
from docvlm.convert import main
from docvlm.tasks.text import TextTask
from helpers import kill_two_processes_once_both_wrote, text_image

DOCVLM = str(Path(sys.executable).parent / "docvlm")
FAST = ["--model", "tiny", "--task", "text", "--num-workers", "0"]
pytestmark = pytest.mark.slow


def line_pages(tmp_path_factory, name: str, n: int) -> Path:
    folder = tmp_path_factory.mktemp(name)
    for i in range(n):
        text_image(f"line {i}", 96).save(folder / f"p{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> Path:
    return line_pages(tmp_path_factory, "pages", 10)


def convert(*args, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run([DOCVLM, "convert", *args], capture_output=True, text=True, timeout=600, env=env)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def rows(out: Path) -> list[dict]:
    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]  # every line whole


def texts(out: Path) -> dict[str, str]:
    return {Path(r["input"]).name: r["text"] for r in rows(out)}


def assert_each_page_once_with_its_files(out: Path, pages: Path) -> None:
    found = rows(out)
    assert sorted(Path(r["input"]).name for r in found) == sorted(p.name for p in pages.iterdir())
    assert all(r["error"] is None for r in found)
    outputs = {o for r in found for o in r["outputs"]}
    assert all((out / o).is_file() for o in outputs)
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    # no output without its row, no leftovers
    assert files - {"manifest.jsonl", ".convert.lock", ".convert.run"} == outputs


@pytest.fixture(scope="module")
def single(pages, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("single")
    convert(*FAST, "--max-new-tokens", "6", str(pages), "--out", str(out))
    return texts(out)


def test_two_processes_convert_every_page_once_with_the_same_texts(pages, single, tmp_path):
    done = convert(*FAST, "--max-new-tokens", "6", str(pages), "--out", str(tmp_path), "--devices", "2",
                   "--accelerator", "cpu")
    assert "[1/2]" in done.stdout + done.stderr and "[2/2]" in done.stdout + done.stderr
    assert texts(tmp_path) == single
    assert_each_page_once_with_its_files(tmp_path, pages)


def test_shards_without_a_launcher_convert_every_page_once(pages, single, tmp_path):
    first = convert(*FAST, "--max-new-tokens", "6", str(pages), "--out", str(tmp_path), "--shard", "1/2")
    converted = int(first.stdout.split(" converted (")[0].split()[-2])
    assert 0 < converted < 10  # a share, not everything
    convert(*FAST, "--max-new-tokens", "6", str(pages), "--out", str(tmp_path), "--shard", "2/2")
    assert texts(tmp_path) == single
    assert_each_page_once_with_its_files(tmp_path, pages)


@pytest.fixture(scope="module")
def many_pages(tmp_path_factory) -> Path:
    """Enough pages that a run cannot end between two looks at its manifest parts, on any machine."""
    return line_pages(tmp_path_factory, "many_pages", 48)


def test_a_killed_two_process_run_resumes_with_one_process(many_pages, tmp_path):
    pages = many_pages
    slow = [*FAST, "--max-new-tokens", "60", "--no-repetition-guard", "--batch-size", "1", str(pages),
            "--out", str(tmp_path)]
    kill_two_processes_once_both_wrote(slow, tmp_path)
    assert not (tmp_path / "manifest.jsonl").exists() or len(rows(tmp_path)) < 48

    done = convert(*slow, "--skip-existing", "--batch-size", "16")
    assert "skipped as done" in done.stdout
    skipped = int(done.stdout.split("failed, ")[1].split()[0])
    assert skipped >= 2  # what the killed run finished is not converted again
    assert_each_page_once_with_its_files(tmp_path, pages)
    assert not list(tmp_path.glob("manifest.part-*"))


class HangOnSecondPage(TextTask):
    """The text task, except that exporting a name ending in 2 never returns."""

    name = "test-hang-on-2"

    def export(self, parsed, stem):
        if str(stem).endswith("2"):
            time.sleep(3600)
        return super().export(parsed, stem)


def test_a_hanging_export_costs_only_its_page_with_several_workers(pages, tmp_path, monkeypatch):
    monkeypatch.setitem(docvlm.tasks.base._REGISTRY, HangOnSecondPage.name, HangOnSecondPage)
    code = main(["--model", "tiny", "--task", HangOnSecondPage.name, "--num-workers", "0", "--max-new-tokens", "4",
                 "--export-workers", "3", "--export-timeout", "20", str(pages), "--out", str(tmp_path)])
    assert code == 1
    found = {Path(r["input"]).stem: r for r in rows(tmp_path)}
    assert len(found) == 10 and "took longer than 20 s" in found["p02"]["error"]
    assert all(r["error"] is None and (tmp_path / r["outputs"][0]).is_file() for k, r in found.items() if k != "p02")
