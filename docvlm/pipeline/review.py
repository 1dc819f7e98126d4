"""`review.html`: the pages a person should check first, each drawn with its regions and what was read in them.

Which pages come first (`review_order`): pages that failed, then pages with problems (their own, such as
the layout output's, or any region's: unusable or repaired content), then the rest; within each group the
page whose least confident region is least confident first. A region without a score (a regions file
without `score`) does not make its page doubtful: unknown is not low, so pages scored only so come last.
A page where no region was found counts as confidence 0 (nothing on it was read). Ties keep the order given.

The page is inert, as `docvlm.report`'s: model output, file names and problems are escaped with `html.escape`
(output text in `<pre>`, cut to `MAX_TEXT` characters), nothing is linked or loaded (the drawn pages are
`data:` URIs), no scripts, and a Content-Security-Policy that allows only `data:` images and inline CSS.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from docvlm.images import BadImageError, load_image
from docvlm.pipeline.results import PageResult
from docvlm.report import PAGE_CSP

REVIEW_PAGES = 20  # pages listed
IMAGE_SIDE = 1000  # longest side of a drawn page in the review, in pixels: labels and numbers stay legible
MAX_TEXT = 4000  # characters of a region's output shown (the exported files hold all of it)
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
.page{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:1em;border-top:1px solid #ccc;padding:1em 0}
.page img{max-width:100%;border:1px solid #ccc}h2,p,li,.files{overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%}
td,th{border:1px solid #ccc;padding:4px 6px;vertical-align:top;text-align:left}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f6f6;padding:.4em;margin:0;max-height:12em;overflow:auto}
.problems{color:#a40}.error{color:#a00;font-weight:600}.unavailable{color:#888;font-style:italic}
"""


def confidence(page: PageResult) -> float:
    """The page's lowest region score; 0 without regions, infinity when none is scored (see the module)."""
    if not page.regions:
        return 0.0
    scores = [region.score for region in page.regions if region.score is not None]
    return min(scores) if scores else float("inf")


def review_order(pages: list[PageResult]) -> list[int]:
    """Indices of `pages`, the one to check first first (see the module docstring)."""
    def key(i: int) -> tuple:
        page = pages[i]
        troubled = bool(page.problems) or any(region.problems for region in page.regions)
        return (page.error is None, not troubled, confidence(page))

    return sorted(range(len(pages)), key=key)


def write_review(path: str | Path, entries: Iterable[tuple[PageResult, Any]], n: int = REVIEW_PAGES) -> Path:
    """Write `path` (review.html): the `n` pages of `entries` to check first, each `(page, image)` with `image`
    the drawn page (`drawing.draw_page`'s image, or the path of its PNG; None when there is none). Only the
    listed pages' images are read. Returns the path."""
    entries = list(entries)
    order = review_order([page for page, _ in entries])[:n]
    sections = "".join(_page(*entries[i], rank) for rank, i in enumerate(order, 1))
    e = html.escape
    text = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{e(PAGE_CSP)}">
<title>docvlm: pages to review</title><style>{STYLE}</style></head>
<body><h1>Pages to review</h1>
<p>{len(order)} of {len(entries)} pages: failed pages first, then pages with problems, then by their least
confident region (lowest layout score first).</p>
{sections}</body></html>
"""
    path = Path(path)
    path.write_text(text, encoding="utf-8", errors="replace")  # a lone surrogate (crafted rows) as `?`
    return path


def _page(page: PageResult, image: Any, rank: int) -> str:
    e = html.escape
    where = page.input + (f", page {page.page}" if page.page is not None else "")
    lowest = confidence(page)
    score = "no region scored" if lowest == float("inf") else f"lowest region score {lowest:.3f}"
    error = f'<p class="error">{e(page.error)}</p>' if page.error else ""
    rows = "".join(
        f"<tr><td>{n}</td><td>{e(region.label)}</td><td>{'' if region.score is None else f'{region.score:.3f}'}</td>"
        f"<td>{e(region.task or region.source or 'none')}</td><td>{_problems(region.problems)}</td>"
        f"<td>{_text(region.text)}</td><td class=\"files\">{e(', '.join(region.outputs))}</td></tr>"
        for n, region in enumerate(page.regions, 1))
    table = ("<table><tr><th>#</th><th>label</th><th>score</th><th>read by</th><th>problems</th><th>output</th>"
             f"<th>files</th></tr>{rows}</table>") if page.regions else '<p class="unavailable">no regions</p>'
    return (f'<section class="page"><div><h2>{rank}. {e(where)}</h2><p>{score}</p>{error}'
            f"{_problems(page.problems)}{_image(image)}</div><div>{table}</div></section>")


def _problems(problems: list[str]) -> str:
    if not problems:
        return ""
    return '<ul class="problems">' + "".join(f"<li>{html.escape(p)}</li>" for p in problems) + "</ul>"


def _text(text: str | None) -> str:
    if text is None:
        return ""
    if len(text) > MAX_TEXT:
        text = f"{text[:MAX_TEXT]}... ({len(text)} characters)"
    return f"<pre>{html.escape(text)}</pre>"


def _image(source: Any) -> str:
    """The drawn page inline, or a note when there is none or it cannot be read."""
    if source is None:
        return '<p class="unavailable">no drawing of the page</p>'
    try:
        image = load_image(source)
    except BadImageError as err:
        return f'<p class="unavailable">drawing unavailable ({html.escape(str(err))})</p>'
    image.thumbnail((IMAGE_SIDE, IMAGE_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="the page with its regions drawn" src="{uri}">'
