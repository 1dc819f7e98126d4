"""`docvlm convert --pipeline`: a row per page listing its regions, a folder of region files and a document per
input, resumes that rebuild documents from the pages' saved results, a bad page failing alone, shards and
`--devices 2` splitting by document, and a killed two-process run resumed with every page exactly once."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from docvlm.convert import main
from helpers import kill_two_processes_once_both_wrote
from pipeline_helpers import composed_page, image_pdf

DOCVLM = str(Path(sys.executable).parent / "docvlm")
FAST = ["--max-new-tokens", "3", "--num-workers", "0", "--export-workers", "1"]
BOOKKEEPING = {"manifest.jsonl", ".convert.lock", ".convert.run", "review.html"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two images and a two-page PDF of composed pages, their true regions in a regions file, and a pipeline."""
    root = tmp_path_factory.mktemp("corpus")
    inputs = root / "in"
    inputs.mkdir()
    pages = [composed_page(seed, kinds=("table", "text", "title", "molecule")) for seed in (3, 4, 5, 6)]
    rows = []
    for i, (image, regions) in enumerate(pages[:2]):
        image.save(inputs / f"scan{i}.png")
        rows.append({"input": str(inputs / f"scan{i}.png"), "page": None, "regions": regions})
    image_pdf(inputs / "paper.pdf", [pages[2][0], pages[3][0]])
    rows += [{"input": str(inputs / "paper.pdf"), "page": n, "regions": pages[n + 1][1]} for n in (1, 2)]
    lines = [json.dumps({**row, "regions": [{"label": r.label, "bbox": list(r.box), "score": score(r)}
                                            for r in row["regions"]]}) for row in rows]
    (root / "regions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "p.yaml").write_text("routes:\n  table: {model: tiny, task: tables}\n  text: {model: tiny, task: text}\n"
                                 "  molecule: {model: tiny, task: molecules}\n", encoding="utf-8")
    return root, rows


def score(region) -> float:
    """A confidence the regions file gives each region (its top edge)."""
    return round(region.box[1], 4)


def args(root: Path, out: Path, *more) -> list[str]:
    return ["--pipeline", str(root / "p.yaml"), "--regions", str(root / "regions.jsonl"), str(root / "in"),
            "--out", str(out), *FAST, *more]


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def assert_every_page_once_with_its_files(out: Path, expected: list[dict]) -> None:
    found = rows(out)
    assert sorted((Path(r["input"]).name, r["page"]) for r in found) == sorted(
        (Path(r["input"]).name, r["page"]) for r in expected)
    assert all(r["error"] is None for r in found)
    outputs = {o for r in found for o in r["outputs"]}
    assert all((out / o).is_file() for o in outputs)
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert files - BOOKKEEPING == outputs  # no file without its row, no leftovers


def test_each_page_gets_a_row_listing_its_regions_and_each_input_a_document(corpus, tmp_path):
    from docling_core.types.doc import ContentLayer, DoclingDocument

    root, expected = corpus
    assert main(args(root, tmp_path)) == 0
    assert_every_page_once_with_its_files(tmp_path, expected)
    by_page = {(Path(r["input"]).name, r["page"]): r for r in rows(tmp_path)}
    for truth in expected:
        row = by_page[(Path(truth["input"]).name, truth["page"])]
        assert [(r["label"], tuple(r["box"]), r["score"]) for r in row["regions"]] == [
            (r.label, r.box, score(r)) for r in truth["regions"]]
        for k, region in enumerate(row["regions"], 1):
            routed = region["label"] in ("table", "text", "molecule")
            assert (region["source"] == "model") == routed and bool(region["outputs"]) == routed
            assert all(o.startswith(f"{row['document']}/p{row['page'] or 1}-r{k}-{region['label']}.")
                       for o in region["outputs"])
        assert f"{row['id']}.png" in row["outputs"] and f"{row['id']}.page.json" in row["outputs"]
    assert sorted(r["document"] for r in rows(tmp_path)) == ["paper", "paper", "scan0", "scan1"]
    paper = DoclingDocument.load_from_json(tmp_path / "paper.docling.json")
    assert sorted(paper.pages) == [1, 2] and (tmp_path / "paper.md").is_file()
    items = [item for item, _ in paper.iterate_items(with_groups=False, included_content_layers=set(ContentLayer))]
    assert [item.prov[0].page_no for item in items] == [
        row["page"] for row in expected[2:] for _ in row["regions"]]  # one item per region, in the pages' order
    documents = [o for r in rows(tmp_path) for o in r["outputs"] if o.startswith("paper.")]
    assert sorted(documents) == ["paper.docling.json", "paper.md"]  # listed once, with the page that completed it
    review = (tmp_path / "review.html").read_text(encoding="utf-8")
    assert all(name in review for name in ("scan0.png", "scan1.png", "paper.pdf"))  # every page, to check


def test_a_resume_rebuilds_a_document_from_its_pages_saved_results(corpus, tmp_path):
    from docling_core.types.doc import DoclingDocument

    root, expected = corpus
    assert main(args(root, tmp_path)) == 0
    first = DoclingDocument.load_from_json(tmp_path / "paper.docling.json")
    (tmp_path / "paper.md").unlink()  # the page that completed the document is no longer done
    done = main(args(root, tmp_path, "--skip-existing"))
    assert done == 0
    assert_every_page_once_with_its_files(tmp_path, expected)
    again = DoclingDocument.load_from_json(tmp_path / "paper.docling.json")
    assert sorted(again.pages) == [1, 2]  # page 1 read back from its .page.json, not decoded again
    assert again.export_to_dict() == first.export_to_dict()  # the same document


def test_a_bad_region_fails_its_page_and_the_rest_goes_on(corpus, tmp_path):
    root, expected = corpus
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "p.yaml").write_bytes((root / "p.yaml").read_bytes())
    lines = (root / "regions.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    first["regions"][0]["bbox"] = [0.5, 0.5, 0.2, 0.9]
    (bad / "regions.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n", encoding="utf-8")
    (bad / "in").symlink_to(root / "in")
    out = tmp_path / "out"
    assert main(args(bad, out)) == 1
    found = {(Path(r["input"]).name, r["page"]): r for r in rows(out)}
    assert "regions.jsonl:1: region 1: `bbox` [0.5, 0.5, 0.2, 0.9] is empty or reversed" in found[("scan0.png", None)][
        "error"]
    assert all(r["error"] is None for key, r in found.items() if key != ("scan0.png", None)) and len(found) == 4


def test_a_broken_regions_file_or_pipeline_stops_before_anything_is_written(corpus, tmp_path, capsys):
    root, _ = corpus
    broken = tmp_path / "r.jsonl"
    broken.write_text('{"input": "a.png", "page": null, "regions": []}\n{oops\n', encoding="utf-8")
    code = main(["--pipeline", str(root / "p.yaml"), "--regions", str(broken), str(root / "in"),
                 "--out", str(tmp_path / "out")])
    assert code == 2 and f"{broken}:2: not a JSON row" in capsys.readouterr().err
    (tmp_path / "p.yaml").write_text("routes: {table: {model: tiny}}\n", encoding="utf-8")
    code = main(["--pipeline", str(tmp_path / "p.yaml"), str(root / "in"), "--out", str(tmp_path / "out")])
    assert code == 2 and "p.yaml: routes: table: " in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):
        main(["--pipeline", str(root / "p.yaml"), "--model", "tiny", str(root / "in"), "--out", str(tmp_path / "o")])
    assert "leave out --model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--model", "tiny", "--task", "text", "--regions", "r.jsonl", str(root / "in"), "--out", str(tmp_path)])
    assert "--regions: only with --pipeline" in capsys.readouterr().err


def convert(*arguments, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run([DOCVLM, "convert", *arguments], capture_output=True, text=True, timeout=600, env=env)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_shards_split_by_document(corpus, tmp_path):
    root, expected = corpus
    first = convert(*args(root, tmp_path, "--shard", "1/2"))
    convert(*args(root, tmp_path, "--shard", "2/2"))
    assert " converted (" in first.stdout
    assert_every_page_once_with_its_files(tmp_path, expected)
    assert {(r["document"]) for r in rows(tmp_path)} == {"paper", "scan0", "scan1"}


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_with_every_page_once(tmp_path):
    """Enough pages that the run cannot end between two looks at its manifest parts."""
    root = tmp_path / "corpus"
    (root / "in").mkdir(parents=True)
    lines = []
    for i in range(16):
        image, regions = composed_page(10 + i, kinds=("text",), width=224, max_regions=3)
        image.save(root / "in" / f"s{i:02d}.png")
        lines.append(json.dumps({"input": str(root / "in" / f"s{i:02d}.png"), "page": None,
                                 "regions": [{"label": r.label, "bbox": list(r.box)} for r in regions]}))
    (root / "regions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "p.yaml").write_text("routes:\n  text: {model: tiny, task: text}\n", encoding="utf-8")
    out = tmp_path / "out"
    slow = [*args(root, out), "--max-new-tokens", "40", "--no-repetition-guard", "--batch-size", "1", "--window", "1"]
    kill_two_processes_once_both_wrote(slow, out)
    done = convert(*slow, "--skip-existing", "--window", "8")
    skipped = int(done.stdout.split("failed, ")[1].split()[0])
    assert skipped >= 2
    expected = [{"input": str(root / "in" / f"s{i:02d}.png"), "page": None} for i in range(16)]
    assert_every_page_once_with_its_files(out, expected)
    assert not list(out.glob("manifest.part-*"))
    assert len(list(out.glob("*.docling.json"))) == 16


def test_a_label_from_a_regions_file_cannot_lead_a_file_name_elsewhere():
    from docvlm.pipeline.convert import _label

    assert _label("../../etc/passwd") == "_etc_passwd" and _label("section-header") == "section-header"
    assert _label("..") == "_" and len(_label("x" * 500)) == 40


def test_weights_that_do_not_load_stop_the_run_naming_the_model(corpus, tmp_path, capsys):
    root, _ = corpus
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}", encoding="utf-8")
    (broken / "model.safetensors").write_bytes(b"not weights")
    (tmp_path / "p.yaml").write_text(f"routes: {{table: {{model: {broken}, task: tables}}}}\n", encoding="utf-8")
    code = main(["--pipeline", str(tmp_path / "p.yaml"), "--regions", str(root / "regions.jsonl"), str(root / "in"),
                 "--out", str(tmp_path / "out"), *FAST])
    assert code == 2 and f"{tmp_path / 'p.yaml'}: {broken}: cannot load" in capsys.readouterr().err
    assert not list((tmp_path / "out").rglob("*.png"))  # no page written


def test_help_after_pipeline_prints_the_commands_help(capsys):
    assert main(["--pipeline", "--help"]) == 0  # argparse alone would take --help for the pipeline file
    assert "--regions" in capsys.readouterr().out
