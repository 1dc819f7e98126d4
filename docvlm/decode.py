"""Decoding: greedy or beam search over left-padded prompts with the KV cache, stopping at `<eos>`.

This is the one decoding path of docvlm: validation, test and predict (`DocVLM.decode`), `docvlm evaluate`,
`docvlm convert` and `docvlm.load(...)` all call `generate` with a `Decoding`, so they give the same text for
the same model, images and prompts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAX_BEAMS = 64  # beams multiply the batch and its cache; wider beams than this are no decoding setting


@dataclass
class Decoding:
    """How predictions are decoded.

    Attributes:
        num_beams: 1 is greedy (the paper's choice for reports); more runs beam search.
        max_new_tokens: longest output; default the task's `max_target_tokens`.
        repetition_guard: stop a sequence whose last N generated tokens are one short pattern repeated
            (at least 4 times), with N = max(128, half the output budget): a fine-tuned model can loop on
            a table row or a kern line until the token limit. The other sequences of the batch go on, and
            the output's problems say so. `false` turns it off.
    """

    num_beams: int = 1
    max_new_tokens: int | None = None
    repetition_guard: bool = True

    def __post_init__(self) -> None:
        """Settings from a config, a model's `docvlm.json` or a flag: wrong ones stop before any page."""
        from docvlm.errors import check_range, check_types
        from docvlm.tasks.base import MAX_NEW_TOKENS

        check_types(self, "decoding")
        check_range("decoding", "num_beams", self.num_beams, 1, MAX_BEAMS)
        if self.max_new_tokens is not None:
            check_range("decoding", "max_new_tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS)


@dataclass
class Generation:
    """One decoded output: its text, and what went wrong while decoding (a loop stopped, the limit hit)."""

    text: str
    problems: list[str] = field(default_factory=list)


MIN_REPEATS = 4


def guard_window(max_new_tokens: int) -> int:
    """Tokens that must be one repeated pattern before a sequence counts as stuck: long enough that a
    table of many equal rows or a score of repeated bars never trips it (half the budget of pure
    repetition), short enough to save half of a looping output's budget."""
    return max(128, max_new_tokens // 2)


def repeating_period(tokens: np.ndarray, window: int) -> int | None:
    """The shortest period p (repeated at least `MIN_REPEATS` times) of the last `window` tokens, or None."""
    if len(tokens) < window:
        return None
    tail = tokens[-window:]
    periods = np.arange(1, window // MIN_REPEATS + 1)
    candidates = np.ones(len(periods), dtype=bool)
    for k in range(1, 9):  # a cheap filter first: the last 8 tokens recur `period` tokens earlier
        candidates &= tail[-k] == tail[-k - periods]
    for period in periods[candidates]:
        if np.array_equal(tail[period:], tail[:-period]):
            return int(period)
    return None


class RepetitionGuard:
    """A `generate` stopping criterion: stops each sequence whose generated tail is stuck in a loop (see
    `Decoding.repetition_guard`). Checked every `stride` tokens (a loop found a few tokens late costs
    nothing), on the CPU. (A plain callable: `transformers` is imported only when decoding.)"""

    def __init__(self, prompt_length: int, window: int, stride: int = 8):
        self.prompt_length, self.window, self.stride = prompt_length, window, stride

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        generated = input_ids.shape[1] - self.prompt_length
        stuck = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if generated < self.window or generated % self.stride:
            return stuck
        tails = input_ids[:, -self.window:].cpu().numpy()
        for row, tail in enumerate(tails):
            stuck[row] = repeating_period(tail, self.window) is not None
        return stuck


def generate(model, processor, batch: dict, decoding: Decoding, max_new_tokens: int) -> list[Generation]:
    """The outputs for the prompts of a batch made by `docvlm.items.Collator` (no targets), on the
    model's device and in its dtype."""
    import torch
    from transformers import StoppingCriteriaList

    parameter = next(model.parameters())
    tensors = {k: batch[k].to(parameter.device) for k in ("input_ids", "attention_mask", "token_type_ids")}
    prompt_length = tensors["input_ids"].shape[1]
    window = guard_window(max_new_tokens)
    stopping = StoppingCriteriaList([RepetitionGuard(prompt_length, window)] if decoding.repetition_guard else [])
    tokenizer = processor.tokenizer
    with torch.no_grad():
        output = model.generate(
            **tensors,
            pixel_values=batch["pixel_values"].to(parameter.device, parameter.dtype),
            max_new_tokens=max_new_tokens,
            num_beams=decoding.num_beams,
            do_sample=False,
            use_cache=True,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            stopping_criteria=stopping,
        )
    new = output[:, prompt_length:].cpu()
    texts = tokenizer.batch_decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    results = []
    for tokens, text in zip(new.numpy(), texts):
        # a sequence ends at its <eos>; one stopped by the guard is padded from there on
        ends = np.flatnonzero((tokens == tokenizer.eos_token_id) | (tokens == tokenizer.pad_token_id))
        length = int(ends[0]) if len(ends) else len(tokens)
        ended_by_eos = length < len(tokens) and tokens[length] == tokenizer.eos_token_id
        problems = []
        period = None if ended_by_eos or not decoding.repetition_guard else repeating_period(tokens[:length], window)
        if period is not None:
            problems.append(f"decoding stopped: the output repeated a {period}-token pattern for {window} tokens")
        elif not ended_by_eos and length >= max_new_tokens:
            problems.append(f"output cut at max_new_tokens={max_new_tokens} (no end of sequence)")
        results.append(Generation(text, problems))
    return results
