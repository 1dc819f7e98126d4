"""Decoding: greedy or beam search over left-padded prompts with the KV cache, stopping at `<eos>`."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Decoding:
    """How predictions are decoded.

    Attributes:
        num_beams: 1 is greedy (the paper's choice for reports); more runs beam search.
        max_new_tokens: longest output; default the task's `max_target_tokens`.
    """

    num_beams: int = 1
    max_new_tokens: int | None = None


@torch.no_grad()
def generate(model, processor, batch: dict, decoding: Decoding, max_new_tokens: int) -> list[str]:
    """Texts generated after each prompt of a batch made by `docvlm.data.Collator` (no targets)."""
    prompt = batch["input_ids"]
    dtype = next(model.parameters()).dtype
    output = model.generate(
        input_ids=prompt,
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
        pixel_values=batch["pixel_values"].to(dtype),
        max_new_tokens=max_new_tokens,
        num_beams=decoding.num_beams,
        do_sample=False,
        use_cache=True,
        eos_token_id=processor.tokenizer.eos_token_id,
        pad_token_id=processor.tokenizer.pad_token_id,
    )
    return processor.tokenizer.batch_decode(
        output[:, prompt.shape[1]:], skip_special_tokens=True, clean_up_tokenization_spaces=False
    )
