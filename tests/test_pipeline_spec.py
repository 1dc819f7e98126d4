"""The pipeline file: routes read and checked, errors naming the file and the key, relative model paths."""

import pytest

from docvlm.pipeline.spec import ModelRef, PipelineSpecError, read_spec


def write(tmp_path, text: str):
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_routes_and_layout_are_read_with_their_tasks(tmp_path):
    (tmp_path / "models" / "tables").mkdir(parents=True)
    spec = read_spec(write(tmp_path, "layout: tiny\nroutes:\n  table: {model: models/tables}\n"
                                     "  text: {model: tiny, task: text}\n  music: {model: google/pg2-music}\n"))
    assert spec.layout == ModelRef("tiny", "layout")
    assert spec.routes["table"] == ModelRef(str(tmp_path / "models" / "tables"))  # under the file's folder
    assert spec.routes["text"] == ModelRef("tiny", "text")
    assert spec.routes["music"] == ModelRef("google/pg2-music")  # a hub id stays as written


def test_a_relative_checkpoint_resolves_beside_the_file_even_before_it_exists(tmp_path):
    spec = read_spec(write(tmp_path, "routes:\n  table: {model: runs/last.ckpt}\n"))
    assert spec.layout is None and spec.routes["table"].model == str(tmp_path / "runs" / "last.ckpt")


@pytest.mark.parametrize("text, message", [
    ("routes: {table: {modle: x}}", "routes: table: unknown key 'modle'"),
    ("layout: tiny\nroute: {}", "unknown key 'route'"),
    ("layout: tiny", "`routes` must map region labels to models"),
    ("routes: {table: tiny}", "routes: table: expected {model: ..., task: ...}, not 'tiny'"),
    ("routes: {table: {model: tiny, task: tabels}}", "routes: table: task 'tabels' is not one of"),
    ("routes: {table: {task: tables}}", "routes: table: `model` must name a model"),
    ("layout: {model: tiny, classes: [a]}\nroutes: {table: {model: tiny}}", "layout: unknown key 'classes'"),
    ("routes: [table]", "`routes` must map region labels"),
    ("routes: {}", "must map region labels to models, e.g. `routes: {table: {model: runs/tables/hf}}`, not an empty"),
    ("- a\n- b", "expected a mapping"),
    ("routes: {table: {model: tiny}", "not YAML"),
])
def test_a_wrong_file_is_named_with_its_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(PipelineSpecError) as caught:
        read_spec(path)
    assert str(caught.value).startswith(str(path)) and message in str(caught.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(PipelineSpecError, match="no such pipeline file"):
        read_spec(tmp_path / "none.yaml")
