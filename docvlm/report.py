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
from docvlm.outputs import write_text
from docvlm.tasks.base import Task

PAGE_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
FRAME_CSP = "default-src 'none'; style-src 'unsafe-inline'"
THUMBNAIL = 640  # longest side of images shown in the page, in pixels
OPEN_PROBLEMS = 3  # a case's problems are listed open up to this many, folded beyond
EXPORT_TIMEOUT = 120.0  # seconds for rendering one case's text (verovio, RDKit) before it is given up
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}
.metrics td:last-child{text-align:right;font-variant-numeric:tabular-nums}
.case{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:1em;border-top:1px solid #ccc;padding:1em 0}
.case h3,.case p,.case li{overflow-wrap:anywhere}.case img{max-width:100%}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f6f6;padding:.5em;max-height:20em;overflow:auto}
iframe{width:100%;height:20em;border:1px solid #ccc;background:#fff}.problems{color:#a40}
details.problems ul{max-height:15em;overflow:auto;margin:.3em 0}summary{cursor:pointer}
.unavailable{color:#888;font-style:italic}
.about th{text-align:left;font-weight:600;background:#f6f6f6}.about .options td{border:none;padding:0 1em 0 0}
.perfect{background:#eef8ee;border-left:4px solid #4a4;padding:.5em 1em}
.warning{background:#fff4e0;border-left:4px solid #e80;padding:.5em 1em;overflow-wrap:anywhere}
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
    references = reference_problems(task, rows)
    report = {"task": task.name, "task_options": task.options(), "options": options, "main_metric": metric,
              "metrics": metrics, "n": len(rows), "reference_problems": references, "rows": rows}
    paths = [out / "report.json", out / "report.md", out / "report.html"]
    write_text(paths[0], json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    cases = worst(rows, task, n_worst)
    warning = _reference_warning(task, references, rows)
    write_text(paths[1], markdown(task, metrics, metric, [rows[i] for i in cases], warning))
    page = html_page(task, options, metrics, metric, rows, [(rows[i], images[i] if images else None) for i in cases],
                     warning)
    write_text(paths[2], page)
    return paths


def reference_problems(task: Task, rows: list[dict]) -> dict[str, Any]:
    """How many references do not parse cleanly as the task's output, with the first few (id, first problem).

    Metrics read references in the task's format: `--task tables` on references that are not tables scored
    `grits_top` 1.0 beside `teds` 0 without a word. Repaired or unusual references (a molecule's `[R1]`)
    are counted too; the examples say which kind they are."""
    found = []
    for row in rows:
        if row.get("target") is None:
            continue
        problems = task.parse(row["target"]).problems
        if problems:
            found.append({"id": row["id"], "problem": problems[0]})
    return {"count": len(found), "examples": found[:3]}


def _reference_warning(task: Task, references: dict[str, Any], rows: list[dict]) -> str | None:
    """The warning's plain text, or None when every reference parses cleanly."""
    if not references["count"]:
        return None
    total = sum(row.get("target") is not None for row in rows)
    examples = "; ".join(f"{example['id']}: {example['problem']}" for example in references["examples"])
    return (f"{references['count']} of {total} references do not parse cleanly as {task.name} output "
            f"(e.g. {examples}). The metrics read them in that format: check that the task matches the data.")


# ---- Markdown ------------------------------------------------------------------------------------


def markdown(task: Task, metrics: dict[str, float], metric: str, cases: list[dict], warning: str | None = None) -> str:
    lines = [f"# Evaluation: {task.name}", ""]
    if warning:
        lines += [f"> **Warning:** {md_text(warning)}", ""]
    lines += ["| metric | value |", "| --- | ---: |"]
    lines += [f"| {name} | {value:.4f} |" for name, value in metrics.items()]
    lines += [f"\n{md_text(note)}" for note in notes(task, metrics)]
    lines += ["", f"## Worst {len(cases)} by {metric}", ""]
    for row in cases:
        value = (row["score"] or {}).get(metric)
        lines += [f"### {md_text(row['id'])} ({metric} {'n/a' if value is None else f'{value:.4f}'})", ""]
        if row["problems"]:
            lines += [f"Problems: {md_text('; '.join(row['problems']))}", ""]
        lines += ["Reference:", "", fenced(row["target"]), "", "Prediction:", "", fenced(row["prediction"]), ""]
    return "\n".join(lines)


def notes(task: Task, metrics: dict[str, float]) -> list[str]:
    """The notes of the reported metrics, each once, named by the metrics that carry it."""
    by_note: dict[str, list[str]] = {}
    for metric in task.metrics:
        if metric.note and metric.name in metrics:
            by_note.setdefault(metric.note, []).append(metric.name)
    return [f"{', '.join(names)}: {note}" for note, names in by_note.items()]


def fenced(text: str) -> str:
    """A code block that no backtick run inside `text` can close."""
    fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
    return f"{fence}text\n{text}\n{fence}"


def md_text(text: str) -> str:
    """One line of inert Markdown: HTML escaped, Markdown punctuation backslash-escaped."""
    return re.sub(r"([\\`*_\[\]#|!])", r"\\\1", html.escape(" ".join(str(text).split())))


# ---- HTML ----------------------------------------------------------------------------------------


def html_page(task: Task, options: dict[str, Any], metrics: dict[str, float], metric: str, rows: list[dict],
              cases: list[tuple[dict, Any]], warning: str | None = None) -> str:
    e = html.escape
    warning_html = f'<p class="warning">{e(warning)}</p>' if warning else ""
    metric_rows = "".join(f"<tr><td>{e(k)}</td><td>{v:.4f}</td></tr>" for k, v in metrics.items())
    metric_notes = "".join(f'<p class="note">{e(note)}</p>' for note in notes(task, metrics))
    values = [row["score"][metric] for row in rows if row["score"] and row["score"].get(metric) is not None]
    worker = ExportWorker(task, EXPORT_TIMEOUT)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            case_html = "".join(_case(worker, task, row, image, metric, Path(tmp) / str(i))
                                for i, (row, image) in enumerate(cases))
    finally:
        worker.close()
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{e(PAGE_CSP)}">
<title>docvlm evaluation: {e(task.name)}</title><style>{STYLE}</style></head>
<body>
<h1>Evaluation: {e(task.name)}</h1>{warning_html}
{header(task, options, len(rows))}
<section id="metrics"><h2>Metrics</h2><table class="metrics"><tr><th>metric</th><th>value</th></tr>{metric_rows}</table>
{metric_notes}</section>
<section id="distribution"><h2>Per-sample {e(metric)}</h2>
<img alt="histogram of per-sample {e(metric)}" src="{_plot(values, metric)}"></section>
<section id="worst"><h2>Worst {len(cases)} by {e(metric)}</h2>{_all_perfect_note(task, metric, rows, len(cases))}
{case_html}</section>
</body></html>
"""  # noqa: E501  (the page's sections one a line)


def header(task: Task, options: dict[str, Any], samples: int) -> str:
    """What was evaluated, as a reader asks it (model, task and its options, data, samples, decoding), and the
    command line folded below; `options["about"]` holds the words `docvlm evaluate` found for them."""
    e = html.escape
    about = options.get("about", {})
    task_options = "".join(f"<tr><td>{e(k)}</td><td>{e(_option_text(v))}</td></tr>" for k, v in task.options().items())
    rows = [("model", about.get("model")), ("task", e(task.name)),
            ("task options", f'<table class="options">{task_options}</table>' if task_options else "none"),
            ("data", about.get("data")), ("samples", str(samples)), ("decoding", about.get("decoding"))]
    table = "".join(f"<tr><th>{name}</th><td>{value if name in ('task options', 'task') else e(value)}</td></tr>"
                    for name, value in rows if value is not None)
    command = options.get("command")
    folded = f"<details><summary>command line</summary><p><code>{e(command)}</code></p></details>" if command else ""
    return f'<section id="about"><table class="about">{table}</table>{folded}</section>'


def _option_text(value: Any) -> str:
    """A task option as a reader writes it: lists joined by commas, nothing as "none"."""
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) if value else "none"
    return "none" if value is None or value == "" else str(value)


def _all_perfect_note(task: Task, metric: str, rows: list[dict], shown: int) -> str:
    """A line saying that the cases below are not failures when every sample scored the metric's perfect value."""
    perfect = task.metric(metric).perfect
    scores = [(row["score"] or {}).get(metric) for row in rows]
    if perfect is None or not shown or any(value is None or value != perfect for value in scores):
        return ""
    return (f'<p class="perfect">All {len(rows)} samples score a perfect {html.escape(metric)} of {perfect:g}: the '
            f"{shown} below are listed for inspection, not because anything is wrong.</p>")


def _case(worker: ExportWorker, task: Task, row: dict, image: Any, metric: str, stem: Path) -> str:
    e = html.escape
    value = (row["score"] or {}).get(metric)
    reference = _rendered(worker, row["target"], stem.with_name(stem.name + "-ref"))
    shown = _image(image, lambda page: task.illustrate(page, row["target"], row["prediction"]))
    return (
        f'<div class="case"><div class="sample"><h3>{e(str(row["id"]))}</h3>'
        f"<p>{e(metric)}: {'n/a' if value is None else f'{value:.4f}'}</p>"
        f"{shown}{_problems(row['problems'])}</div>"
        f'<div class="reference"><h4>reference</h4><pre>{e(row["target"])}</pre>{reference}</div>'
        f'<div class="prediction"><h4>prediction</h4><pre>{e(row["prediction"])}</pre>'
        f"{_rendered(worker, row['prediction'], stem)}</div></div>"
    )


def _problems(problems: list[str]) -> str:
    """The parse problems, folded into a `<details>` that is open when there are only a few."""
    if not problems:
        return ""
    items = "".join(f"<li>{html.escape(p)}</li>" for p in problems)
    opened = " open" if len(problems) <= OPEN_PROBLEMS else ""
    summary = f"{len(problems)} problem{'s' if len(problems) > 1 else ''} parsing the prediction"
    return f'<details class="problems"{opened}><summary>{summary}</summary><ul>{items}</ul></details>'


def _image(source: Any, illustrate=None) -> str:
    """The sample's image inline (with what `illustrate(image)` draws on it, where that gives an image), or a
    note when it cannot be read (the page must still be written)."""
    if source is None:
        return '<p class="unavailable">image unavailable</p>'
    try:
        image = load_image(source)
    except BadImageError as err:
        return f'<p class="unavailable">image unavailable ({html.escape(str(err))})</p>'
    image = (illustrate(image) if illustrate else None) or image
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    return f'<img alt="input image" src="{data_uri(image)}">'


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
            document = (f'<meta http-equiv="Content-Security-Policy" content="{FRAME_CSP}">'
                        + path.read_text(encoding="utf-8"))
            parts.append(f'<iframe sandbox title="rendered HTML" '
                         f'srcdoc="{html.escape(document, quote=True)}"></iframe>')
        elif path.suffix == ".png":
            parts.append(_image(path))
    return "".join(parts)


def histogram(values: list[float], metric: str):
    """The per-sample scores' histogram (matplotlib without pyplot's global state), its x axis over the
    metric's range: from 0 (or the lowest value) to 1 for fractions, to the highest value beyond (CER in
    %). Matplotlib's own limits put all-zero values on an axis from -0.4 to 0.4."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    low, high = min(0.0, *values), max(1.0, *values)
    figure = Figure(figsize=(6, 3), dpi=100)
    axes = figure.add_subplot()
    axes.hist(values, bins=20, range=(low, high))
    axes.set_xlim(low, high)
    axes.set_xlabel(f"per-sample {metric}")
    axes.set_ylabel("samples")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 2.5 samples
    figure.tight_layout()
    return figure


def _plot(values: list[float], metric: str) -> str:
    """`histogram` as a PNG data URI."""
    figure = histogram(values, metric)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def data_uri(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
