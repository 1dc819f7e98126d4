"""Evaluation reports: `report.json`, `report.md` and one self-contained `report.html` from scored rows.

Model output is untrusted text. In the HTML page it is either escaped with `html.escape`, or, where the
task's export renders it as HTML (tables), shown inside `<iframe sandbox srcdoc="...">`: escaped into the
attribute (no breakout), no scripts, and a Content-Security-Policy that allows no loads at all. The page
itself has no scripts and loads nothing: images and the plot are `data:` URIs, the CSS is inline.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from docvlm.export_worker import ExportError, ExportWorker
from docvlm.images import BadImageError, load_image
from docvlm.tasks.base import Task

PAGE_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
FRAME_CSP = "default-src 'none'; style-src 'unsafe-inline'"
THUMBNAIL = 640  # longest side of images shown in the page, in pixels
EXPORT_TIMEOUT = 120.0  # seconds for rendering one case's text (verovio, RDKit) before it is given up
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}
.metrics td:last-child{text-align:right;font-variant-numeric:tabular-nums}
.case{display:grid;grid-template-columns:1fr 1fr 1fr;gap:1em;border-top:1px solid #ccc;padding:1em 0}
.case img{max-width:100%}pre{white-space:pre-wrap;word-break:break-word;background:#f6f6f6;padding:.5em;max-height:20em;overflow:auto}
iframe{width:100%;height:20em;border:1px solid #ccc;background:#fff}.problems{color:#a40}
.unavailable{color:#888;font-style:italic}
"""


def worst(rows: list[dict], task: Task, n: int) -> list[int]:
    """Indices of the `n` rows worst by the task's main metric (rows that could not be scored first); ties,
    common where a metric is 0 or 1 per sample (exact match), are broken by the task's other metrics in
    the order it declares them, a metric a row lacks counting as no worse."""
    order = [task.metric(task.main_metric)] + [m for m in task.metrics if m.name != task.main_metric]

    def key(i: int) -> tuple[float, ...]:
        score = rows[i]["score"]
        if score is None:
            return (float("-inf"),)
        return tuple(float("inf") if score.get(m.name) is None else score[m.name] * (1 if m.higher_is_better else -1)
                     for m in order)

    return sorted(range(len(rows)), key=key)[:n]


def write_reports(out: Path, task: Task, options: dict[str, Any], metrics: dict[str, float], rows: list[dict],
                  images: Sequence | None = None, n_worst: int = 10) -> list[Path]:
    """Write the three reports into `out`; `images[i]` is the image source of `rows[i]` (path, PIL image,
    callable or None) for the page. Returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    metric = task.main_metric
    report = {"task": task.name, "task_options": task.options(), "options": options, "main_metric": metric,
              "metrics": metrics, "n": len(rows), "rows": rows}
    paths = [out / "report.json", out / "report.md", out / "report.html"]
    paths[0].write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    cases = worst(rows, task, n_worst)
    paths[1].write_text(markdown(task, metrics, metric, [rows[i] for i in cases]), encoding="utf-8")
    page = html_page(task, options, metrics, metric, rows, [(rows[i], images[i] if images else None) for i in cases])
    paths[2].write_text(page, encoding="utf-8")
    return paths


# ---- Markdown ------------------------------------------------------------------------------------


def markdown(task: Task, metrics: dict[str, float], metric: str, cases: list[dict]) -> str:
    lines = [f"# Evaluation: {task.name}", "", "| metric | value |", "| --- | ---: |"]
    lines += [f"| {name} | {value:.4f} |" for name, value in metrics.items()]
    lines += ["", f"## Worst {len(cases)} by {metric}", ""]
    for row in cases:
        value = (row["score"] or {}).get(metric)
        lines += [f"### {_md_text(row['id'])} ({metric} {'n/a' if value is None else f'{value:.4f}'})", ""]
        if row["problems"]:
            lines += [f"Problems: {_md_text('; '.join(row['problems']))}", ""]
        lines += ["Reference:", "", _fenced(row["target"]), "", "Prediction:", "", _fenced(row["prediction"]), ""]
    return "\n".join(lines)


def _fenced(text: str) -> str:
    """A code block that no backtick run inside `text` can close."""
    fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
    return f"{fence}text\n{text}\n{fence}"


def _md_text(text: str) -> str:
    """One line of inert Markdown: HTML escaped, Markdown punctuation backslash-escaped."""
    return re.sub(r"([\\`*_\[\]#|!])", r"\\\1", html.escape(" ".join(str(text).split())))


# ---- HTML ----------------------------------------------------------------------------------------


def html_page(task: Task, options: dict[str, Any], metrics: dict[str, float], metric: str, rows: list[dict],
              cases: list[tuple[dict, Any]]) -> str:
    e = html.escape
    metric_rows = "".join(f"<tr><td>{e(k)}</td><td>{v:.4f}</td></tr>" for k, v in metrics.items())
    option_rows = "".join(f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in options.items() if v is not None)
    values = [row["score"][metric] for row in rows if row["score"] and row["score"].get(metric) is not None]
    worker = ExportWorker(task, EXPORT_TIMEOUT)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            case_html = "".join(_case(worker, row, image, metric, Path(tmp) / str(i)) for i, (row, image) in enumerate(cases))
    finally:
        worker.close()
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{e(PAGE_CSP)}">
<title>docvlm evaluation: {e(task.name)}</title><style>{STYLE}</style></head>
<body>
<h1>Evaluation: {e(task.name)}</h1>
<section id="options"><table>{option_rows}<tr><td>samples</td><td>{len(rows)}</td></tr></table></section>
<section id="metrics"><h2>Metrics</h2><table class="metrics"><tr><th>metric</th><th>value</th></tr>{metric_rows}</table></section>
<section id="distribution"><h2>Per-sample {e(metric)}</h2>
<img alt="histogram of per-sample {e(metric)}" src="{_plot(values, metric)}"></section>
<section id="worst"><h2>Worst {len(cases)} by {e(metric)}</h2>{case_html}</section>
</body></html>
"""


def _case(worker: ExportWorker, row: dict, image: Any, metric: str, stem: Path) -> str:
    e = html.escape
    value = (row["score"] or {}).get(metric)
    problems = "".join(f"<li>{e(p)}</li>" for p in row["problems"])
    return (
        f'<div class="case"><div><h3>{e(str(row["id"]))}</h3>'
        f"<p>{e(metric)}: {'n/a' if value is None else f'{value:.4f}'}</p>{_image(image)}"
        f'<ul class="problems">{problems}</ul></div>'
        f"<div><h4>reference</h4><pre>{e(row['target'])}</pre>{_rendered(worker, row['target'], stem.with_name(stem.name + '-ref'))}</div>"
        f"<div><h4>prediction</h4><pre>{e(row['prediction'])}</pre>{_rendered(worker, row['prediction'], stem)}</div></div>"
    )


def _image(source: Any) -> str:
    """The sample's image inline, or a note when it cannot be read (the page must still be written)."""
    if source is None:
        return '<p class="unavailable">image unavailable</p>'
    try:
        image = load_image(source)
    except BadImageError as err:
        return f'<p class="unavailable">image unavailable ({html.escape(str(err))})</p>'
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    return f'<img alt="input image" src="{_data_uri(image)}">'


def _rendered(worker: ExportWorker, text: str, stem: Path) -> str:
    """What the task's export makes of `text`, shown safely: HTML in a sandboxed frame, PNG inline.

    The export runs in the worker's child process: a renderer crashing on odd output (verovio segfaults on
    some **kern) costs only this case's drawing, not the report."""
    try:
        paths, _ = worker.export(text, stem)
    except ExportError as err:
        return f'<p class="problems">{html.escape(str(err))}</p>'
    parts = []
    for path in map(Path, paths):
        if path.suffix == ".html":
            document = f'<meta http-equiv="Content-Security-Policy" content="{FRAME_CSP}">' + path.read_text(encoding="utf-8")
            parts.append(f'<iframe sandbox title="rendered HTML" srcdoc="{html.escape(document, quote=True)}"></iframe>')
        elif path.suffix == ".png":
            parts.append(_image(path))
    return "".join(parts)


def _plot(values: list[float], metric: str) -> str:
    """A histogram of the per-sample scores as a PNG data URI (matplotlib without pyplot's global state)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3), dpi=100)
    axes = figure.add_subplot()
    axes.hist(values, bins=20)
    axes.set_xlabel(f"per-sample {metric}")
    axes.set_ylabel("samples")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _data_uri(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
