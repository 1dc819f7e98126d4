"""The evaluation report's head says what a reader needs (model, task and its options, data, samples, decoding) as
a table, with the command line folded below it; its histogram counts whole samples; and a list of worst cases
that are all perfect says so."""

import json

from lxml import html as lxml_html

import docvlm.tasks
from docvlm.evaluate import main as evaluate_main
from docvlm.report import histogram


def header(out) -> dict[str, str]:
    page = lxml_html.fromstring((out / "report.html").read_text(encoding="utf-8"))
    (about,) = page.xpath('//section[@id="about"]')
    return about, {row.xpath("./th")[0].text_content(): row.xpath("./td")[0].text_content().strip()
                   for row in about.xpath('./table[@class="about"]/tr')}


def test_a_model_run_heads_the_report_with_model_task_data_samples_and_decoding(tmp_path):
    out = tmp_path / "report"
    assert evaluate_main(["--task", "text", "--model", "tiny", "--synthetic", "3", "--max-new-tokens", "4",
                          "--num-workers", "0", "--out", str(out)]) == 0
    about, fields = header(out)
    assert list(fields) == ["model", "task", "task options", "data", "samples", "decoding"]
    assert fields["model"] == "tiny" and fields["task"] == "text" and fields["samples"] == "3"
    assert fields["data"] == "3 synthetic samples, seed 1"
    assert fields["decoding"] == "greedy, at most 4 new tokens, repetition guard on"
    options = {r.xpath("./td")[0].text: r.xpath("./td")[1].text for r in about.xpath('.//table[@class="options"]/tr')}
    assert options["prefix"] == docvlm.tasks.get("text").prefix
    (command,) = about.xpath("./details")
    assert command.get("open") is None and command.xpath("./summary")[0].text == "command line"
    assert command.xpath("./p/code")[0].text == f"docvlm evaluate --task text --model tiny --synthetic 3 " \
                                                 f"--max-new-tokens 4 --num-workers 0 --out {out}"
    text = about.text_content()
    assert "task_option" not in text and "{" not in text and "worst" not in text


def test_scored_predictions_say_there_is_no_model_and_when_every_case_is_perfect(tmp_path):
    rows = [{"id": f"s{i}", "prediction": t, "target": t} for i, t in enumerate(["12", "345", "6789"])]
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "report"
    assert evaluate_main(["--task", "text", "--predictions", str(predictions), "--out", str(out), "--worst", "2"]) == 0
    _, fields = header(out)
    assert fields["model"] == "none: predictions scored as given" and "decoding" not in fields
    assert fields["data"] == f"3 predictions of {predictions}"
    page = lxml_html.fromstring((out / "report.html").read_text(encoding="utf-8"))
    (note,) = page.xpath('//section[@id="worst"]/p[@class="perfect"]')
    assert note.text_content().startswith("All 3 samples score a perfect cer of 0: the 2 below")


def test_a_worst_list_with_a_miss_has_no_perfect_note(tmp_path):
    rows = [{"id": "a", "prediction": "12", "target": "12"}, {"id": "b", "prediction": "0", "target": "34"}]
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert evaluate_main(["--task", "text", "--predictions", str(predictions), "--out", str(tmp_path / "r")]) == 0
    assert 'class="perfect"' not in (tmp_path / "r" / "report.html").read_text(encoding="utf-8")


def test_the_histogram_counts_whole_samples():
    axes = histogram([0.0, 0.1, 0.1, 0.5, 1.0], "cer").axes[0]
    ticks = [t for t in axes.get_yticks() if axes.get_ylim()[0] <= t <= axes.get_ylim()[1]]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)
