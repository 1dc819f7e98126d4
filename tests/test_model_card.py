"""The model card an export writes says what the folder does: the real output limit (the decoding setting that
`generation_config.json` holds, not the task's longest target), the data its metrics were measured on in words,
and the licences the weights and the training data bring."""

import json
import re

import pytest
import yaml

import docvlm.tasks
from docvlm import describe
from docvlm.decode import Decoding
from docvlm.items import Source
from docvlm.model import ModelSpec
from docvlm.module import DocVLM


def front_matter(card: str) -> dict:
    return yaml.safe_load(card.split("---\n")[1])


def prose(card: str) -> str:
    """The card's text before the code: what a reader reads."""
    return card.split("## Use")[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny text model exported with decoding capped at 8 tokens, as the demo exports it."""
    folder = tmp_path_factory.mktemp("hf")
    task = docvlm.tasks.get("text")
    module = DocVLM(model=ModelSpec(name_or_path="tiny", image_size=140, patch_size=28),
                    decoding=Decoding(max_new_tokens=8), task=task)
    module.export(folder)
    return folder


def test_the_card_states_the_limit_that_the_exported_files_decode_with(exported):
    limit = json.loads((exported / "generation_config.json").read_text())["max_new_tokens"]
    data = json.loads((exported / "docvlm.json").read_text())
    assert limit == data["decoding"]["max_new_tokens"] == 8 != data["max_target_tokens"]
    text = prose((exported / "README.md").read_text())
    assert f"outputs of at most {limit} new tokens" in text
    assert f"up to {data['max_target_tokens']}" not in text and "  " not in text
    assert "images resized to 140 px" in text


def test_a_padded_task_without_a_decoding_cap_says_its_target_length():
    data = describe.description(docvlm.tasks.get("tables"), 896, Decoding(), base_model="google/paligemma2-3b-pt-896")
    text = prose(describe.model_card(data))
    assert "images padded to a white square, then resized to 896 px" in text
    assert f"outputs of at most {data['max_target_tokens']} new tokens (the task's target length" in text


@pytest.mark.parametrize(("source", "words"), [
    (Source(synthetic=64, seed=1), "64 synthetic validation samples, seed 1"),
    (Source(path="/data/pubtabnet", split="val"), "64 validation samples of /data/pubtabnet, split val"),
    (Source(dataset="org/grandstaff"), "64 validation samples of the dataset org/grandstaff"),
])
def test_metrics_name_their_data_as_a_person_would(source, words):
    measured = {"split": "val", "samples": 64, "step": 1500, "source": source.describe(64, "validation")}
    data = describe.description(docvlm.tasks.get("text"), 140, Decoding(), {"cer": 0.0}, measured, base_model="tiny")
    assert f"Measured at step 1500 on {words}:" in describe.model_card(data)


def test_a_paligemma_fine_tune_is_under_the_gemma_terms():
    data = describe.description(docvlm.tasks.get("tables"), 896, Decoding(), base_model="google/paligemma2-3b-pt-896")
    card = describe.model_card(data)
    meta = front_matter(card)
    assert (meta["license"], meta["base_model"]) == ("gemma", "google/paligemma2-3b-pt-896")
    assert "[Gemma Terms of Use](https://ai.google.dev/gemma/terms)" in card and "Model Derivative" in card
    assert "PhysioNet" not in card


def test_a_radiology_fine_tune_names_both_the_gemma_terms_and_mimic_cxrs_agreement():
    data = describe.description(docvlm.tasks.get("radiology"), 448, Decoding(),
                                base_model="google/paligemma2-3b-pt-448")
    card = describe.model_card(data)
    meta = front_matter(card)
    assert meta["license"] == "other" and "gemma" in meta["license_name"] and "physionet" in meta["license_name"]
    assert "Gemma Terms of Use" in card and re.search(r"MIMIC-CXR.*PhysioNet Credentialed Health Data", card, re.S)


def test_the_random_tiny_model_claims_no_gemma_licence(exported):
    card = (exported / "README.md").read_text()
    assert "license" not in front_matter(card) and "Gemma Terms of Use do not apply" in card


def test_a_checkpoint_from_before_base_model_was_recorded_exports_with_its_base_named(tmp_path):
    import dataclasses

    import torch

    from docvlm.export import main as export_main

    spec = ModelSpec(name_or_path="tiny", image_size=140, patch_size=28)
    module = DocVLM(model=spec, decoding=Decoding(max_new_tokens=8), task=docvlm.tasks.get("text"))
    description = module.description()
    del description["base_model"]
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": {"model": dataclasses.asdict(spec)},
                "docvlm": description}, tmp_path / "old.ckpt")
    assert export_main([str(tmp_path / "old.ckpt"), str(tmp_path / "hf")]) == 0
    assert json.loads((tmp_path / "hf" / "docvlm.json").read_text())["base_model"] == "tiny"
    assert "license" not in front_matter((tmp_path / "hf" / "README.md").read_text())
