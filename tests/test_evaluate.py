"""`docvlm evaluate`: reports from a real tiny-model run, and a page that stays inert with hostile output."""

import base64
import io
import json
import os
import resource
import shutil
import subprocess
from pathlib import Path

import pytest
from lxml import html as lxml_html
from PIL import Image

import docvlm.tasks
import docvlm.tasks.base
from docvlm.evaluate import main
from docvlm.tasks.molecules import MoleculesTask
from helpers import text_image

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)

# Hostile model outputs: scripts and handlers inside a table, a frame breakout, an attribute breakout, and
# scripts that would mark the outer page or paint their own frame red if they ever ran.
HOSTILE = [
    "<table><tr><td><script>alert(1)</script><img src=x onerror=alert(2)></td></tr></table>",
    "<table><tr><td><script>document.body.style.background='red'</script>"
    "<img src=x onerror=\"this.ownerDocument.body.style.background='red'\">paint</td></tr></table>",
    "</iframe><script>document.body.setAttribute('data-pwned','1')</script><table><tr><td>x</td></tr></table>",
    "<table><tr><td title='\"></iframe><script>alert(4)</script>'>a</td><td>"
    "<img src=x onerror=\"parent.document.body.setAttribute('data-pwned','2')\"></td></tr></table>",
]


@pytest.fixture(scope="module")
def text_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("text")
    code = main(["--task", "text", "--model", "tiny", "--synthetic", "3", "--max-new-tokens", "8", "--out", str(out)])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def tables_report(tmp_path_factory, data_dir):
    """A predictions file as validation writes it (+ images): one real PubTabNet image, one missing."""
    folder = tmp_path_factory.mktemp("tables")
    real = docvlm.tasks.get("tables").read(data_dir / "pubtabnet" / "examples" / "PubTabNet_Examples.jsonl")[0]
    shutil.copy(real.image, folder / Path(real.image).name)  # images resolve inside the file's folder
    rows = [
        {"id": real.id, "image": Path(real.image).name, "target": real.target, "prediction": HOSTILE[0]},
        {"id": "missing-image", "image": "missing.png", "target": "<table><tr><td>x</td></tr></table>",
         "prediction": HOSTILE[2]},
        {"id": "no-image", "target": "<table><tr><td>a</td><td>b</td></tr></table>", "prediction": HOSTILE[3]},
        {"id": "no-image-2", "target": "<table><tr><td>paint</td></tr></table>", "prediction": HOSTILE[1]},
    ]
    predictions = folder / "val-step10.jsonl"
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = folder / "report"
    assert main(["--task", "tables", "--predictions", str(predictions), "--out", str(out)]) == 0
    return out, rows


class AbortOnCrashText(MoleculesTask):
    """The molecules task, except that drawing a text with CRASH in it kills the process as a segfault would."""

    name = "test-abort-on-crash"

    def export(self, parsed, stem):
        if "CRASH" in parsed.text:
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            os.abort()
        return super().export(parsed, stem)


@pytest.mark.slow
def test_a_renderer_crash_costs_only_its_drawing(tmp_path, monkeypatch):
    monkeypatch.setitem(docvlm.tasks.base._REGISTRY, AbortOnCrashText.name, AbortOnCrashText)
    predictions = tmp_path / "preds.jsonl"
    rows = [{"id": "first", "target": "CCO", "prediction": "CRASH"},
            {"id": "second", "target": "CCO", "prediction": "CCN"}]
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["--task", AbortOnCrashText.name, "--predictions", str(predictions), "--out", str(out)]) == 0
    page = lxml_html.fromstring((out / "report.html").read_bytes())
    cases = {c.xpath("string(.//h3)"): c for c in page.xpath("//div[@class='case']")}
    crashed = cases["first"].xpath("string(./div[3]//p[@class='problems'])")
    assert crashed.startswith("the export process crashed (signal SIGABRT)")
    assert not cases["first"].xpath("./div[3]//img") and cases["first"].xpath("./div[2]//img")  # its reference is drawn
    assert len(cases["second"].xpath("./div[3]//img")) == 1  # the next case is drawn by a fresh process


def test_synthetic_text_run_writes_three_reports_with_consistent_metrics(text_report):
    assert {p.name for p in text_report.iterdir()} >= {"report.json", "report.md", "report.html", "predictions.jsonl"}
    report = json.loads((text_report / "report.json").read_text(encoding="utf-8"))
    task = docvlm.tasks.get("text")
    rows = report["rows"]
    assert report["task"] == "text" and report["n"] == len(rows) == 3 and report["main_metric"] == "cer"
    assert report["metrics"] == task.score([r["prediction"] for r in rows], [r["target"] for r in rows])
    decoded = [json.loads(line) for line in (text_report / "predictions.jsonl").read_text().splitlines()]
    assert [d["prediction"] for d in decoded] == [r["prediction"] for r in rows]
    for row, d in zip(rows, decoded):
        assert row["score"] == task.score([row["prediction"]], [row["target"]])
        assert row["problems"] == [*d["decoding_problems"], *task.parse(row["prediction"]).problems]
    targets = [s.target for s in task.synthesize(3, seed=1)]
    assert [r["target"] for r in rows] == targets

    md = (text_report / "report.md").read_text(encoding="utf-8")
    assert "| cer |" in md and "## Worst 3 by cer" in md

    page = lxml_html.fromstring((text_report / "report.html").read_bytes())
    assert {s.get("id") for s in page.iter("section")} >= {"metrics", "distribution", "worst"}
    images = page.xpath("//img/@src")
    assert len(images) == 4 and all(src.startswith("data:image/png;base64,") for src in images)  # plot + 3 inputs
    assert len(page.xpath("//div[@class='case']")) == 3


def test_hostile_table_predictions_stay_inert(tables_report):
    out, rows = tables_report
    page = lxml_html.fromstring((out / "report.html").read_bytes())
    elements = list(page.iter())
    assert not [e for e in elements if e.tag == "script"]
    assert not [(e.tag, a) for e in elements if isinstance(e.tag, str) for a in e.attrib if a.lower().startswith("on")]
    for attribute in ("src", "href", "action", "formaction", "data", "poster"):
        assert all(v.startswith("data:") for v in page.xpath(f"//@{attribute}")), attribute
    assert not page.xpath("//object|//embed|//base|//form|//link")

    frames = page.xpath("//iframe")
    assert len(frames) == 8  # reference and prediction rendered, four cases
    for frame in frames:
        assert frame.get("sandbox") is not None and "allow" not in frame.get("sandbox")
        csp = '''<meta http-equiv="Content-Security-Policy" content="default-src 'none';'''
        assert frame.get("srcdoc").startswith(csp)
    # the rendered tables are the sanitised export: no script or handler even inside the frames;
    # the raw hostile text is shown only as text in <pre>
    assert not any("<script" in f.get("srcdoc") or "onerror" in f.get("srcdoc") for f in frames)
    assert sorted(p.text_content() for p in page.xpath("//pre")) == sorted(
        [r["prediction"] for r in rows] + [r["target"] for r in rows])

    text = page.text_content()
    assert text.count("image unavailable") == 3  # the missing file and the rows without an image
    assert "missing.png" in text
    assert len(page.xpath("//div[@class='case']//img[starts-with(@src, 'data:image/png')]")) == 1  # the real image

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    task = docvlm.tasks.get("tables")
    assert report["metrics"] == task.score([r["prediction"] for r in rows], [r["target"] for r in rows])
    by_id = {r["id"]: r for r in report["rows"]}
    assert by_id["missing-image"]["problems"] == task.parse(HOSTILE[2]).problems != []


def test_malformed_predictions_line_names_file_and_line(tmp_path, capsys):
    predictions = tmp_path / "preds.jsonl"
    predictions.write_text('{"id": "a", "prediction": "x", "target": "x"}\n{"id": "b", "prediction": \n',
                           encoding="utf-8")
    assert main(["--task", "text", "--predictions", str(predictions), "--out", str(tmp_path / "out")]) == 1
    assert f"{predictions}:2: not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_corrupt_image_names_the_file_and_keeps_finished_predictions(tmp_path, capsys):
    for name in ("a.png", "b.png"):
        text_image(name, 64).save(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"image": n, "target": n}) + "\n" for n in ("a.png", "b.png", "broken.png")))
    out = tmp_path / "out"
    code = main(["--task", "text", "--model", "tiny", "--data", str(manifest), "--batch-size", "1",
                 "--max-new-tokens", "4", "--out", str(out)])
    assert code == 1
    assert str(tmp_path / "broken.png") in capsys.readouterr().err
    kept = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [k["id"] for k in kept] == ["a.png", "b.png"] and not (out / "report.json").exists()


def test_real_pubtabnet_data_is_decoded_with_images_inline(tmp_path, data_dir):
    out = tmp_path / "out"
    source = data_dir / "pubtabnet" / "examples" / "PubTabNet_Examples.jsonl"
    code = main(["--task", "tables", "--model", "tiny", "--data", str(source), "--limit", "2",
                 "--max-new-tokens", "4", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    expected = docvlm.tasks.get("tables").read(source)[:2]
    assert [(r["id"], r["target"]) for r in report["rows"]] == [(s.id, s.target) for s in expected]
    assert report["rows"][0]["image"] == str(Path(expected[0].image).resolve())
    page = lxml_html.fromstring((out / "report.html").read_bytes())
    inputs = page.xpath("//div[@class='case']/div[1]//img/@src")
    assert len(inputs) == 2 and all(src.startswith("data:image/png;base64,") for src in inputs)


def test_molecule_predictions_are_drawn_when_they_parse(tmp_path):
    predictions = tmp_path / "preds.jsonl"
    rows = [{"id": "good", "target": "c1ccccc1O", "prediction": "Oc1ccccc1"},
            {"id": "bad", "target": "CCO", "prediction": "C1CC("}]
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert main(["--task", "molecules", "--predictions", str(predictions), "--out", str(tmp_path / "out")]) == 0
    page = lxml_html.fromstring((tmp_path / "out" / "report.html").read_bytes())
    cases = {c.xpath("string(.//h3)"): c for c in page.xpath("//div[@class='case']")}
    drawn = cases["good"].xpath("./div[3]//img/@src")
    assert len(drawn) == 1 and not cases["bad"].xpath("./div[3]//img")
    drawing = Image.open(io.BytesIO(base64.b64decode(drawn[0].split(",", 1)[1]))).convert("L")
    assert drawing.getextrema()[0] < 128  # bonds drawn in dark ink on white
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert report["main_metric"] == "canon_smiles" and report["rows"][0]["score"]["canon_smiles"] == 1.0


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_chromium_renders_report_without_running_model_output(tables_report, tmp_path):
    """The page's DOM after load is unchanged by model output, and no frame painted itself red."""
    out, _ = tables_report
    chromium = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
                "--virtual-time-budget=3000", "--window-size=1280,5000"]
    url = (out / "report.html").as_uri()
    dom = subprocess.run([*chromium, "--dump-dom", url], capture_output=True, text=True, timeout=60, check=True).stdout
    page = lxml_html.fromstring(dom)
    assert page.xpath("//body") and page.xpath("//body/@data-pwned") == []
    assert {s.get("id") for s in page.iter("section")} >= {"metrics", "distribution", "worst"}
    assert len(page.xpath("//iframe[@sandbox]")) == 8
    assert not page.xpath("//script")

    shot = tmp_path / "page.png"
    subprocess.run([*chromium, f"--screenshot={shot}", url], capture_output=True, timeout=60, check=True)
    pixels = Image.open(shot).convert("RGB")
    assert pixels.height >= 3000 and (255, 0, 0) not in {color for _, color in pixels.getcolors(1 << 24)}
