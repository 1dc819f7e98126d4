"""The page evaluation's reports: `report.json`, `report.md` and one self-contained `report.html`.

The worst pages come first: pages that failed, then by their layout F1, then by the mean quality of their routed
regions' contents (each region's task's main metric as a score from 0 to 1, `Task.main_score`; a missed region
scores its empty prediction). Each is drawn with its true boxes (green) and predicted ones (magenta, numbered in
reading order), as the layout task's report draws them, beside a table of its regions: true content against the
content read in the predicted region matched to it (IoU at least 0.5, one to one, highest first), the missed ones
and the spurious ones.

Model output is untrusted text: escaped with `html.escape` everywhere (contents in `<pre>`, cut to `MAX_TEXT`
characters); the page has no scripts and loads nothing (drawings are `data:` URIs, CSS inline, the same
Content-Security-Policy as `docvlm.report`'s page).
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from docvlm.outputs import write_text
from docvlm.pipeline.results import PageResult, RegionResult
from docvlm.pipeline.review import IMAGE_SIDE
from docvlm.report import PAGE_CSP, data_uri, fenced, header, md_text

MAX_TEXT = 4000  # characters of a region's content shown
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}
.metrics td:last-child{text-align:right;font-variant-numeric:tabular-nums}
.page{display:grid;grid-template-columns:minmax(0,2fr) minmax(0,3fr);gap:1em;border-top:1px solid #ccc;padding:1em 0}
.page img{max-width:100%;border:1px solid #ccc}h3,p,li{overflow-wrap:anywhere}.regions{width:100%}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f6f6;padding:.4em;margin:0;max-height:12em;overflow:auto}
.problems{color:#a40}.error{color:#a00;font-weight:600}.unavailable{color:#888;font-style:italic}
.missed{background:#fff0f0}.spurious{background:#fff8e0}
.about th{text-align:left;font-weight:600;background:#f6f6f6}.about .options td{border:none;padding:0 1em 0 0}
"""


@dataclass
class Pair:
    """A line of a page's region table: a true region and the predicted one matched to it (either may be None:
    missed, spurious), their IoU, and the content's quality from 0 to 1 where the class is routed and scored."""

    true: RegionResult | None
    predicted: RegionResult | None
    iou: float | None = None
    quality: float | None = None


class _Routes:
    """The pipeline's routes where `docvlm.report.header` shows a task and its options."""

    name = "pipeline"

    def __init__(self, routes: dict[str, str]):
        self.routes = routes

    def options(self) -> dict[str, str]:
        return self.routes


def pairs(truth: PageResult, predicted: PageResult, score, tasks: dict[str, Any]) -> list[Pair]:
    """The page's regions side by side as `score` (`scoring.PageScore`) matched them: in the truth's reading order,
    the spurious ones last."""
    by_true = {j: (i, iou) for i, j, iou in score.matched}
    lines = []
    for j, region in enumerate(truth.regions):
        i, iou = by_true.get(j, (None, None))
        found = predicted.regions[i] if i is not None else None
        lines.append(Pair(region, found, iou, _quality(tasks.get(region.label), region, found)))
    return lines + [Pair(None, predicted.regions[i]) for i in score.spurious]


def page_row(page: PageResult, score) -> dict[str, Any]:
    """A page's row of report.json: its error, its own layout F1 `layout_f1` (regions matched at IoU 0.5, as the
    set's F1 counts them; 1.0 for a page with no regions, true or predicted), and `score`'s matches, misses,
    spurious regions and reading-order distance."""
    found, missed, spurious = len(score.matched), len(score.missed), len(score.spurious)
    f1 = 2 * found / (2 * found + missed + spurious) if found + missed + spurious else 1.0
    return {"input": page.input, "error": page.error, "layout_f1": f1, **asdict(score)}


def _quality(task, true: RegionResult, predicted: RegionResult | None) -> float | None:
    """The task's main metric of one region's content as a score from 0 to 1 (None: not scored)."""
    if task is None or true.text is None:
        return None
    text = predicted.text if predicted is not None and predicted.text is not None else ""
    try:
        return task.main_score(task.score([text], [true.text]))
    except Exception:  # noqa: BLE001  one odd region must not take the report down
        return None


def worst(entries: list[tuple[PageResult, dict, list[Pair]]], n: int) -> list[int]:
    """Indices of the `n` worst pages (see the module docstring); ties keep the pages' order."""
    def key(i: int) -> tuple:
        predicted, row, lines = entries[i]
        qualities = [line.quality for line in lines if line.quality is not None]
        return predicted.error is None, row["layout_f1"], sum(qualities) / len(qualities) if qualities else 1.0

    return sorted(range(len(entries)), key=key)[:n]


def write_reports(out: Path, options: dict[str, Any], scored: tuple[dict[str, float], list],
                  truth: list[tuple[Path, PageResult]], predicted: list[PageResult], tasks: dict[str, Any],
                  n_worst: int = 10) -> list[Path]:
    """Write the three reports into `out`: `scored` is `scoring.score_pages`' (metrics, a `PageScore` per page),
    `tasks` the routed labels' tasks whose contents were scored. Returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    metrics, scores = scored
    entries = [(page, page_row(page, score), pairs(true, page, score, tasks))
               for (_, true), page, score in zip(truth, predicted, scores)]
    cases = worst(entries, n_worst)
    routes = {label: task.name for label, task in tasks.items()}
    report = {"task": "pipeline", "options": options, "routes": routes, "metrics": metrics, "n": len(entries),
              "pages": [row for _, row, _ in entries]}
    paths = [out / "report.json", out / "report.md", out / "report.html"]
    write_text(paths[0], json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    write_text(paths[1], markdown(metrics, [entries[i] for i in cases]))
    shown = [(truth[i][0], truth[i][1], *entries[i]) for i in cases]
    write_text(paths[2], html_page(options, routes, metrics, len(entries), shown))
    return paths


def summary(row: dict[str, Any]) -> str:
    """A page's numbers in words (plain text)."""
    ned = row["reading_order_ned"]
    return (f"layout F1 {row['layout_f1']:.4f}, {len(row['matched'])} matched, {len(row['missed'])} missed, "
            f"{len(row['spurious'])} spurious, reading-order distance {'n/a' if ned is None else f'{ned:.4f}'}")


# ---- Markdown ------------------------------------------------------------------------------------


def markdown(metrics: dict[str, float], cases: list[tuple[PageResult, dict, list[Pair]]]) -> str:
    lines = ["# Evaluation: page pipeline", "", "| metric | value |", "| --- | ---: |"]
    lines += [f"| {md_text(name)} | {value:.4f} |" for name, value in metrics.items()]
    lines += ["", f"## Worst {len(cases)} pages", ""]
    for page, row, pairs_ in cases:
        lines += [f"### {md_text(page.input)}", ""]
        if page.error:
            lines += [f"Error: {md_text(page.error)}", ""]
        lines += [md_text(summary(row)), ""]
        for n, line in enumerate(pairs_, 1):
            label = (line.true or line.predicted).label
            kind = "spurious" if line.true is None else "missed" if line.predicted is None else f"IoU {line.iou:.2f}"
            quality = "" if line.quality is None else f", quality {line.quality:.3f}"
            lines += [f"{n}. {md_text(label)} ({kind}{quality})", ""]
            if line.true is not None and line.true.text is not None:
                lines += ["True:", "", fenced(line.true.text), ""]
            if line.predicted is not None and line.predicted.text is not None:
                lines += ["Predicted:", "", fenced(line.predicted.text), ""]
    return "\n".join(lines)


# ---- HTML ----------------------------------------------------------------------------------------


def html_page(options: dict[str, Any], routes: dict[str, str], metrics: dict[str, float], n: int,
              cases: list[tuple[Path, PageResult, PageResult, dict, list[Pair]]]) -> str:
    e = html.escape
    metric_rows = "".join(f"<tr><td>{e(k)}</td><td>{v:.4f}</td></tr>" for k, v in metrics.items())
    sections = "".join(_page(rank, *case) for rank, case in enumerate(cases, 1))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{e(PAGE_CSP)}">
<title>docvlm evaluation: page pipeline</title><style>{STYLE}</style></head>
<body>
<h1>Evaluation: page pipeline</h1>
{header(_Routes(routes), options, n)}
<section id="metrics"><h2>Metrics</h2><table class="metrics"><tr><th>metric</th><th>value</th></tr>{metric_rows}</table>
</section>
<section id="worst"><h2>Worst {len(cases)} pages</h2>
<p>Failed pages first, then by layout F1, then by the mean quality of the routed regions' contents (0 to 1).
True boxes green, predicted ones magenta, numbered in reading order.</p>
{sections}</section>
</body></html>
"""  # noqa: E501  (the page's sections one a line)


def _page(rank: int, image_path: Path, truth: PageResult, predicted: PageResult, row: dict, lines: list[Pair]) -> str:
    e = html.escape
    error = f'<p class="error">{e(predicted.error)}</p>' if predicted.error else ""
    problems = "".join(f"<li>{e(p)}</li>" for p in predicted.problems)
    order = {id(region): n for n, region in enumerate(predicted.regions, 1)}
    body = "".join(_line(line, order) for line in lines)
    table = ("<table class=\"regions\"><tr><th>true</th><th>true content</th><th>predicted</th>"
             f"<th>predicted content</th><th>IoU</th><th>quality</th></tr>{body}</table>") if lines else \
        '<p class="unavailable">no regions, true or predicted</p>'
    return (f'<section class="page"><div><h3>{rank}. {e(truth.input)}</h3><p>{e(summary(row))}</p>{error}'
            f'{f"<ul class=problems>{problems}</ul>" if problems else ""}{_drawing(image_path, truth, predicted)}'
            f"</div><div>{table}</div></section>")


def _line(line: Pair, order: dict[int, int]) -> str:
    e = html.escape
    kind = "spurious" if line.true is None else "missed" if line.predicted is None else "matched"
    true = e(line.true.label) if line.true is not None else "spurious"
    found = (f"{order[id(line.predicted)]} {e(line.predicted.label)}" if line.predicted is not None else "missed")
    problems = "".join(f"<li>{e(p)}</li>" for p in (line.predicted.problems if line.predicted is not None else ()))
    return (f'<tr class="{kind}"><td>{true}</td><td>{_text(line.true)}</td><td>{found}'
            f'{f"<ul class=problems>{problems}</ul>" if problems else ""}</td><td>{_text(line.predicted)}</td>'
            f"<td>{'' if line.iou is None else f'{line.iou:.2f}'}</td>"
            f"<td>{'' if line.quality is None else f'{line.quality:.3f}'}</td></tr>")


def _text(region: RegionResult | None) -> str:
    if region is None or region.text is None:
        return ""
    text = region.text
    if len(text) > MAX_TEXT:
        text = f"{text[:MAX_TEXT]}... ({len(region.text)} characters)"
    return f"<pre>{html.escape(text)}</pre>"


def _drawing(path: Path, truth: PageResult, predicted: PageResult) -> str:
    """The page with its true and predicted boxes as the layout report draws them, or a note when unreadable."""
    from PIL import ImageDraw

    from docvlm.converters.layout import Region, draw_regions
    from docvlm.images import BadImageError, load_image
    from docvlm.tasks.layout import PREDICTED_COLOUR, TRUE_COLOUR

    try:
        image = load_image(path)
    except BadImageError as err:
        return f'<p class="unavailable">page image unavailable ({html.escape(str(err))})</p>'
    drawn = draw_regions(image, [Region(r.label, r.box) for r in truth.regions], colour=TRUE_COLOUR, numbered=False)
    drawn = draw_regions(drawn, [Region(r.label, r.box) for r in predicted.regions], colour=PREDICTED_COLOUR)
    draw = ImageDraw.Draw(drawn)
    draw.text((4, drawn.height - 24), "true", fill=TRUE_COLOUR)
    draw.text((4, drawn.height - 12), "predicted", fill=PREDICTED_COLOUR)
    drawn.thumbnail((IMAGE_SIDE, IMAGE_SIDE))
    return f'<img alt="the page with its true and predicted regions" src="{data_uri(drawn)}">'
