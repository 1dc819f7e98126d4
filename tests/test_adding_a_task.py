"""docs/adding-a-task.md stays true: its code blocks, written into a copy of the repository at the paths they
name, with its README row added and nothing else edited, make a task that passes every test the guide lists."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GUIDE = (REPO / "docs" / "adding-a-task.md").read_text(encoding="utf-8")
FILES = dict(re.findall(r"```\w+ file=(\S+)\n(.*?)```", GUIDE, re.S))
(ROW,) = re.findall(r"```markdown row=README\.md\n(.*?)```", GUIDE, re.S)
CHECKS = re.findall(r"`(tests/test_\w+\.py)`", GUIDE.split("## What checks it", 1)[1])
TASK = next(Path(path).stem for path in FILES if path.startswith("tasks/"))
NEW = sorted({Path(path).stem for path in FILES if path.startswith("configs/")})  # the task's and the transfer's names

# Run inside the copy: parametrized tests run only for the new task and transfer (the suite runs the others),
# tests without parameters run unless marked slow.
PLUGIN = f"""
def pytest_collection_modifyitems(config, items):
    def new(item):
        return hasattr(item, "callspec") and any(name in item.nodeid for name in {NEW!r})

    keep = [i for i in items if new(i) or (not hasattr(i, "callspec") and i.get_closest_marker("slow") is None)]
    config.hook.pytest_deselected(items=[i for i in items if i not in keep])
    items[:] = keep
"""


def copy_of_the_repository(root: Path) -> Path:
    """The repository's sources, tests, configs and docs, importable as `docvlm` from `root` (its `tasks/` and
    `converters/` linked in as `docvlm.tasks` and `docvlm.converters`, as pyproject maps them)."""
    ignore = shutil.ignore_patterns("__pycache__", ".pytest_cache", "runs")
    for name in ("docvlm", "tasks", "converters", "configs", "tests", "docs"):
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    for name in ("README.md", "BENCHMARKS.md", "pyproject.toml"):
        shutil.copy(REPO / name, root / name)
    for package in ("tasks", "converters"):
        (root / "docvlm" / package).symlink_to(Path("..") / package, target_is_directory=True)
    return root


def add_the_row(readme: Path, row: str) -> None:
    """The guide's row after the last row of the README's task table."""
    lines = readme.read_text(encoding="utf-8").splitlines(keepends=True)
    first = next(i for i in range(lines.index("## Tasks\n"), len(lines)) if lines[i].startswith("| "))
    lines.insert(next(i for i in range(first, len(lines)) if not lines[i].startswith("|")), row)
    readme.write_text("".join(lines), encoding="utf-8")


def test_the_guide_names_the_files_its_table_lists():
    table = re.findall(r"^\| `([^`]+)` \|", GUIDE.split("\n## ", 1)[0], re.M)
    assert sorted(table) == sorted([*FILES, "README.md"])
    assert CHECKS and all((REPO / check).is_file() for check in CHECKS)


@pytest.mark.slow
def test_a_task_added_as_the_guide_says_passes_every_test_it_lists(tmp_path):
    root = copy_of_the_repository(tmp_path / "repo")
    for path, text in FILES.items():
        assert not (root / path).exists(), f"{path}: the guide's file would replace one of the repository's"
        (root / path).write_text(text, encoding="utf-8")
    add_the_row(root / "README.md", ROW)
    (tmp_path / "only_the_new_task.py").write_text(PLUGIN, encoding="utf-8")

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(tmp_path)])}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "only_the_new_task", "-p", "no:cacheprovider", "-v",
                           "--hypothesis-profile", "fast", *CHECKS], cwd=root, env=env, capture_output=True, text=True,
                          timeout=1200)
    passed = [line.split()[0] for line in done.stdout.splitlines() if " PASSED" in line]
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert all(any(test.startswith(check) for test in passed) for check in CHECKS), sorted(passed)
    contract = (root / "tests" / "test_task_contract.py").read_text()
    task_tests = set(re.findall(r"^def (test_\w+)\(task\b", contract, re.M))
    assert {f"tests/test_task_contract.py::{name}[{TASK}]" for name in task_tests} <= set(passed)
    assert any(f"[{TASK}]" in test for test in passed if test.startswith("tests/test_readme.py"))
