"""Outputs are written into the folder given, never through a link planted there (`docvlm.outputs`)."""

import os

import pytest
from PIL import Image

from docvlm.evaluate import main as evaluate
from docvlm.outputs import open_new, save_image, write_text


@pytest.fixture
def planted(tmp_path):
    """(the output folder, a file outside it that links in the folder point to)."""
    out, outside = tmp_path / "out", tmp_path / "precious.txt"
    out.mkdir()
    outside.write_text("keep me", encoding="utf-8")
    return out, outside


@pytest.mark.parametrize("write", [
    lambda path: write_text(path, "report"),
    lambda path: open_new(path).close(),
    lambda path: save_image(path, Image.new("RGB", (2, 2))),
])
def test_a_link_at_an_outputs_name_is_replaced_not_followed(planted, write):
    out, outside = planted
    (out / "report.html").symlink_to(outside)
    write(out / "report.html")
    assert not (out / "report.html").is_symlink() and (out / "report.html").is_file()
    assert outside.read_text(encoding="utf-8") == "keep me"
    assert sorted(p.name for p in out.iterdir()) == ["report.html"]  # no temporary file left


def test_written_files_respect_the_umask(tmp_path):
    previous = os.umask(0o077)
    try:
        write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o600


def test_evaluate_writes_its_reports_and_predictions_past_planted_links(planted):
    out, outside = planted
    for name in ("predictions.jsonl", "report.json", "report.md", "report.html"):
        (out / name).symlink_to(outside)
    code = evaluate(["--task", "text", "--model", "tiny", "--synthetic", "2", "--max-new-tokens", "4",
                     "--out", str(out)])
    assert code == 0
    assert outside.read_text(encoding="utf-8") == "keep me"
    for name in ("predictions.jsonl", "report.json", "report.md", "report.html"):
        assert not (out / name).is_symlink() and (out / name).stat().st_size > 0
