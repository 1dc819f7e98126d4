"""Reports stay readable on long, hostile model output: short problems, wrapped or folded fields, the
reference and the prediction in view at 1400 px for every task, a warning when references are not in
the task's format, histogram axes within the metric's range. Built from synthetic rows: no model."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from lxml import html as lxml_html
from PIL import Image

import docvlm.tasks
from docvlm.report import histogram, write_reports

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
NAMES = docvlm.tasks.names()


def looping(name: str) -> str:
    """What a model stuck in a loop writes, in the task's own alphabet: a synthetic target with its longest run
    without white space repeated before and after it (2,500 characters each that no line break may split)."""
    task = docvlm.tasks.get(name)
    target = task.to_target(next(iter(task.synthesize(1, seed=1))))
    run = max(target.split(), key=len)
    loop = run * (2500 // len(run) + 1)
    return loop + target + loop


LONG = {name: looping(name) for name in NAMES}


def rows_of(task, predictions):
    """Report rows as `docvlm evaluate` makes them, for the task's synthetic samples (seed 1)."""
    samples = list(task.synthesize(len(predictions), seed=1))
    rows = [{"id": s.id, "image": None, "target": task.to_target(s), "prediction": p,
             "score": task.score([p], [task.to_target(s)]), "problems": task.parse(p).problems}
            for s, p in zip(samples, predictions)]
    return rows, [s.image for s in samples]


def report(task_name, out, predictions, references=None, long_fields=False):
    task = docvlm.tasks.get(task_name)
    rows, images = rows_of(task, predictions)
    if long_fields:  # an id (a data set's path) and a problem (from an older docvlm's rows) with no break
        for row in rows:
            row["id"], row["problems"] = "id-" + "i" * 400, [*row["problems"], "problem " + "p" * 3000]
    if references is not None:
        for row, reference in zip(rows, references):
            row["target"], row["score"] = reference, task.score([row["prediction"]], [reference])
    metrics = task.score([r["prediction"] for r in rows], [r["target"] for r in rows])
    write_reports(out, task, {}, metrics, rows, images)
    page = (out / "report.html").read_text(encoding="utf-8")
    return json.loads((out / "report.json").read_text(encoding="utf-8")), page


@pytest.mark.parametrize("name", NAMES)
def test_problems_are_short_and_never_repeat_the_output(name):
    problems = docvlm.tasks.get(name).parse(LONG[name]).problems
    assert len(problems) <= 21  # the first 20 and a count of the rest
    assert all(len(p) <= 160 for p in problems), max(problems, key=len)
    runs = {LONG[name][i:i + 80] for i in range(0, len(LONG[name]) - 80, 40)}
    assert not [p for p in problems if any(run in p for run in runs)]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_long_fields_fold_and_wrap(name, tmp_path):
    data, page = report(name, tmp_path, [LONG[name]])
    tree = lxml_html.fromstring(page)
    case = tree.xpath("//div[@class='case']")[0]
    assert case.xpath("./div[@class='reference']/pre")[0].text_content() == data["rows"][0]["target"]
    assert case.xpath("./div[@class='prediction']/pre")[0].text_content() == LONG[name]
    folded = case.xpath(".//details[@class='problems']")
    assert len(folded) == bool(data["rows"][0]["problems"])
    if folded:  # a long list is folded, a short one open
        assert (folded[0].get("open") is None) == (len(data["rows"][0]["problems"]) > 3)
        assert folded[0].xpath("string(./summary)").startswith(f"{len(data['rows'][0]['problems'])} problem")
    assert "minmax(0,1fr)" in page and "overflow-wrap:anywhere" in page


def test_a_reference_that_is_not_in_the_tasks_format_is_warned_about(tmp_path):
    data, page = report("tables", tmp_path / "bad", ["<table><tr><td>a</td></tr></table>"] * 3,
                        references=["CCO", "plain words", "<table><tr><td>a</td></tr></table>"])
    assert data["reference_problems"]["count"] == 2
    warning = lxml_html.fromstring(page).xpath("//p[@class='warning']")
    assert len(warning) == 1 and "2 of 3 references" in warning[0].text_content()
    assert "2 of 3 references" in (tmp_path / "bad" / "report.md").read_text(encoding="utf-8")

    clean, page = report("tables", tmp_path / "good", ["<table><tr><td>a</td></tr></table>"] * 2)
    assert clean["reference_problems"]["count"] == 0 and not lxml_html.fromstring(page).xpath("//p[@class='warning']")


@pytest.mark.parametrize(("values", "limits"), [([0.0] * 5, (0.0, 1.0)), ([1.0, 1.0], (0.0, 1.0)),
                                                ([0.2, 0.9], (0.0, 1.0)), ([0.0, 37.5], (0.0, 37.5))])
def test_histogram_axis_stays_within_the_metrics_range(values, limits):
    assert histogram(values, "teds").axes[0].get_xlim() == pytest.approx(limits)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_reference_and_prediction_are_in_view_at_1400_px(tmp_path):
    """Each task's page of one long hostile case, shot at 1400 px: the reference's and the prediction's
    boxes (painted in colours of their own for the shot) both lie inside the window, each a column wide."""
    marked = {"reference": (0, 255, 0), "prediction": (0, 0, 255)}
    paint = "".join(f".{cls} pre{{background:rgb{rgb}!important;color:rgb{rgb}!important}}"
                    for cls, rgb in marked.items())
    for name in NAMES:
        out = tmp_path / name
        _, page = report(name, out, [LONG[name]], long_fields=True)
        shot_page = out / "marked.html"
        shot_page.write_text(page.replace("</style>", paint + "</style>", 1), encoding="utf-8")
        shot = out / "shot.png"
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,2400", f"--screenshot={shot}",
                        shot_page.as_uri()], capture_output=True, timeout=60, check=True)
        pixels = np.asarray(Image.open(shot).convert("RGB"))
        assert pixels.shape[1] == 1400
        for cls, rgb in marked.items():
            columns = np.flatnonzero((pixels == rgb).all(axis=-1).any(axis=0))
            assert columns.size, f"{name}: the {cls} is out of view"
            left, right = columns[0], columns[-1]
            assert right < 1390 and right - left > 250, f"{name}: the {cls} spans x {left}..{right}"


@pytest.mark.slow
def test_a_failing_music_export_is_one_short_problem(tmp_path, monkeypatch):
    """music21 and verovio put the offending text in their messages; the problem keeps one line of it."""
    from docvlm.converters import kern, kern_render

    def fails(text, path):
        raise ValueError("Inconsistent rhythm near line: " + text * 50)

    monkeypatch.setattr(kern_render, "write_svg", fails)
    text = docvlm.tasks.get("music").to_target(next(iter(docvlm.tasks.get("music").synthesize(1, seed=1))))
    paths, problems = kern_render.export(kern.repair(text), text, tmp_path / "score")
    assert [p.suffix for p in paths] == [".krn", ".musicxml", ".mid", ".png"]
    assert len(problems) == 1 and problems[0].startswith("score.svg: export failed (ValueError: Inconsistent")
    assert len(problems[0]) < 200
