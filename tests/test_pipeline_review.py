"""`docvlm.pipeline.review`: the pages to check first, in a stated order, drawn, with hostile model output,
labels, problems and file names inert in the page."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from lxml import html as lxml_html
from PIL import Image

from docvlm.pipeline.drawing import draw_page
from docvlm.pipeline.results import PageResult, RegionResult
from docvlm.pipeline.review import review_order, write_review
from page_results import composed

CHROMIUM = shutil.which("chromium")
HOSTILE = [
    "<script>document.title='pwned'</script>",
    "<img src=x onerror=\"document.title='pwned'\">",
    "</pre></td></table><script>document.title='pwned'</script>",
    "[click](javascript:alert(1)) **bold** <a href='javascript:alert(2)'>a</a>",
    "<table><tr><td><iframe src='https://example.com'></iframe></td></tr></table>",
]


def page(name: str, *scores, problems=(), error=None, page_problems=()) -> PageResult:
    regions = [RegionResult("text", (0.1, 0.1 * i, 0.9, 0.1 * i + 0.05), s, "text", "x", "x", "model",
                            list(problems) if i == 0 else []) for i, s in enumerate(scores)]
    return PageResult(name, None, 100, 100, regions=regions, problems=list(page_problems), error=error)


def test_failed_pages_then_pages_with_problems_then_the_least_confident_first():
    pages = [page("sure", 0.99, 0.95), page("unscored", None), page("doubtful", 0.9, 0.2),
             page("repaired", 0.99, problems=["line 3: malformed token"]), page("failed", error="cannot read"),
             page("empty"), page("layout", 0.97, page_problems=["text outside any region ignored"]),
             page("half", None, 0.6)]
    assert [pages[i].input for i in review_order(pages)] == [
        "failed", "layout", "repaired", "empty", "doubtful", "half", "sure", "unscored"]


def test_the_listed_pages_are_drawn_and_hostile_text_stays_inert(tmp_path):
    synthetic, scored = composed(19, min_regions=6)
    drawn = tmp_path / "drawn.png"
    draw_page(synthetic.image, scored).save(drawn)
    hostile = PageResult('"><script>document.title="pwned"</script>.png', 2, 800, 1000, regions=[
        RegionResult(f"<b onmouseover=alert({n})>table</b>" if n == 0 else "table", (0.1, 0.1 * n, 0.5, 0.1 * n + 0.05),
                     0.1, "tables", text, None, "model", [f"problem <script>{text}</script>"],
                     [f"<img src=x onerror=alert({n})>.html"])
        for n, text in enumerate(HOSTILE)], problems=["<script>alert('page')</script>"])
    failed = PageResult("broken.pdf", 3, 0, 0, error="<svg onload=alert(1)>")
    entries = [(scored, drawn), (hostile, draw_page(Image.new("RGB", (800, 1000), "white"), hostile)),
               (failed, None), (page("never shown", 1.0), tmp_path / "missing.png")]
    path = write_review(tmp_path / "review.html", entries, n=3)
    assert path == tmp_path / "review.html"
    tree = lxml_html.fromstring(path.read_bytes())
    elements = [e for e in tree.iter() if isinstance(e.tag, str)]
    assert not [e for e in elements if e.tag in ("script", "iframe", "object", "embed", "a", "form", "base", "link")]
    assert not [(e.tag, a) for e in elements for a in e.attrib if a.lower().startswith("on")]
    assert all(src.startswith("data:image/png;base64,") for src in tree.xpath("//@src"))
    assert not tree.xpath("//@href")
    sections = tree.xpath("//section[@class='page']")
    assert [s.xpath("string(.//h2)") for s in sections] == [
        "1. broken.pdf, page 3", '2. "><script>document.title="pwned"</script>.png, page 2', "3. page.png"]
    assert len(tree.xpath("//img")) == 2 and "no drawing of the page" in sections[0].text_content()
    assert "<svg onload=alert(1)>" in sections[0].text_content()
    assert [p.text_content() for p in sections[1].xpath(".//pre")] == HOSTILE  # shown as text, verbatim
    assert "<b onmouseover=alert(0)>table</b>" in sections[1].text_content()
    assert "<img src=x onerror=alert(4)>.html" in sections[1].text_content()
    assert len(sections[2].xpath(".//tr")) == len(scored.regions) + 1
    assert tree.xpath("string(//title)") == "docvlm: pages to review"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_a_browser_runs_nothing_from_the_review(tmp_path):
    hostile = PageResult("a.png", None, 10, 10, regions=[
        RegionResult("text", (0, 0, 1, 1), 0.5, "text", text, text) for text in HOSTILE])
    path = write_review(tmp_path / "review.html", [(hostile, None)])
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'p'}",
                          "--virtual-time-budget=2000", "--dump-dom", Path(path).as_uri()],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    tree = lxml_html.fromstring(dom)
    assert tree.xpath("string(//title)") == "docvlm: pages to review"
    assert not tree.xpath("//script|//iframe|//a") and len(tree.xpath("//pre")) == len(HOSTILE)
