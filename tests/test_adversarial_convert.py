"""`docvlm convert` and `docvlm evaluate`, through the console script, on the hostile corpus of
`test_adversarial_fit` (every image mode, special files, bombs, corrupt files) and on crafted output
folders, manifests and predictions: no traceback, no hang, nothing written outside `--out`, no input
modified, every input accounted for in the manifest."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from test_adversarial_fit import checksums, code_asking_model, make_corpus, manifests

DOCVLM = str(Path(sys.executable).parent / "docvlm")
FAST = ["--model", "tiny", "--max-new-tokens", "4", "--num-workers", "0"]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([DOCVLM, *args], capture_output=True, text=True, timeout=timeout, env=ENV)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    return done


def start(*args: str) -> subprocess.Popen:
    """The command in a process group of its own (its page loaders in it too)."""
    return subprocess.Popen([DOCVLM, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True)


def until(condition, process: subprocess.Popen, timeout: float = 300) -> None:
    """Wait for `condition()` while `process` runs (polling; the timeout only keeps a broken run from hanging)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


def page_folder(folder: Path, names: list[str]) -> Path:
    from helpers import text_image

    folder.mkdir(parents=True)
    for name in names:
        text_image(f"{folder.name} {name}", 64).save(folder / f"{name}.png")
    return folder


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def listing(root: Path, skip: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if skip not in (p, *p.parents)}


@pytest.fixture
def corpus(tmp_path) -> Path:
    good, bad = make_corpus(tmp_path)
    manifests(tmp_path / "corpus", good, bad)
    return tmp_path / "corpus"


@pytest.mark.slow
def test_convert_over_the_hostile_corpus_accounts_for_every_input(corpus, tmp_path):
    before, around = checksums(corpus), listing(tmp_path, tmp_path / "out")
    out = tmp_path / "out"
    done = run("convert", "--task", "text", *FAST, str(corpus), str(corpus / "fifo.png"), "--out", str(out))
    assert done.returncode == 1
    found = {Path(r["input"]).name: r for r in rows(out)}
    images = {p.name for p in corpus.iterdir() if p.suffix in (".png", ".tif", ".gif") and not p.is_dir()}
    assert images <= set(found)  # every file, special ones included, has its row
    for name in ("fifo.png", "bomb.png", "truncated.png", "corrupt.png", "pickle.png", "eps.png", "empty.png",
                 "dangling.png", "device.png"):
        assert found[name]["error"] and str(corpus / name) in found[name]["error"], name
    for name in ("grey16.png", "float.tif", "cmyk.tif", "turned.png", "plain.png", "palette.gif"):
        assert found[name]["error"] is None and (out / found[name]["outputs"][0]).is_file(), name
    assert checksums(corpus) == before
    assert listing(tmp_path, out) == around  # nothing written beside --out


@pytest.mark.slow
def test_an_output_folder_holding_the_inputs_is_refused_before_any_work(corpus, tmp_path):
    before = checksums(corpus)
    for out in (corpus, tmp_path):  # the folder itself, and a folder above it
        done = run("convert", "--task", "molecules", *FAST, str(corpus / "plain.png"), "--out", str(out))
        assert done.returncode == 2 and "outputs could overwrite inputs" in done.stderr
        assert checksums(corpus) == before and not (out / "manifest.jsonl").exists()


@pytest.mark.slow
def test_names_of_files_and_folders_never_collide(tmp_path):
    from helpers import text_image

    (tmp_path / "in" / "a.txt").mkdir(parents=True)
    text_image("a", 64).save(tmp_path / "in" / "a.png")
    text_image("b", 64).save(tmp_path / "in" / "a.txt" / "b.png")
    done = run("convert", "--task", "text", *FAST, str(tmp_path / "in"), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert sorted(r["outputs"][0] for r in rows(tmp_path / "out")) == ["a.txt", "a_txt/b.txt"]


@pytest.mark.slow
def test_a_crafted_manifest_or_a_planted_link_cannot_lead_writes_outside_out(tmp_path):
    from helpers import text_image

    pages, out = tmp_path / "pages", tmp_path / "out"
    pages.mkdir()
    out.mkdir()
    for name in ("x", "y", "z"):
        text_image(name, 64).save(pages / f"{name}.png")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    crafted = [{"input": str(pages / "x.png"), "page": None, "id": "../../../escape", "task": "text",
                "outputs": ["../escape.txt"], "problems": [], "error": None, "text": "t"},
               {"input": str(pages / "y.png"), "page": None, "id": str(tmp_path / "abs"), "task": "text",
                "outputs": [], "problems": [], "error": None, "text": "t"}]
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in crafted))
    os.symlink(victim, out / "z.txt")  # the output z.txt would write through this link
    around = listing(tmp_path, out)

    done = run("convert", "--task", "text", *FAST, str(pages), "--out", str(out), "--skip-existing")
    assert done.returncode == 0, done.stderr
    assert "crafted" in done.stderr
    assert {r["id"] for r in rows(out)} == {"x", "y", "z"} and all(r["error"] is None for r in rows(out))
    assert victim.read_text() == "keep me" and not (out / "z.txt").is_symlink()
    assert listing(tmp_path, out) == around


def test_evaluate_shows_only_images_inside_the_predictions_folder(tmp_path):
    from helpers import text_image

    folder, secret = tmp_path / "preds", tmp_path / "secret"
    folder.mkdir()
    secret.mkdir()
    text_image("inside", 64).save(folder / "inside.png")
    text_image("private", 64).save(secret / "private.png")
    images = {"inside": "inside.png", "dotdot": "../secret/private.png", "absolute": str(secret / "private.png"),
              "passwd": "/etc/passwd", "nothing": "/nonexistent/x.png"}
    (folder / "p.jsonl").write_text("".join(json.dumps({"id": k, "image": v, "target": "t", "prediction": "t"}) + "\n"
                                            for k, v in images.items()))
    done = run("evaluate", "--task", "text", "--predictions", str(folder / "p.jsonl"), "--out", str(tmp_path / "r"),
               "--worst", "5")
    assert done.returncode == 0, done.stderr
    from lxml import html

    page = html.fromstring((tmp_path / "r" / "report.html").read_bytes())
    cases = {c.xpath("string(.//h3)"): c for c in page.xpath("//div[@class='case']")}
    assert cases["inside"].xpath(".//img[starts-with(@src, 'data:image')]")
    shown = {k: "".join(cases[k].xpath("./div[1]//text()")).replace(k, "", 1) for k in images if k != "inside"}
    assert not any(cases[k].xpath(".//img[starts-with(@src, 'data:image')]") for k in shown)
    assert len(set(shown.values())) == 1  # the same words whether the file exists or not


@pytest.mark.slow
def test_evaluate_over_the_hostile_corpus_names_the_first_bad_file(corpus):
    manifest = corpus / "train.jsonl"
    done = run("evaluate", "--task", "text", *FAST, "--data", str(manifest), "--out", str(corpus.parent / "ev"))
    assert done.returncode in (1, 2) and str(corpus / "fifo.png") in done.stderr


@pytest.mark.slow
def test_evaluate_bounds_the_work_of_huge_tables_and_lists_what_it_did_not_score(tmp_path):
    """A looping model's tables (200,000 cells in a row, colspan 100,000, colspan 10^6 x rowspan 10^5) are
    scored in bounded time and memory: GriTS past its limits is 0 with the reason listed on the row, the
    table past the converter's limit is unparseable, and a table within the limits is scored as always."""
    true = "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>"
    predictions = {
        "wide": "<table><tr>" + "<td>x</td>" * 200_000 + "</tr></table>",
        "colspan": '<table><tr><td colspan="100000">a</td></tr></table>',
        "both": '<table><tr><td colspan="1000000" rowspan="100000">a</td></tr><tr><td>c</td></tr></table>',
        "exact": true,
    }
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"id": k, "target": true, "prediction": v}) + "\n"
                            for k, v in predictions.items()))
    done = run("evaluate", "--task", "tables", "--predictions", str(path), "--out", str(tmp_path / "r"), timeout=120)
    assert done.returncode == 0, done.stderr
    report = {r["id"]: r for r in json.loads((tmp_path / "r" / "report.json").read_text())["rows"]}
    for name in ("wide", "both"):
        assert report[name]["score"]["grits_top"] == report[name]["score"]["grits_con"] == 0.0
        assert report[name]["score"]["unparseable"] == 1.0
        assert any(p.startswith("GriTS not computed") for p in report[name]["problems"]), report[name]["problems"]
        assert any(p.endswith("not read") for p in report[name]["problems"])
    assert "cover 200000 grid positions" in " ".join(report["wide"]["problems"])
    assert "cover 100000000001 grid positions" in " ".join(report["both"]["problems"])  # 10^6 x 10^5 + 1
    colspan = report["colspan"]  # 100,000 positions: within the limits, scored (2 positions aligned, IoU 1e-5 each)
    assert not any("not computed" in p for p in colspan["problems"]) and colspan["score"]["unparseable"] == 0.0
    assert colspan["score"]["grits_top"] == pytest.approx(2 * 2e-5 / (4 + 100_000), rel=1e-9)
    assert report["exact"]["score"]["grits_top"] == report["exact"]["score"]["grits_con"] == 1.0


# ---- hostile model folders and checkpoints: every field checked before use, one line, exit 2 ----------------
@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """A tiny model exported as `docvlm fit` exports one (weights, processor, docvlm.json)."""
    from docvlm import describe, tasks
    from docvlm.decode import Decoding
    from docvlm.model import build_tiny

    folder = tmp_path_factory.mktemp("models") / "hf"
    model, processor = build_tiny(image_size=56, patch_size=28)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    describe.write(folder, describe.description(tasks.get("text"), 56, Decoding(max_new_tokens=4)))
    torch.save({f"net.{k}": v for k, v in model.state_dict().items()}, folder.parent / "state_dict.pt")
    return folder


def checkpoint(folder: Path, path: Path, change) -> Path:
    """A checkpoint as `docvlm fit` writes one (model settings, weights, description), `change`d."""
    description = json.loads((folder / "docvlm.json").read_text())
    state = torch.load(folder.parent / "state_dict.pt", weights_only=True)
    data = {"state_dict": state, "docvlm": description, "hyper_parameters": {"model": {
        "name_or_path": "tiny", "image_size": 56, "patch_size": 28, "tiny_width": 1}}}
    change(data)
    torch.save(data, path)
    return path


def one_line_refusal(main, argv: list[str], capsys) -> str:
    """The command's exit status is 2 and its stderr one `error:` line, which is returned."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err[-2000:]
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1, err[-2000:]
    return errors[0]


DESCRIPTIONS = {  # docvlm.json changes -> what the one line says
    "unknown task": ({"task": "pwn"}, "unknown task 'pwn'; known tasks: "),
    "task as a path": ({"task": "../../etc/passwd"}, "unknown task '../../etc/passwd'"),
    "unknown decoding setting": ({"decoding": {"evil": 1}}, "decoding has no setting 'evil'"),
    "decoding as a list": ({"decoding": [1, 2]}, "decoding must be dict, not list"),
    "beams as a word": ({"decoding": {"num_beams": "many"}}, "num_beams must be an integer, not 'many'"),
    "beams 10^12": ({"decoding": {"num_beams": 10**12}}, "num_beams must be from 1 to 64, not 1000000000000"),
    "negative output length": ({"decoding": {"max_new_tokens": -5}}, "max_new_tokens must be from 1 to 65536, not -5"),
    "output length 10^12": ({"decoding": {"max_new_tokens": 10**12}}, "max_new_tokens must be from 1 to 65536"),
    "image mode as a path": ({"options": {"image_mode": "../../etc"}}, "image_mode must be one of 'pad', 'stretch'"),
    "negative target length": ({"options": {"max_target_tokens": -3}},
                               "max_target_tokens must be from 1 to 65536, not -3"),
    "image size as text": ({"image_size": "big"}, "image_size must be int, not str"),
    "metric as text": ({"metrics": {"cer": "low"}}, "metric 'cer' must be a number, not str"),
}


@pytest.mark.parametrize("case", DESCRIPTIONS)
def test_a_model_folder_with_a_bad_description_is_refused_in_one_line(model_folder, tmp_path, capsys, case):
    import shutil

    from docvlm.convert import main as convert
    from docvlm.evaluate import main as evaluate

    change, message = DESCRIPTIONS[case]
    folder = tmp_path / "model"
    shutil.copytree(model_folder, folder)
    description = json.loads((folder / "docvlm.json").read_text())
    for key, value in change.items():
        description[key] = {**description[key], **value} if key == "options" else value
    (folder / "docvlm.json").write_text(json.dumps(description))
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "a.png").write_bytes(b"not read")
    line = one_line_refusal(convert, ["--model", str(folder), str(tmp_path / "pages"), "--out", str(tmp_path / "o")],
                            capsys)
    assert f"{folder / 'docvlm.json'}: " in line and message in line, line
    assert not (tmp_path / "o").exists()  # before any work
    line = one_line_refusal(evaluate, ["--model", str(folder), "--synthetic", "1", "--out", str(tmp_path / "r")],
                            capsys)
    assert message in line and not (tmp_path / "r").exists()


def test_a_description_of_100000_nested_arrays_is_refused_in_one_line(model_folder, tmp_path, capsys):
    import shutil

    from docvlm.convert import main as convert

    folder = tmp_path / "model"
    shutil.copytree(model_folder, folder)
    (folder / "docvlm.json").write_text("[" * 100_000 + "]" * 100_000)
    line = one_line_refusal(convert, ["--model", str(folder), str(tmp_path), "--out", str(tmp_path / "o")], capsys)
    assert line.endswith(f"{folder / 'docvlm.json'}: cannot read the model's description (nested too deeply)")


def _set(path: str, value):
    def change(data):
        *keys, last = path.split(".")
        node = data
        for key in keys:
            node = node[key]
        node[last] = value
    return change


CHECKPOINTS = {  # checkpoint changes -> what the one line says
    "unknown task": (_set("docvlm.task", "pwn"), "its description: unknown task 'pwn'"),
    "image size as text": (_set("hyper_parameters.model.image_size", "big"),
                           "model: image_size must be an integer, not 'big'"),
    "tiny width 10^6": (_set("hyper_parameters.model.tiny_width", 10**6),
                        "model: tiny_width must be from 1 to 64, not 1000000"),
    "unknown decoding setting": (_set("docvlm.decoding", {"evil": 1}), "decoding has no setting 'evil'"),
    "settings as a list": (_set("hyper_parameters.model", [1, 2]), "model settings must be a mapping, not list"),
    "a pickle payload": (lambda data: data.update(payload=_Payload()),
                         "not a docvlm checkpoint that can be read safely"),
}


PWNED = Path("/tmp") / f"docvlm-pwned-by-checkpoint-{os.getpid()}"


class _Payload:
    """Pickled, it runs a command when unpickled without `weights_only`."""

    def __reduce__(self):
        return (os.system, (f"touch {PWNED}",))


@pytest.mark.parametrize("case", CHECKPOINTS)
def test_a_checkpoint_with_bad_settings_is_refused_by_export_and_convert_in_one_line(model_folder, tmp_path, capsys,
                                                                                        case):
    from docvlm.convert import main as convert
    from docvlm.export import main as export

    change, message = CHECKPOINTS[case]
    ckpt = checkpoint(model_folder, tmp_path / "bad.ckpt", change)
    line = one_line_refusal(export, [str(ckpt), str(tmp_path / "hf")], capsys)
    assert f"{ckpt}: " in line and message in line, line
    assert not (tmp_path / "hf").exists()
    (tmp_path / "pages").mkdir()
    from helpers import text_image

    text_image("a", 56).save(tmp_path / "pages" / "a.png")
    assert not PWNED.exists()
    for devices in ("1", "2"):  # refused once, before processes are launched (each printed a traceback)
        line = one_line_refusal(convert, ["--model", str(ckpt), str(tmp_path / "pages"), "--out", str(tmp_path / "o"),
                                          "--num-workers", "0", "--devices", devices], capsys)
        assert f"{ckpt}: " in line and message in line, line
    assert not (tmp_path / "o").exists()


def test_a_good_checkpoint_of_the_same_making_exports(model_folder, tmp_path, capsys):
    """The checkpoints above differ from a working one only by the change named."""
    from docvlm.export import main as export

    ckpt = checkpoint(model_folder, tmp_path / "good.ckpt", lambda data: None)
    assert export([str(ckpt), str(tmp_path / "hf")]) == 0
    assert json.loads((tmp_path / "hf" / "docvlm.json").read_text())["task"] == "text"


@pytest.mark.parametrize("flags, message", [
    (["--num-beams", "1000000000000"], "argument --num-beams: '1000000000000' is more than 64"),
    (["--num-beams", "many"], "argument --num-beams: 'many' is not a number"),
    (["--max-new-tokens", "-5"], "argument --max-new-tokens: '-5' must be a positive number"),
    (["--task-option", "image_mode=../../etc"], "image_mode must be one of 'pad', 'stretch', not '../../etc'"),
    (["--task-option", "max_target_tokens=-3"], "max_target_tokens must be from 1 to 65536, not -3"),
    (["--max-new-tokens", "1000000000000"], "argument --max-new-tokens: '1000000000000' is more than 65536"),
])
def test_bad_decoding_flags_and_task_options_stop_convert_before_any_page(tmp_path, capsys, flags, message):
    from docvlm.convert import main as convert

    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "a.png").write_bytes(b"not read")
    line = one_line_refusal(convert, ["--model", "tiny", "--task", "text", *flags, str(tmp_path / "pages"),
                                      "--out", str(tmp_path / "o")], capsys)
    assert message in line, line
    assert not (tmp_path / "o").exists()


def test_a_prompt_longer_than_the_model_can_read_stops_convert_and_the_api_before_any_page(tmp_path, capsys):
    """A manifest row whose prefix is 10 MB (it took 84 s and 6 GB, then asked for 100 TB): one line naming the
    row's image and the budget, exit 2, no page converted; `docvlm.load(...)` names the prompt's index."""
    import docvlm
    from docvlm.convert import main as convert
    from helpers import text_image

    for name in ("a", "b"):
        text_image(name, 56).save(tmp_path / f"{name}.png")
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text(json.dumps({"image": "a.png", "prefix": "no acute findings"}) + "\n"
                        + json.dumps({"image": "b.png", "prefix": "x" * 10_000_000}) + "\n")
    out = tmp_path / "out"
    line = one_line_refusal(convert, ["--model", "tiny", "--task", "radiology", str(manifest), "--out", str(out),
                                      "--num-workers", "0"], capsys)
    assert line.endswith(f"error: {tmp_path / 'b.png'}: its manifest row's prefix: the prompt has 507840 tokens or "
                         "more, "
                         "longer than the 7934 the model has for one (its positions less the image's 256 tokens); "
                         "shorten the prompt"), line
    assert not list(out.glob("*.txt"))
    model = docvlm.load("tiny", task="radiology")
    with pytest.raises(ValueError, match=r"^prompts\[1\]: the prompt has \d+ tokens or more, longer than the 7934 "):
        model([tmp_path / "a.png", tmp_path / "b.png"], prompts=["short", "x" * 10_000_000])
@pytest.mark.parametrize("name", [".staging", "manifest.jsonl.tmp", ".convert.lock", "manifest.part-1-of-1.jsonl",
                                  "manifest.jsonl", ".convert.run"])
def test_a_link_under_a_bookkeeping_name_of_out_is_refused_before_any_work(tmp_path, name):
    pages, out, victim = page_folder(tmp_path / "pages", ["x", "y"]), tmp_path / "out", tmp_path / "victim"
    (victim / "manifest.part-1-of-1").mkdir(parents=True)  # what the clean-up of a linked .staging deleted
    (victim / "manifest.part-1-of-1" / "keep.txt").write_text("keep me")
    (victim / "file.txt").write_text("keep me too")
    out.mkdir()
    os.symlink(victim if name == ".staging" else victim / "file.txt", out / name)
    before, around = checksums(victim), listing(tmp_path, out)

    done = run("convert", "--task", "text", *FAST, str(pages), "--out", str(out))
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert str(out / name) in line and "symbolic link" in line
    assert checksums(victim) == before and listing(tmp_path, out) == around
    assert sorted(p.name for p in out.iterdir()) == [name]  # nothing written, the link left for the user


@pytest.mark.slow
def test_an_input_manifest_inside_out_is_refused_before_any_work(tmp_path):
    pages, out = page_folder(tmp_path / "pages", ["x"]), tmp_path / "out"
    out.mkdir()
    given = out / "manifest.jsonl"
    given.write_text(json.dumps({"image": str(pages / "x.png"), "prefix": "cough"}) + "\n")
    before = given.read_bytes()
    done = run("convert", "--task", "text", *FAST, str(given), "--out", str(out))
    assert done.returncode == 2 and f"contains the input {given}" in done.stderr, done.stderr
    assert given.read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["manifest.jsonl"]


def _stopped_once_it_writes(process: subprocess.Popen, part: Path) -> None:
    """`process` stopped (SIGSTOP) after its first row, among pages still to do, holding the folder as a run
    does while it decodes (not the folder's short-lived `.convert.lock`)."""
    until(lambda: part.is_file() and part.read_text().strip(), process)
    os.kill(process.pid, signal.SIGSTOP)


@pytest.mark.slow
def test_runs_that_could_give_one_name_to_two_pages_never_write_to_one_out_at_once(tmp_path):
    names = [f"x{i}" for i in range(12)]
    ina, inb, out = page_folder(tmp_path / "ina", names), page_folder(tmp_path / "inb", names), tmp_path / "oc"
    slow = ["--task", "text", *FAST, "--batch-size", "1", "--out", str(out)]

    plain = start("convert", *slow, str(ina))
    _stopped_once_it_writes(plain, out / "manifest.part-1-of-1.jsonl")
    try:  # the shards of another run would name their pages x0..x11 too
        for shard in ("1/2", "2/2"):
            done = run("convert", *slow, str(inb), "--shard", shard)
            assert done.returncode == 2 and "another docvlm convert, with other inputs" in done.stderr, done.stderr
    finally:
        os.kill(plain.pid, signal.SIGCONT)
    assert plain.wait(timeout=300) == 0, plain.communicate()[1][-3000:]

    first = start("convert", *slow, str(inb), "--shard", "1/2")  # the shards of one run share the folder
    _stopped_once_it_writes(first, out / "manifest.part-1-of-2.jsonl")
    try:
        assert run("convert", *slow, str(inb), "--shard", "2/2").returncode == 0
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait(timeout=300) == 0, first.communicate()[1][-3000:]

    found = rows(out)
    assert len(found) == 24 and len({r["id"] for r in found}) == 24
    for row in found:  # each file holds what its row says, under a name no other page has
        assert row["error"] is None and (out / row["outputs"][0]).read_text(encoding="utf-8") == row["text"], row
    assert {Path(r["input"]).parent.name for r in found if r["id"].startswith("x0")} == {"ina", "inb"}


@pytest.mark.slow
@pytest.mark.parametrize("command", ["convert", "evaluate"])
def test_a_model_folder_asking_to_run_its_own_code_is_refused_without_a_prompt_or_running_it(tmp_path, command):
    pages, folder, marker = page_folder(tmp_path / "pages", ["x"]), tmp_path / "model", tmp_path / "ran"
    code_asking_model(folder, marker)
    inputs = ["--synthetic", "1"] if command == "evaluate" else [str(pages)]
    done = subprocess.run([DOCVLM, command, "--model", str(folder), "--task", "text", *inputs, "--out",
                           str(tmp_path / "out")], input="y\n", capture_output=True, text=True, timeout=300, env=ENV)
    assert done.returncode == 2, done.stderr
    assert not marker.exists()  # the folder's Python was never imported
    assert "[y/N]" not in done.stdout + done.stderr and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert str(folder) in line and "never runs a model's own code" in line


@pytest.mark.slow
def test_a_folder_of_pickled_weights_alone_is_refused_saying_why(tmp_path):
    pages, folder = page_folder(tmp_path / "pages", ["x"]), tmp_path / "model"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")  # a pickle; never opened
    done = run("convert", "--model", str(folder), "--task", "text", str(pages), "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert str(folder) in line and "pytorch_model.bin (pickled weights) but no config.json" in line
    assert "no such model folder" not in line


@pytest.mark.slow
def test_sigterm_places_the_finished_pages_writes_the_summary_and_exits_143(tmp_path):
    pages, out = page_folder(tmp_path / "pages", [f"x{i}" for i in range(12)]), tmp_path / "out"
    args = ["convert", "--task", "text", *FAST[:-2], "--num-workers", "1", "--batch-size", "1", str(pages),
            "--out", str(out)]
    process = start(*args)
    part = out / "manifest.part-1-of-1.jsonl"
    until(lambda: part.is_file() and part.read_text().strip(), process)
    os.killpg(process.pid, signal.SIGTERM)  # as a scheduler stops a job: every process, page loaders too
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr and "terminated (SIGTERM)" in stderr
    assert " converted (" in stdout  # the summary
    first = rows(out)  # the part merged into the manifest, staging cleaned
    assert first and sorted(p.name for p in out.iterdir() if p.name.startswith(("manifest", ".staging"))) == [
        "manifest.jsonl"]
    assert all(r["error"] is None and (out / r["outputs"][0]).is_file() for r in first)

    done = run(*args, "--skip-existing")
    assert done.returncode == 0 and f"{len(first)} skipped as done" in done.stdout, done.stdout + done.stderr
    assert sorted(r["id"] for r in rows(out)) == sorted(f"x{i}" for i in range(12))
