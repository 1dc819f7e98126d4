"""`docvlm convert --pipeline` attacked as `test_adversarial_convert` attacks the plain convert: crafted pipeline
and regions files, special files in their place, hostile model output in the documents and the review, crafted
bookkeeping in `--out` (manifest rows, saved page results, planted links), odd inputs and SIGTERM: no traceback,
no hang, nothing written outside `--out`, no input modified, every input accounted for."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from docvlm.convert import main
from docvlm.pipeline.regions_file import MAX_REGIONS, RegionsFileError, read_regions
from docvlm.pipeline.spec import PipelineSpecError, read_spec
from pipeline_helpers import composed_page, image_pdf

DOCVLM = str(Path(sys.executable).parent / "docvlm")
FAST = ["--max-new-tokens", "3", "--num-workers", "0", "--export-workers", "1"]
ROUTES = "routes:\n  table: {model: tiny, task: tables}\n  text: {model: tiny, task: text}\n"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def regions_row(input_, page, regions) -> str:
    return json.dumps({"input": str(input_), "page": page,
                       "regions": [{"label": r.label, "bbox": list(r.box)} for r in regions]})


@pytest.fixture
def job(tmp_path):
    """Two composed images and a two-page PDF, their regions in a regions file, a pipeline of tiny routes."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    pages = [composed_page(seed, width=224) for seed in (3, 4)]
    for name, (image, _) in zip(("a.png", "b.png"), pages):
        image.save(inputs / name)
    image_pdf(inputs / "d.pdf", [image for image, _ in pages])
    lines = [regions_row(inputs / name, None, regions) for name, (_, regions) in zip(("a.png", "b.png"), pages)]
    lines += [regions_row(inputs / "d.pdf", n, pages[n - 1][1]) for n in (1, 2)]
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "p.yaml").write_text(ROUTES, encoding="utf-8")
    return tmp_path


def args(root: Path, *inputs) -> list[str]:
    return ["--pipeline", str(root / "p.yaml"), "--regions", str(root / "r.jsonl"),
            *(str(i) for i in (inputs or [root / "in"])), "--out", str(root / "out"), *FAST]


# ---- pipeline files --------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("- a\n", "expected a mapping"),
    ("routes: {text: {model: tiny, task: text}}\nextra: 1\n", "unknown key 'extra'"),
    (ROUTES + "  table: {model: tiny, task: text}\n", "'table' is given twice"),  # PyYAML kept the last
    ("routes: {text: {model: tiny, task: text}}\nroutes: {}\n", "'routes' is given twice"),
    ('routes: {"a\\0b": {model: tiny, task: text}}\n', "is not a region label"),
    ('routes: {"a\\ud800": {model: tiny, task: text}}\n', "is not a region label"),
    ("routes: {text: {model: tiny, task: nope}}\n", "task 'nope' is not one of"),
    ("routes: !!python/object/apply:os.system ['true']\n", "not YAML"),
])
def test_a_crafted_pipeline_file_is_refused_in_one_line_naming_it(tmp_path, text, message):
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PipelineSpecError, match=message) as caught:
        read_spec(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


def test_a_yaml_bomb_is_read_as_references_and_refused(tmp_path):
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    path = tmp_path / "p.yaml"
    path.write_text(f"routes:\n  {laughs.replace(chr(10), chr(10) + '  ')}\n", encoding="utf-8")
    with pytest.raises(PipelineSpecError, match="routes: a: expected"):
        read_spec(path)


@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
@pytest.mark.parametrize("reader, error", [(read_spec, PipelineSpecError), (read_regions, RegionsFileError)])
def test_a_special_file_in_place_of_the_pipeline_or_regions_file_is_never_read(tmp_path, kind, reader, error):
    path = tmp_path / "given.jsonl"
    if kind == "fifo":
        os.mkfifo(path)  # reading it would block for ever
    elif kind == "folder":
        path.mkdir()
    else:
        os.symlink("/dev/zero", path)  # reading it would fill the memory
    with pytest.raises(error, match=f"{path}: a (FIFO|folder|character device), not a regular file"):
        reader(path)


def test_labels_with_slashes_and_dots_name_no_file_outside_their_document(job):
    (job / "p.yaml").write_text("routes:\n  '../../x/..': {model: tiny, task: text}\n", encoding="utf-8")
    image, regions = composed_page(5, width=224)
    image.save(job / "in" / "a.png")
    line = json.dumps({"input": str(job / "in" / "a.png"), "page": None,
                       "regions": [{"label": "../../x/..", "bbox": list(regions[0].box)}]})
    (job / "r.jsonl").write_text(line + "\n", encoding="utf-8")
    assert main(args(job, job / "in" / "a.png")) == 0
    (row,) = rows(job / "out")
    assert row["regions"][0]["label"] == "../../x/.." and row["regions"][0]["outputs"] == ["a/p1-r1-_x_.txt"]
    assert sorted(p.name for p in job.iterdir()) == ["in", "out", "p.yaml", "r.jsonl"]


@pytest.fixture(scope="module")
def text_model(tmp_path_factory) -> Path:
    """A tiny model folder as `docvlm fit` exports one, trained (its docvlm.json says) for `text`."""
    from docvlm import describe, tasks
    from docvlm.decode import Decoding
    from docvlm.model import build_tiny

    folder = tmp_path_factory.mktemp("models") / "hf"
    model, processor = build_tiny(image_size=56, patch_size=28)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    describe.write(folder, describe.description(tasks.get("text"), 56, Decoding(max_new_tokens=4)))
    return folder


def test_a_route_whose_task_contradicts_its_model_is_refused_before_any_work(job, text_model, capsys):
    (job / "p.yaml").write_text(f"routes:\n  table: {{model: {text_model}, task: tables}}\n", encoding="utf-8")
    assert main(args(job)) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.endswith(f"{job / 'p.yaml'}: routes: table: the model was trained for task 'text', not 'tables'")
    assert not (job / "out").exists()


def test_a_route_to_a_model_asking_to_run_its_own_code_never_runs_it(job, capsys):
    from test_adversarial_fit import code_asking_model

    code_asking_model(job / "evil", job / "ran")
    (job / "p.yaml").write_text(f"routes:\n  table: {{model: {job / 'evil'}, task: tables}}\n", encoding="utf-8")
    assert main(args(job)) == 2
    assert not (job / "ran").exists()  # the folder's Python was never imported
    assert "docvlm never runs a model's own code" in capsys.readouterr().err


# ---- regions files ---------------------------------------------------------------------------------------
def big_page(n: int) -> list[dict]:
    return [{"label": "text", "bbox": [0.1, 0.1, 0.2, 0.2]}] * n


@pytest.mark.parametrize("regions, message", [
    ([{"label": "table", "bbox": [0, 0, 10**400, 1]}], "is not finite"),  # an integer past a float: no traceback
    ([{"label": "table", "bbox": [0, 0, 1, 1], "score": 10**400}], "must be a finite number, not an int (401 ch"),
    ([{"label": "t\ud800", "bbox": [0, 0, 1, 1]}], "`label` must name the region's class"),
    ([{"label": "ta\0ble", "bbox": [0, 0, 1, 1]}], "`label` must name the region's class"),
    ([{"label": "table", "bbox": [0, 0, 1, 1], "content": "\udfff"}], "`content` must be the region's text"),
    ([{"label": "table", "bbox": [float("nan"), 0, 1, 1]}], "is not finite"),
    ([{"label": "table", "bbox": [0.5, 0.5, 0.5, 0.6]}], "is empty or reversed"),
    ([{"label": 7, "bbox": [0, 0, 1, 1]}], "`label` must name"),
    (big_page(MAX_REGIONS + 1), f"{MAX_REGIONS + 1} regions on one page; at most {MAX_REGIONS}"),
])
def test_a_region_that_cannot_be_used_fails_its_page_naming_the_file_and_line(tmp_path, regions, message):
    path = tmp_path / "r.jsonl"
    good = json.dumps({"input": "good.png", "page": None, "regions": big_page(MAX_REGIONS)})
    path.write_text(good + "\n" + json.dumps({"input": "x.png", "page": None, "regions": regions}) + "\n",
                    encoding="utf-8")
    given = read_regions(path)
    bad = given.lookup("x.png", None)
    assert bad.error.startswith(f"{path}:2: region") or bad.error.startswith(f"{path}:2: {MAX_REGIONS + 1}")
    assert message in bad.error and "\n" not in bad.error
    assert given.lookup("good.png", None).error is None  # the other pages go on


def test_a_coco_file_with_sizes_past_a_float_gives_its_image_an_error(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({
        "categories": [{"id": 1, "name": "table"}],
        "images": [{"id": 1, "file_name": "../x.png", "width": 10**400, "height": 10},
                   {"id": 2, "file_name": "y.png", "width": 10, "height": 10}],
        "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]},
                        {"image_id": 2, "category_id": 1, "bbox": [0, 0, 10**400, 1]}]}), encoding="utf-8")
    given = read_regions(path)
    assert "`width` and `height` must be positive numbers" in given.lookup(tmp_path.parent / "x.png", None).error
    assert "region 1: `bbox`" in given.lookup(tmp_path / "y.png", None).error


# ---- crafted bookkeeping in --out ------------------------------------------------------------------------
def test_crafted_manifest_rows_break_neither_the_merge_nor_the_review(job, capsys):
    out = job / "out"
    assert main(args(job)) == 0
    crafted = rows(out)
    crafted[0]["regions"][0].update(text=5, score="low", label=7, problems="abc")  # the review leaves it out
    crafted[1]["regions"][0].update(text="<script>alert(1)</script>")
    crafted[2]["error"] = 3  # a failed page: converted again
    crafted[3]["regions"][0].update(text="\ud800")  # UTF-8 cannot hold it: ignored, the page converted again
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in crafted), encoding="utf-8")
    capsys.readouterr()
    assert main([*args(job), "--skip-existing"]) == 0
    printed = capsys.readouterr()
    assert "manifest.jsonl:4: not a manifest row of this folder" in printed.err
    assert "2 pages converted" in printed.out and "2 skipped as done" in printed.out
    review = (out / "review.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)" in review and "<script" not in review


@pytest.mark.parametrize("change", [
    {"text": 5}, {"text": "\ud800"}, {"label": 7}, {"box": "wide"}, {"surprise": 1},
])
def test_a_crafted_saved_page_is_left_out_of_its_document_which_says_so(job, change):
    out = job / "out"
    pdf = job / "in" / "d.pdf"
    assert main([*args(job, pdf), "--pages", "1"]) == 0
    (row,) = rows(out)
    saved = out / next(o for o in row["outputs"] if o.endswith(".page.json"))
    data = json.loads(saved.read_text(encoding="utf-8"))
    data["regions"][0].update(change)
    saved.write_text(json.dumps(data), encoding="utf-8")
    assert main([*args(job, pdf), "--skip-existing"]) == 0
    second = [r for r in rows(out) if r["page"] == 2][0]
    assert second["error"] is None and "document: 1 of its 2 pages failed and are left out" in second["problems"]
    from docling_core.types.doc import DoclingDocument

    doc = DoclingDocument.load_from_json(out / "d.docling.json")
    assert list(doc.pages) == [2]


def test_planted_links_in_out_are_replaced_or_refused_never_followed(job):
    out, victim = job / "out", job / "victim"
    out.mkdir()
    victim.mkdir()
    (victim / "v.txt").write_text("keep", encoding="utf-8")
    for name in ("a.docling.json", "a.md", "review.html"):
        os.symlink(victim / "v.txt", out / name)
    (out / "a").mkdir()
    os.symlink(victim / "v.txt", out / "a" / "p1.png")
    os.symlink(victim, out / "b")  # a page's document folder leading outside
    assert main(args(job, job / "in" / "a.png", job / "in" / "b.png")) == 1
    assert sorted(os.listdir(victim)) == ["v.txt"] and (victim / "v.txt").read_text(encoding="utf-8") == "keep"
    by_name = {Path(r["input"]).name: r for r in rows(out)}
    assert "leads outside --out" in by_name["b.png"]["error"]
    assert by_name["a.png"]["error"] is None and "a.docling.json" in by_name["a.png"]["outputs"]
    assert not any((out / name).is_symlink() for name in ("a.docling.json", "a.md", "review.html", "a/p1.png"))


# ---- hostile model output --------------------------------------------------------------------------------
HOSTILE = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "</pre><script>x</script>",
           "\x00\x01\x1b[31m\x7f", "\u202e\ufeff", "# heading\n|a|b|\n---", "x" * 200_000]


@pytest.mark.parametrize("task, label", [("text", "text"), ("tables", "table"), ("music", "music"),
                                         ("molecules", "molecule"), (None, "caption")])
def test_hostile_output_saves_a_document_that_reads_back_and_an_inert_review(tmp_path, task, label):
    from docling_core.types.doc import DoclingDocument

    import docvlm.tasks
    from docvlm.pipeline.document import write_document
    from docvlm.pipeline.results import PageResult, RegionResult
    from docvlm.pipeline.review import write_review

    regions = [RegionResult(label, (0.1, 0.1 * k, 0.5, 0.1 * k + 0.05), 0.5, task, text,
                            docvlm.tasks.get(task).parse(text).value if task else text, "model", [text], [text])
               for k, text in enumerate(HOSTILE)]
    page = PageResult("<b>x</b>.png", None, 100, 100, regions=regions, problems=["<script>p</script>"])
    json_path, md_path = write_document(tmp_path, "d", [page])
    doc = DoclingDocument.load_from_json(json_path)
    assert len([*doc.texts, *doc.tables, *doc.pictures]) == len(HOSTILE)  # one item per region
    assert "<script" not in md_path.read_text(encoding="utf-8")
    review = write_review(tmp_path / "review.html", [(page, None)]).read_text(encoding="utf-8")
    assert "<script" not in review and "<img src=x" not in review and "<b>x" not in review


# ---- odd inputs, interruption ----------------------------------------------------------------------------
def test_odd_images_and_pdfs_each_get_their_row_and_nothing_outside_out_changes(tmp_path):
    from PIL import Image

    from test_adversarial_fit import checksums, make_corpus

    make_corpus(tmp_path)
    corpus = tmp_path / "corpus"
    Image.new("RGB", (1, 1), "white").save(corpus / "one.png")
    image_pdf(corpus / "two.pdf", [composed_page(3, width=224)[0], Image.new("RGB", (3, 2000), "white")])
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n")
    (tmp_path / "p.yaml").write_text("layout: {model: tiny, task: layout}\n" + ROUTES, encoding="utf-8")
    before, around = checksums(corpus), listing(tmp_path)
    out = tmp_path / "out"
    code = main(["--pipeline", str(tmp_path / "p.yaml"), str(corpus), str(corpus / "fifo.png"), "--out", str(out),
                 *FAST])
    assert code == 1
    found = {(Path(r["input"]).name, r["page"]): r for r in rows(out)}
    files = {p.name for p in corpus.iterdir() if p.suffix in (".png", ".tif", ".gif", ".pdf") and not p.is_dir()}
    assert files <= {name for name, _ in found}  # every file, special ones included, has its row
    for name in ("fifo.png", "bomb.png", "truncated.png", "empty.png", "device.png", "broken.pdf"):
        assert found[(name, None)]["error"] and str(corpus / name) in found[(name, None)]["error"], name
    for key in (("grey16.png", None), ("cmyk.tif", None), ("onebit.png", None), ("palette.gif", None),
                ("la.png", None), ("one.png", None), ("two.pdf", 1), ("two.pdf", 2)):
        assert found[key]["error"] is None and any(o.endswith(".page.json") for o in found[key]["outputs"]), key
    assert checksums(corpus) == before and listing(tmp_path) - {"out"} - listing(out, tmp_path) == around


def listing(folder: Path, root: Path | None = None) -> set[str]:
    return {p.relative_to(root or folder).as_posix() for p in folder.rglob("*")}


@pytest.mark.slow
def test_sigterm_keeps_the_finished_pages_and_a_resume_converts_each_page_once(job):
    inputs = job / "in"
    for n in range(6):
        composed_page(10 + n, width=224)[0].save(inputs / f"x{n}.png")
    lines = (job / "r.jsonl").read_text(encoding="utf-8")
    lines += "".join(regions_row(inputs / f"x{n}.png", None, composed_page(10 + n, width=224)[1]) + "\n"
                     for n in range(6))
    (job / "r.jsonl").write_text(lines, encoding="utf-8")
    command = [DOCVLM, "convert", *args(job), "--window", "1", "--batch-size", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                               start_new_session=True)
    part = job / "out" / "manifest.part-1-of-1.jsonl"
    while not (part.is_file() and part.read_text(encoding="utf-8").strip()):
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143 and "Traceback" not in stderr and "terminated (SIGTERM)" in stderr, stderr
    first = rows(job / "out")
    assert first and all(r["error"] is None and all((job / "out" / o).is_file() for o in r["outputs"]) for r in first)
    done = subprocess.run([*command, "--skip-existing"], capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0 and f"{len(first)} skipped as done" in done.stdout, done.stderr[-3000:]
    found = rows(job / "out")
    assert sorted((Path(r["input"]).name, r["page"]) for r in found) == sorted(
        [(f"x{n}.png", None) for n in range(6)] + [("a.png", None), ("b.png", None), ("d.pdf", 1), ("d.pdf", 2)])
    assert all((job / "out" / f"{name}.docling.json").is_file() for name in ("a", "b", "d", "x0", "x5"))


def test_a_document_is_never_named_as_the_region_files_of_another():
    """`in/a/p1-r1-table.png` beside `in/a.png`: its Markdown `a/p1-r1-table.md` would replace the Markdown of
    `a.png`'s first region's table."""
    from docvlm.pages import Page
    from docvlm.pipeline.convert import document_names

    pages = [Page(Path("in/a.png"), None, "image", "a"), Page(Path("in/a/p1-r1-table.png"), None, "image",
                                                             "a/p1-r1-table"),
             Page(Path("in/P2-R3-x.pdf"), 1, "pdf", "P2-R3-x-p1"), Page(Path("in/p1.png"), None, "image", "p1")]
    assert list(document_names(pages, {}).values()) == ["a", "a/_p1-r1-table", "_P2-R3-x", "p1"]


@pytest.mark.parametrize("which", ["p.yaml", "r.jsonl"])
def test_a_pipeline_or_regions_file_inside_out_is_refused_before_any_work(job, which, capsys):
    """`--regions out/a.md` would be replaced by the document of `a.png`."""
    out = job / "out"
    out.mkdir()
    (job / which).rename(out / which)
    given = [str(out / which) if part == str(job / which) else part for part in args(job)]
    assert main(given) == 2
    assert f"contains the input {out / which}: outputs could overwrite inputs" in capsys.readouterr().err
    assert os.listdir(out) == [which]
