"""The README's lists stay true: its task table names exactly the registered tasks, with each one's main metric
and the files its export writes; the contents list every section; every link to a file of the repository
leads to one."""

import re
from pathlib import Path

import pytest

import docvlm.tasks

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def table_rows(text: str) -> dict[str, list[str]]:
    """The rows of the markdown tables in `text` whose first cell is one code span, by that cell's text."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| `")]
    return {row[0].strip("`"): row for row in rows if re.fullmatch(r"`[^`]+`", row[0])}


TASKS = table_rows(section("Tasks"))


def test_the_task_table_names_every_registered_task():
    assert sorted(TASKS) == docvlm.tasks.names()


@pytest.mark.parametrize("name", docvlm.tasks.names())
def test_a_task_row_names_its_main_metric_and_the_files_it_writes(name, tmp_path):
    task = docvlm.tasks.get(name)
    _, _, metrics, files = TASKS[name]
    assert f"`{task.main_metric}`" in metrics
    text = task.to_target(next(iter(task.synthesize(1, seed=0))))
    written = task.export(task.parse(text), tmp_path / "page")
    assert files.strip("`").split() == [p.name[len("page"):] for p in written]


def test_the_contents_list_every_section():
    prose = re.sub(r"^```.*?^```$", "", README, flags=re.M | re.S)  # a Markdown example's headings are not sections
    headings = re.findall(r"^## (.+)$", prose, re.M)
    anchors = [re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings if h != "Contents"]
    assert re.findall(r"^- \[.+?\]\(#(.+?)\)$", section("Contents"), re.M) == anchors


@pytest.mark.parametrize("page", ["README.md",
                                  *(str(p.relative_to(REPO)) for p in sorted((REPO / "docs").glob("*.md")))])
def test_links_to_the_repositorys_files_lead_to_files(page):
    text = (REPO / page).read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    targets = [t.split("#")[0] for t in links if "://" not in t and not t.startswith("#")]
    missing = [t for t in targets if not (REPO / page).parent.joinpath(t).exists()]
    assert not missing
