"""`docvlm convert` end to end with the tiny model on the CPU: images, a folder, a 3-page PDF, page ranges,
the manifest, bad files isolated, resume after an interrupt, a domain task's files, and an export that
crashes its process (a real verovio segfault, and an abort) costing only its page."""

import json
import os
import resource
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

import docvlm.tasks
import docvlm.tasks.base
from docvlm import convert
from docvlm.convert import main
from docvlm.convert_manifest import RunManifest
from docvlm.export_worker import ExportWorker
from docvlm.inference import make_task, parse_scalar
from docvlm.pages import PageRangeError, expand, parse_page_range
from docvlm.tasks.text import TextTask

# Kept light at import (no torch, no lightning): the export child process imports this module to
# unpickle AbortOnSecondPage.

FAST = ["--model", "tiny", "--device", "cpu", "--max-new-tokens", "4", "--num-workers", "0"]
ROW_KEYS = {"input", "page", "prefix", "id", "task", "outputs", "problems", "error", "text", "model"}
# verovio 6.4 segfaults on a spine addition (`*+`) not followed by an exclusive interpretation, although
# the kern checker now reads the addition as a null interpretation (a listed problem); a well-formed excerpt renders.
VEROVIO_CRASH = "**kern\t**kern\n*+\t*\n4c\t4e\t4g\n*-\t*-\t*-\n"
GOOD_KERN = "**kern\t**kern\n*clefF4\t*clefG2\n*M4/4\t*M4/4\n4C\t4c\n4D\t4d\n=\t=\n*-\t*-\n"


class AbortOnSecondPage(TextTask):
    """The text task, except that exporting a second page kills the process as a C++ terminate would."""

    name = "test-abort-on-p2"

    def export(self, parsed, stem):
        if str(stem).endswith("-p2"):
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            os.abort()
        return super().export(parsed, stem)


def text_image(text: str, size: int) -> Image.Image:
    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).text((size // 10, size // 3), text, fill="black", font_size=size // 8)
    return image


def make_pdf(path: Path, pages: int) -> Path:
    images = [text_image(f"page {i + 1}", 160).resize((240, 160)) for i in range(pages)]
    images[0].save(path, "PDF", save_all=True, append_images=images[1:], resolution=72)
    return path


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    """a.png, folder/{a.png, b.jpg, nested/c.png, notes.txt}, doc.pdf (3 pages), bad.png, truncated.pdf."""
    root = tmp_path_factory.mktemp("docs")
    (root / "folder" / "nested").mkdir(parents=True)
    text_image("alpha", 120).save(root / "a.png")
    text_image("same name", 120).save(root / "folder" / "a.png")
    text_image("beta", 120).save(root / "folder" / "b.jpg")
    text_image("gamma", 120).save(root / "folder" / "nested" / "c.png")
    (root / "folder" / "notes.txt").write_text("not an image")
    make_pdf(root / "doc.pdf", 3)
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (root / "truncated.pdf").write_bytes((root / "doc.pdf").read_bytes()[:600])
    return root


def rows_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def by_id(rows: list[dict]) -> dict[str, dict]:
    return {r["id"]: r for r in rows if r["id"] is not None}


def mtimes(out: Path) -> dict[str, int]:
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def text_run(docs, tmp_path_factory):
    out = tmp_path_factory.mktemp("text-out")
    inputs = [docs / "a.png", docs / "folder", docs / "doc.pdf", docs / "bad.png", docs / "truncated.pdf",
              docs / "missing.png"]
    code = main(["--task", "text", *FAST, "--batch-size", "3", *map(str, inputs), "--out", str(out)])
    return code, out, rows_of(out)


def test_every_page_of_images_folders_and_pdfs_is_converted(text_run, docs):
    code, out, rows = text_run
    assert all(set(r) == ROW_KEYS for r in rows)
    good = {r["id"]: r for r in rows if r["error"] is None}
    # same-named files in different folders get different names; folders keep their sub-folders
    assert set(good) == {"a", "a-2", "b", "nested/c", "doc-p1", "doc-p2", "doc-p3"}
    assert good["a"]["input"] == str(docs / "a.png") and good["a-2"]["input"] == str(docs / "folder" / "a.png")
    assert [good[f"doc-p{n}"]["page"] for n in (1, 2, 3)] == [1, 2, 3] and good["b"]["page"] is None
    for row in good.values():
        assert row["task"] == "text" and row["outputs"] == [f"{row['id']}.txt"]
        assert (out / row["outputs"][0]).read_text(encoding="utf-8") == row["text"]
    assert not any("notes" in r["input"] for r in rows)


def test_bad_files_give_error_rows_naming_them_and_a_failing_exit_code(text_run, docs):
    code, out, rows = text_run
    assert code == 1
    errors = {Path(r["input"]).name: r for r in rows if r["error"] is not None}
    assert set(errors) == {"bad.png", "truncated.pdf", "missing.png"}
    assert str(docs / "bad.png") in errors["bad.png"]["error"]
    assert str(docs / "truncated.pdf") in errors["truncated.pdf"]["error"]
    assert "cannot open PDF" in errors["truncated.pdf"]["error"]
    assert "no such file" in errors["missing.png"]["error"]
    assert all(r["outputs"] == [] for r in errors.values())
    assert len(rows) == 10  # one row per page or failed input, nothing twice


def test_page_ranges_select_pdf_pages(docs, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["--task", "text", *FAST, str(docs / "doc.pdf"), str(docs / "a.png"), "--pages", "1,3-5",
                 "--out", str(out)])
    assert code == 0
    assert sorted(by_id(rows_of(out))) == ["a", "doc-p1", "doc-p3"]  # single images ignore --pages
    assert "page(s) 4-5 of --pages 1,3-5 do not exist" in capsys.readouterr().err


def test_page_range_parsing():
    assert parse_page_range("1-3,7").select(10) == [1, 2, 3, 7]
    assert parse_page_range(" 2- , 1").select(4) == [1, 2, 3, 4]
    assert parse_page_range("3,1-2,2").select(2) == [1, 2]
    assert parse_page_range("2-4,9").missing(3) == [4, 9]
    assert parse_page_range("5-").missing(3) == [5]
    for bad, message in [("0", "numbered from 1"), ("3-1", "runs backwards"), ("a", "not a page"),
                         ("1,,2", "empty"), ("", "empty"), ("1-2-3", "not a page")]:
        with pytest.raises(PageRangeError, match=message):
            parse_page_range(bad)


@pytest.mark.parametrize("pages,message", [("3-1", "runs backwards"), ("0", "numbered from 1"), ("x", "not a page")])
def test_bad_pages_option_is_a_clear_usage_error(docs, tmp_path, capsys, pages, message):
    with pytest.raises(SystemExit) as exit_:
        main(["--task", "text", *FAST, str(docs / "doc.pdf"), "--pages", pages, "--out", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--pages" in err and message in err


def test_interrupted_run_keeps_its_work_and_skip_existing_does_only_the_rest(docs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = ["--task", "text", *FAST, "--batch-size", "2", str(docs / "a.png"), str(docs / "doc.pdf"), "--out", str(out)]
    real_finish, calls = convert._finish, []

    def interrupt_on_third_page(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_finish(*a, **k)

    monkeypatch.setattr(convert, "_finish", interrupt_on_third_page)
    assert main(args) == 130
    first = rows_of(out)
    # the pages placed before Ctrl-C are recorded, and doc-p3 if its export had finished meanwhile (a race
    # with the export worker); the interrupted page is not
    ids = [r["id"] for r in first]
    assert {"a", "doc-p1"} <= set(ids) <= {"a", "doc-p1", "doc-p3"} and len(set(ids)) == len(ids), ids
    before = mtimes(out)
    monkeypatch.setattr(convert, "_finish", real_finish)

    with (out / "manifest.jsonl").open("a") as f:
        f.write('{"input": "/cut/by/a/kill", "pa')  # a write cut short by a kill
    assert main([*args, "--skip-existing"]) == 0
    rows = rows_of(out)
    assert sorted(r["id"] for r in rows) == ["a", "doc-p1", "doc-p2", "doc-p3"]  # each page once, the cut line gone
    assert rows[:len(first)] == first
    after = mtimes(out)
    assert {k: after[k] for k in ("a.txt", "doc-p1.txt")} == {k: before[k] for k in ("a.txt", "doc-p1.txt")}

    # all done: nothing is decoded (the model is not even loaded), nothing is written
    monkeypatch.setattr("docvlm.model.load", lambda spec: pytest.fail("the model was loaded"))
    manifest = (out / "manifest.jsonl").read_bytes()
    assert main([*args, "--skip-existing"]) == 0
    assert (out / "manifest.jsonl").read_bytes() == manifest and mtimes(out) == after


def test_skip_existing_redoes_a_page_whose_file_is_gone_and_a_fixed_input(docs, tmp_path):
    out, folder = tmp_path / "out", tmp_path / "in"
    folder.mkdir()
    shutil.copy(docs / "doc.pdf", folder / "doc.pdf")
    shutil.copy(docs / "truncated.pdf", folder / "later.pdf")
    args = ["--task", "text", *FAST, str(folder), "--out", str(out), "--skip-existing"]
    assert main(args) == 1
    assert [(r["id"], r["error"] is None) for r in rows_of(out)] == [
        (None, False), ("doc-p1", True), ("doc-p2", True), ("doc-p3", True)]
    before = mtimes(out)

    (out / "doc-p2.txt").unlink()
    make_pdf(folder / "later.pdf", 1)  # the broken file is replaced by a good one
    assert main(args) == 0
    rows = rows_of(out)
    assert sorted(r["id"] for r in rows) == ["doc-p1", "doc-p2", "doc-p3", "later-p1"]  # error row replaced
    assert all(r["error"] is None for r in rows)
    after = mtimes(out)
    assert after["doc-p1.txt"] == before["doc-p1.txt"] and after["doc-p3.txt"] == before["doc-p3.txt"]
    assert (out / "doc-p2.txt").is_file() and (out / "later-p1.txt").is_file()


TABLE = "<table><tr><td>7</td><td>x</td></tr></table>"


@pytest.fixture(scope="module")
def table_model(tmp_path_factory) -> Path:
    """A tiny model (224 px) trained to answer every image with TABLE, saved in Hugging Face format."""
    import torch

    from docvlm.decode import Decoding, generate
    from docvlm.model import build_tiny
    from helpers import make_batch

    model, processor = build_tiny(image_size=224, patch_size=28)
    processor.tokenizer.padding_side = "left"
    batch = make_batch(processor, ["table html"] * 2, [TABLE] * 2)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "pixel_values", "labels")}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for step in range(300):
        model.train()
        model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 20 == 19:
            model.eval()
            generated = generate(model, processor, make_batch(processor, ["table html"]), Decoding(), 60)
            if [g.text for g in generated] == [TABLE]:
                break
    else:
        pytest.fail("the tiny model did not learn the table")
    folder = tmp_path_factory.mktemp("table-model")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_tables_task_writes_html_csv_markdown_json_per_page(docs, table_model, tmp_path):
    out = tmp_path / "out"
    code = main(["--task", "tables", "--model", str(table_model), "--device", "cpu", "--max-new-tokens", "60",
                 str(docs / "doc.pdf"), str(docs / "folder" / "b.jpg"), "--out", str(out)])
    assert code == 0
    rows = by_id(rows_of(out))
    assert sorted(rows) == ["b", "doc-p1", "doc-p2", "doc-p3"]
    for stem, row in rows.items():
        assert row["outputs"] == [f"{stem}.html", f"{stem}.csv", f"{stem}.md", f"{stem}.json"]
        assert all((out / p).is_file() for p in row["outputs"]) and row["problems"] == []
        assert "<td>7</td><td>x</td>" in (out / f"{stem}.html").read_text(encoding="utf-8")
        assert (out / f"{stem}.csv").read_text(encoding="utf-8").strip() == "7,x"


@pytest.mark.slow
def test_an_export_that_aborts_the_process_costs_only_its_page(docs, tmp_path, monkeypatch):
    monkeypatch.setitem(docvlm.tasks.base._REGISTRY, AbortOnSecondPage.name, AbortOnSecondPage)
    out = tmp_path / "out"
    code = main(["--task", AbortOnSecondPage.name, *FAST, str(docs / "doc.pdf"), "--out", str(out)])
    assert code == 1
    rows = by_id(rows_of(out))
    assert rows["doc-p1"]["error"] is None and rows["doc-p3"]["error"] is None
    assert (out / "doc-p1.txt").is_file() and (out / "doc-p3.txt").is_file()
    error = rows["doc-p2"]["error"]
    assert error.startswith(f"{docs / 'doc.pdf'}, page 2: the export process crashed") and "SIGABRT" in error
    assert rows["doc-p2"]["text"] is not None  # the prediction is kept even though its export failed


@pytest.fixture
def no_core_dumps():
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    yield
    resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))


def test_music_pages_around_a_repaired_crash_sample_all_export(tmp_path, no_core_dumps):
    """The `*+` sample that segfaults verovio is repaired by the music task (the addition is listed
    as a problem), so every page exports; containment of a real crash is tested with `os.abort` above."""
    worker = ExportWorker(docvlm.tasks.get("music"), timeout=120)
    try:
        results = [worker.export(text, tmp_path / f"s{i}")
                   for i, text in enumerate([GOOD_KERN, VEROVIO_CRASH, GOOD_KERN])]
    finally:
        worker.close()
    for paths, problems in results:
        assert [Path(p).suffix for p in paths] == [".krn", ".musicxml", ".mid", ".svg", ".png"]
        assert all(Path(p).is_file() for p in paths)
    assert results[0][1] == [] and results[2][1] == []
    assert any("*+ is not supported" in p for p in results[1][1])


def test_task_options_are_yaml_scalars_and_bad_ones_are_named(docs, tmp_path, capsys):
    assert parse_scalar("512") == 512 and parse_scalar("true") is True
    assert parse_scalar("bekern") == "bekern" and parse_scalar("a: b") == "a: b"
    task = make_task("music", {"encoding": "bekern", "max_target_tokens": 64})
    assert (task.encoding, task.max_target_tokens) == ("bekern", 64)
    with pytest.raises(SystemExit) as exit_:
        main(["--task", "music", *FAST, str(docs / "a.png"), "--task-option", "colour=red", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "task 'music' has no option 'colour'" in capsys.readouterr().err


def test_expand_multipage_tiff_and_output_folder_inside_input(tmp_path):
    frames = [text_image(str(i), 64) for i in range(3)]
    frames[0].save(tmp_path / "scan.v2.tif", save_all=True, append_images=frames[1:])
    (tmp_path / "out").mkdir()
    text_image("old output", 64).save(tmp_path / "out" / "old.png")
    pages, errors, _ = expand([tmp_path], parse_page_range("2-"), exclude=tmp_path / "out")
    assert errors == []
    assert [(p.name, p.page, p.kind) for p in pages] == [("scan_v2-p2", 2, "tiff"), ("scan_v2-p3", 3, "tiff")]
    assert pages[1].load().size == (64, 64)
    _, errors, _ = expand([tmp_path / "out" / "nothing"])
    assert "no such file or folder" in errors[0].error
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "folder has no images or PDFs" in expand([empty])[1][0].error


def test_a_second_run_on_the_same_output_folder_is_refused(docs, tmp_path, capsys):
    held = RunManifest(tmp_path)  # as a running convert holds its part of the manifest
    assert held.open()
    try:
        assert main(["--task", "text", *FAST, str(docs / "a.png"), "--out", str(tmp_path)]) == 2
        assert "another docvlm convert is writing to this folder" in capsys.readouterr().err
    finally:
        held.close()
    assert main(["--task", "text", *FAST, str(docs / "a.png"), "--out", str(tmp_path)]) == 0  # released


def test_one_image_with_different_prompts_in_a_manifest_is_converted_once_per_prompt(docs, tmp_path, capsys):
    listed = tmp_path / "studies.jsonl"
    prompts = ["INDICATION: cough.", "INDICATION: fever.", "INDICATION: cough.", ""]  # the 3rd repeats the 1st
    listed.write_text("".join(json.dumps({"image": str(docs / "a.png"), "prefix": p}) + "\n" for p in prompts))
    args = ["--task", "text", *FAST, str(listed), "--out", str(tmp_path / "out")]
    assert main(args) == 0
    rows = rows_of(tmp_path / "out")
    assert sorted((r["prefix"], r["id"]) for r in rows) == [
        ("", "a-3"), ("INDICATION: cough.", "a"), ("INDICATION: fever.", "a-2")]
    assert all((tmp_path / "out" / r["outputs"][0]).is_file() for r in rows)
    capsys.readouterr()
    assert main([*args, "--skip-existing"]) == 0  # each prompt's row is its own page when resuming
    assert "3 skipped as done" in capsys.readouterr().out


def test_resuming_with_another_model_of_the_same_task_warns_that_the_rows_differ(docs, tmp_path, capsys):
    from docvlm.model import build_tiny

    other = tmp_path / "other-model"  # another model, the same task (it names none: --task text)
    model, processor = build_tiny(image_size=896, patch_size=56, seed=1)
    model.save_pretrained(other)
    processor.save_pretrained(other)
    inputs = [str(docs / "a.png"), str(docs / "doc.pdf"), "--out", str(tmp_path / "out")]
    assert main(["--task", "text", *FAST, *inputs]) == 0
    assert {r["model"] for r in rows_of(tmp_path / "out")} == {"tiny"}
    capsys.readouterr()

    resumed = ["--task", "text", *FAST[2:], "--model", str(other), *inputs, "--skip-existing"]
    assert main(resumed) == 0
    err = capsys.readouterr().err
    assert (f"--skip-existing: 4 pages skipped as done were converted by another model (tiny), not {other}"
            in err), err
    assert main(resumed) == 0 and "another model" in capsys.readouterr().err  # the rows still say tiny
    assert main([*resumed[:-1]]) == 0 and "another model" not in capsys.readouterr().err  # all redone
    assert {r["model"] for r in rows_of(tmp_path / "out")} == {str(other)}
