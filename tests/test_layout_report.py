"""`docvlm evaluate`'s reports on layout: the worst pages drawn with the true and the predicted boxes in two
colours, per-class AP and F1 in the metrics table, and how mAP was computed said beside it."""

import base64
import io
import json
import re

import numpy as np
import pytest
from PIL import Image

import docvlm.tasks
from docvlm.converters.layout import Region, to_text
from docvlm.evaluate import score_rows
from docvlm.report import write_reports
from docvlm.tasks.layout import PREDICTED_COLOUR, TRUE_COLOUR


def _shifted(target: str, task) -> str:
    """The regions moved down by a tenth of the page: a visible miss."""
    regions = task.parse(target).value
    return to_text(Region(r.label, (r.box[0], min(r.box[1] + 0.1, 1), r.box[2], min(r.box[3] + 0.1, 1)))
                   for r in regions)


@pytest.mark.slow
def test_report_draws_true_and_predicted_boxes_and_lists_ap_per_class(tmp_path):
    kinds = ["table", "molecule", "text"]
    task = docvlm.tasks.get("layout", classes=kinds, synthetic_kinds=kinds, synthetic_width=448)
    samples = list(task.synthesize(3, seed=1))
    predictions = [samples[0].target, _shifted(samples[1].target, task), ""]
    rows = [{"id": s.id, "image": None, "target": s.target, "prediction": p} for s, p in zip(samples, predictions)]
    metrics = score_rows(task, rows)
    write_reports(tmp_path, task, {}, metrics, rows, [s.image for s in samples], n_worst=2)
    report = json.loads((tmp_path / "report.json").read_text())
    assert [row["id"] for row in report["rows"]] == [s.id for s in samples]
    assert any(k.startswith("ap_") for k in metrics) and any(k.startswith("f1_") for k in metrics)
    page = (tmp_path / "report.html").read_text()
    for name in [k for k in metrics if k.startswith(("ap_", "map"))]:
        assert f"<td>{name}</td>" in page
    assert "each counts 1.0" in page and "each counts 1.0" in (tmp_path / "report.md").read_text()
    cases = page.split('id="worst"')[1].split('<div class="case">')[1:]
    assert len(cases) == 2 and samples[0].id not in "".join(cases)  # the right page is not among the worst
    for case, drawn in ((next(c for c in cases if samples[1].id in c), {TRUE_COLOUR, PREDICTED_COLOUR}),
                        (next(c for c in cases if samples[2].id in c), {TRUE_COLOUR})):
        data = re.search(r'<img alt="input image" src="data:image/png;base64,([^"]+)"', case).group(1)
        image = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
        colours = {tuple(p) for p in image[:-30].reshape(-1, 3)}  # above the legend
        assert {TRUE_COLOUR, PREDICTED_COLOUR} & colours == drawn
