"""Decoding: greedy or beam search over left-padded prompts with the KV cache, stopping at `<eos>`.

This is the one decoding path of docvlm: validation, test and predict (`DocVLM.decode`), `docvlm evaluate`,
`docvlm convert` and `docvlm.load(...)` all call `generate` with a `Decoding`, so they give the same text for
the same model, images and prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    """One decoded output: its text, and what went wrong while decoding (a loop stopped, the limit hit).

    With token scores asked for (`generate(..., token_scores=True)`, for tasks that `wants_token_scores`):
    `pieces`, each generated token's share of `text` (joined, they are `text`), and `probabilities`, the
    probability the model gave each of those tokens when it chose it (one per piece)."""

    text: str
    problems: list[str] = field(default_factory=list)
    pieces: list[str] | None = None
    probabilities: list[float] | None = None


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


class TokenProbabilities:
    """A `generate` logits processor (the last one) that keeps, at each step and for each sequence (beam), the
    `keep` most probable next tokens and their log-probabilities: the log-softmax of the step's logits, the
    distribution greedy search and beam search choose from. The chosen token is always among them (greedy
    takes the first; beam search takes its candidates, `keep` per batch item, from the best of each beam), so
    each generated token's probability is looked up after `generate` (`probabilities`) without holding a
    step's vocabulary-wide scores (257,216 floats a sequence, for PaliGemma) beyond that step, as `generate`'s
    `output_scores` would for the whole output. The kept tensors stay on the device (no synchronisation a step)."""

    def __init__(self, keep: int):
        self.keep = keep
        self.values: list = []
        self.indices: list = []

    def __call__(self, input_ids, scores):
        import torch

        values, indices = torch.log_softmax(scores.float(), dim=-1).topk(min(self.keep, scores.shape[-1]), dim=-1)
        self.values.append(values)
        self.indices.append(indices)
        return scores

    def probabilities(self, tokens, rows) -> np.ndarray:
        """(sequences, steps) probabilities of the generated `tokens`, each chosen at its step from the batch row
        (beam) `rows` gives (greedy: the sequence's own row); NaN where a token is not among the kept ones
        (after the steps recorded; or a logits processor after this one changed the choice)."""
        import torch

        steps = min(tokens.shape[1], len(self.values))
        result = np.full(tokens.shape, np.nan)
        if not steps:
            return result
        values = torch.stack(self.values[:steps], dim=1).cpu()  # (rows, steps, keep)
        indices = torch.stack(self.indices[:steps], dim=1).cpu()
        step = torch.arange(steps)
        kept_values, kept_indices = values[rows[:, :steps], step], indices[rows[:, :steps], step]  # (seqs, steps, keep)
        hit = kept_indices == tokens[:, :steps, None]
        found = hit.any(-1)
        chosen = torch.where(hit, kept_values, torch.zeros(())).sum(-1).exp()
        result[:, :steps] = torch.where(found, chosen, torch.full((), float("nan"))).double().numpy()
        return result


def token_pieces(tokenizer, tokens: Sequence[int], text: str) -> list[str]:
    """Each token's share of `text`, the tokens' decoding: the pieces join to `text`. Tokens decoded one by one
    give it where they add up to the text (Gemma's SentencePiece pieces and `<locNNNN>` tokens do); otherwise
    (a character split over byte-fallback tokens, a decoder that strips spaces) each token's piece is what it
    adds to the decoding of the tokens before it, and a character belongs to the token that completes it."""
    options = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}
    singles = tokenizer.batch_decode([[t] for t in tokens], **options)
    if "".join(singles) == text:
        return singles
    ends = [len(tokenizer.decode(list(tokens[: i + 1]), **options)) for i in range(len(tokens))]
    ends[-1:] = [len(text)] if ends else []
    for i in range(len(ends) - 2, -1, -1):  # a prefix ending inside a character decodes to U+FFFD (one too many)
        ends[i] = min(ends[i], ends[i + 1])
    return [text[start:end] for start, end in zip([0, *ends[:-1]], ends)]


def generate(model, processor, batch: dict, decoding: Decoding, max_new_tokens: int,
             token_scores: bool = False) -> list[Generation]:
    """The outputs for the prompts of a batch made by `docvlm.items.Collator` (no targets), on the
    model's device and in its dtype; with `token_scores`, each with its tokens' pieces and probabilities
    (`Generation`), at the cost of a softmax and a top-k over the vocabulary a step."""
    import torch
    from transformers import LogitsProcessorList, StoppingCriteriaList

    parameter = next(model.parameters())
    tensors = {k: batch[k].to(parameter.device) for k in ("input_ids", "attention_mask", "token_type_ids")}
    prompt_length = tensors["input_ids"].shape[1]
    window = guard_window(max_new_tokens)
    stopping = StoppingCriteriaList([RepetitionGuard(prompt_length, window)] if decoding.repetition_guard else [])
    tokenizer = processor.tokenizer
    # as many candidates a sequence as beam search keeps a batch item (`generate`'s `beams_to_keep`): 2 a beam
    recorder = TokenProbabilities(2 * decoding.num_beams) if token_scores else None
    beams = token_scores and decoding.num_beams > 1  # which beam each token came from: `beam_indices`
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
            logits_processor=LogitsProcessorList([recorder] if recorder else []),
            return_dict_in_generate=beams,
        )
    sequences, beam_indices = (output.sequences, output.beam_indices) if beams else (output, None)
    del output  # a dict output holds the whole KV cache too
    new = sequences[:, prompt_length:].cpu()
    texts = tokenizer.batch_decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    if recorder is not None:
        rows = (beam_indices.cpu().clamp(min=0) if beams  # -1 after a beam's end: those tokens are not read
                else torch.arange(len(new))[:, None].expand(-1, new.shape[1]))
        probabilities = recorder.probabilities(new, rows)
    results = []
    for n, (tokens, text) in enumerate(zip(new.numpy(), texts)):
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
        generation = Generation(text, problems)
        if recorder is not None and not np.isnan(probabilities[n, :length]).any():
            generation.pieces = token_pieces(tokenizer, tokens[:length].tolist(), text)
            generation.probabilities = probabilities[n, :length].tolist()
        results.append(generation)
    return results
