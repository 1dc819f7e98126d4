"""The tiny model's attention semantics, the suffix-only loss, transfer settings, freezing, LoRA and QLoRA."""

import pytest
import torch
from transformers import Gemma2Config, PaliGemmaConfig

from docvlm.model import GLOBAL_WINDOW, LoraSpec, ModelSpec, apply_transfer_settings, load, unwrap
from docvlm.module import suffix_loss
from helpers import make_batch


def logits(model, batch):
    with torch.no_grad():
        return model(
            input_ids=batch["input_ids"], pixel_values=batch["pixel_values"],
            attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"],
        ).logits


def test_layout_of_a_training_sequence(tiny):
    _, processor = tiny
    batch = make_batch(processor, ["ocr", "ocr long"], ["ab", "c"])
    tok = processor.tokenizer
    row = batch["input_ids"][0].tolist()
    n_image = processor.image_seq_length
    pads = row.index(processor.image_token_id)
    assert row[:pads] == [tok.pad_token_id] * pads  # left padding
    assert row[pads : pads + n_image] == [processor.image_token_id] * n_image
    assert row[pads + n_image] == tok.bos_token_id
    assert tok.decode(row[pads + n_image + 1 :]) == "ocr\nab<eos>"
    labels = batch["labels"][0]
    suffix = batch["token_type_ids"][0] == 1
    assert tok.decode(labels[suffix]) == "ab<eos>"
    assert (labels[~suffix] == -100).all()


def test_prefix_attends_fully_and_suffix_causally(tiny):
    model, processor = tiny
    base = make_batch(processor, ["ocr abcd"], ["wxyz"])
    first_suffix = int((base["token_type_ids"][0] == 1).nonzero()[0])
    ref = logits(model, base)

    changed_prefix = {k: v.clone() if torch.is_tensor(v) else v for k, v in base.items()}
    last_prefix = first_suffix - 2  # the token before "\n"
    changed_prefix["input_ids"][0, last_prefix] = processor.tokenizer.convert_tokens_to_ids("Q")
    out = logits(model, changed_prefix)
    # a later prefix token changes earlier prefix positions (image tokens included): full attention
    assert not torch.allclose(out[0, :last_prefix], ref[0, :last_prefix])
    assert not torch.allclose(out[0, 0], ref[0, 0])

    changed_suffix = {k: v.clone() if torch.is_tensor(v) else v for k, v in base.items()}
    position = first_suffix + 2
    changed_suffix["input_ids"][0, position] = processor.tokenizer.convert_tokens_to_ids("Q")
    out = logits(model, changed_suffix)
    torch.testing.assert_close(out[0, :position], ref[0, :position], rtol=0, atol=1e-6)
    assert not torch.allclose(out[0, position:], ref[0, position:])


def test_loss_ignores_prefix_and_pad_labels(tiny):
    model, processor = tiny
    batch = make_batch(processor, ["ocr", "ocr longer prompt"], ["abcdef", "g"])
    ref = suffix_loss(model, batch)
    garbled = dict(batch, labels=batch["labels"].clone())
    not_suffix = (batch["token_type_ids"] == 0) | (batch["attention_mask"] == 0)
    assert (batch["attention_mask"] == 0).any()  # there are pads to garble
    garbled["labels"][not_suffix] = 7
    assert torch.equal(suffix_loss(model, garbled), ref)
    changed = dict(batch, labels=batch["labels"].clone())
    changed["labels"][0, -2] = 7  # a suffix label does count
    assert not torch.equal(suffix_loss(model, changed), ref)


def test_loss_reductions_match_their_definitions(tiny):
    model, processor = tiny
    prompts, targets = ["ocr", "ocr"], ["a much longer target", "b"]
    batch = make_batch(processor, prompts, targets)
    singles = [suffix_loss(model, make_batch(processor, [p], [t])) for p, t in zip(prompts, targets)]
    # big_vision: mean over each example's tokens, then over the batch
    torch.testing.assert_close(suffix_loss(model, batch, reduction="per_example"), torch.stack(singles).mean())
    # transformers: mean over all suffix tokens of the batch, as its own loss computes it
    with torch.no_grad():
        inputs = {k: batch[k] for k in ("input_ids", "pixel_values", "attention_mask", "token_type_ids", "labels")}
        hf = model(**inputs).loss
    torch.testing.assert_close(suffix_loss(model, batch, reduction="per_token"), hf)
    assert not torch.allclose(suffix_loss(model, batch, reduction="per_token"), torch.stack(singles).mean())


def test_label_smoothing_changes_the_loss(tiny):
    model, processor = tiny
    batch = make_batch(processor, ["ocr"], ["abc"])
    assert suffix_loss(model, batch, label_smoothing=0.1) != suffix_loss(model, batch)


def test_transfer_settings_on_the_real_config():
    config = PaliGemmaConfig(text_config=Gemma2Config().to_dict())
    assert config.text_config.final_logit_softcapping == 30.0 and config.text_config.sliding_window == 4096
    apply_transfer_settings(config)
    assert config.text_config.final_logit_softcapping is None
    assert config.text_config.sliding_window >= 4096 + 4096 + 256  # image tokens + longest target + prompt
    assert config.text_config.sliding_window == GLOBAL_WINDOW


def test_tiny_model_has_transfer_settings(tiny):
    model, _ = tiny
    assert model.config.text_config.final_logit_softcapping is None
    assert "sliding_attention" in model.config.text_config.layer_types  # both kinds of layer exercised
    assert model.config.text_config.sliding_window >= GLOBAL_WINDOW


def test_freezing():
    model, _ = load(ModelSpec(name_or_path="tiny", image_size=224, patch_size=28, freeze_vision=True,
                              freeze_projector=True))
    assert not any(p.requires_grad for p in model.model.vision_tower.parameters())
    assert not any(p.requires_grad for p in model.model.multi_modal_projector.parameters())
    assert all(p.requires_grad for p in model.model.language_model.parameters())


def test_lora_trains_adapters_only_and_merges_on_export():
    model, processor = load(ModelSpec(name_or_path="tiny", image_size=224, patch_size=28, lora=LoraSpec(r=4)))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert all("language_model" in n for n in trainable)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # non-zero adapters, so merging matters
    batch = make_batch(processor, ["ocr"], ["abc"])
    merged = unwrap(model)
    assert type(merged).__name__ == "PaliGemmaForConditionalGeneration"
    assert not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(logits(merged, batch), logits(model, batch), rtol=1e-4, atol=1e-4)
    base = load(ModelSpec(name_or_path="tiny", image_size=224, patch_size=28))[0]
    assert not torch.allclose(logits(base, batch), logits(merged, batch))


def test_qlora_trains_adapters_on_a_4bit_base_and_exports_the_weights_it_trained_against(tmp_path):
    import bitsandbytes as bnb
    from transformers import PaliGemmaForConditionalGeneration

    spec = ModelSpec(name_or_path="tiny", image_size=224, patch_size=28, lora=LoraSpec(r=4), quantize="nf4")
    model, processor = load(spec)
    base = model.get_base_model()
    q_proj = base.model.language_model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, bnb.nn.Linear4bit)
    assert type(base.model.vision_tower.encoder.layers[0].self_attn.q_proj) is torch.nn.Linear
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)

    batch = make_batch(processor, ["ocr"], ["abc"])
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-2)
    before = {n: p.detach().clone() for n, p in trainable.items()}
    for _ in range(3):
        optimizer.zero_grad()
        loss = suffix_loss(model, batch)
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss) and all(not torch.equal(before[n], p) for n, p in trainable.items() if "lora_B" in n)

    quantized_logits = logits(model, batch)
    merged = unwrap(model)
    assert torch.equal(logits(model, batch), quantized_logits)  # the training model is left as it was
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in merged.modules())
    assert not any("lora" in n for n, _ in merged.named_parameters())
    # merged = dequantized NF4 base + B A * alpha / r, in float32
    weight = q_proj.base_layer.weight
    dequantized = bnb.functional.dequantize_4bit(weight.data, weight.quant_state).float()
    delta = q_proj.lora_B["default"].weight @ q_proj.lora_A["default"].weight * q_proj.scaling["default"]
    merged_q = merged.model.language_model.layers[0].self_attn.q_proj.weight
    assert merged_q.dtype == torch.float32
    torch.testing.assert_close(merged_q, dequantized + delta.detach(), rtol=0, atol=1e-6)

    merged.save_pretrained(tmp_path)
    reloaded = PaliGemmaForConditionalGeneration.from_pretrained(tmp_path)
    assert getattr(reloaded.config, "quantization_config", None) is None
    assert {p.dtype for p in reloaded.parameters()} == {torch.float32}
    # SigLIP: sdpa vs eager
    torch.testing.assert_close(logits(reloaded, batch), logits(merged, batch), rtol=0, atol=1e-5)
    # the same function as the 4-bit model, up to its bf16 compute (the weights are checked exactly above;
    # bf16 rounding moves single logits by ~0.02 as thread scheduling reorders sums; the packing bug gave 0.9)
    torch.testing.assert_close(logits(reloaded, batch), quantized_logits, rtol=0, atol=0.05)


def test_quantizing_without_lora_is_refused():
    with pytest.raises(ValueError, match="lora"):
        load(ModelSpec(name_or_path="tiny", quantize="nf4"))


@pytest.mark.slow
def test_flex_attention_computes_what_eager_does():
    """The GPU option `flex_attention` (forward only on the CPU) with the prefix-LM mask and left padding."""
    eager, processor = load(ModelSpec(name_or_path="tiny", image_size=224, patch_size=28))
    flex, _ = load(ModelSpec(name_or_path="tiny", image_size=224, patch_size=28, attn_implementation="flex_attention"))
    assert flex.config.text_config._attn_implementation == "flex_attention"
    batch = make_batch(processor, ["ocr", "ocr a longer prompt"], ["abc", "d"])
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(logits(flex, batch)[real], logits(eager, batch)[real], rtol=0, atol=1e-5)


def test_unknown_dtype_is_refused():
    from docvlm.errors import SettingsError

    with pytest.raises(SettingsError, match="model: dtype must be one of 'float32', 'bfloat16', 'float16', not 'int3'"):
        ModelSpec(name_or_path="tiny", dtype="int3")


def test_load_from_a_local_folder_applies_the_transfer_settings(tmp_path, tiny):
    """A folder in Hugging Face format with the HF defaults (soft-capping 30, window 4096) loads
    with soft-capping off and a global window, and decodes like the model it was saved from."""
    from docvlm.decode import Decoding, generate

    model, processor = tiny
    model.config.text_config.final_logit_softcapping = 30.0
    model.config.text_config.sliding_window = 4096
    try:
        model.save_pretrained(tmp_path)
        processor.save_pretrained(tmp_path)
    finally:
        apply_transfer_settings(model.config)
    loaded, loaded_processor = load(ModelSpec(name_or_path=str(tmp_path)))
    assert loaded.config.text_config.final_logit_softcapping is None
    assert loaded.config.text_config.sliding_window == GLOBAL_WINDOW
    assert loaded_processor.image_seq_length == processor.image_seq_length
    batch = make_batch(loaded_processor, ["ocr", "ocr two"])
    expected = generate(model, processor, batch, Decoding(), 6)
    assert generate(loaded.eval(), loaded_processor, batch, Decoding(), 6) == expected


@pytest.mark.slow
def test_896_px_patch_14_smoke_step_and_global_attention():
    """The real geometry: 4096 image tokens, so the sequence is longer than the HF default window.
    One training step runs; with the transfer settings the last positions see the first image tokens
    through the "sliding" layer too, which the HF default window of 4096 would hide."""
    from docvlm.model import build_tiny

    model, processor = build_tiny(image_size=896, patch_size=14)
    assert processor.image_seq_length == 4096
    batch = make_batch(processor, ["ocr"], ["abc"])
    assert batch["input_ids"].shape[1] > 4096
    loss = suffix_loss(model, batch)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)

    model.eval()
    global_logits = logits(model, batch)
    model.config.text_config.sliding_window = 4096  # the Hugging Face default
    windowed = logits(model, batch)
    torch.testing.assert_close(windowed[0, :4096], global_logits[0, :4096])  # within the window: same
    assert not torch.allclose(windowed[0, -4:], global_logits[0, -4:])  # beyond it: the window cuts
