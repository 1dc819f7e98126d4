"""`text`: an image of a line of text -> its transcription. The generic task of the core."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from docvlm.metrics.text import cer, exact_match
from docvlm.tasks.base import ImageMode, Metric, Sample, Task, register


@register
@dataclass
class TextTask(Task):
    """Image of text -> its transcription (reads the generic manifest; synthetic lines for demos).

    Attributes:
        synthetic_size: side of the square canvas synthetic lines are drawn on, in pixels.
        synthetic_words: most words (or numbers) in a synthetic line; short lines learn faster.
        synthetic_alphabet: when set, synthetic lines are instead random strings of these characters,
            `synthetic_min_chars`..`synthetic_max_chars` long, one character per square cell of side
            `synthetic_size / synthetic_max_chars` along the top, in Pillow's bundled font (the same on
            every machine): nothing to guess without reading (the demo's lines; a patch size equal to the
            cell makes each character one image token).
    """

    name = "text"
    metrics = (Metric("cer", higher_is_better=False, corpus=True, perfect=0.0), Metric("exact_match"))
    main_metric = "cer"
    prefix: str = "ocr"
    max_target_tokens: int = 128
    image_mode: ImageMode = "stretch"
    synthetic_size: int = 448
    synthetic_words: int = 6
    synthetic_alphabet: str = ""
    synthetic_min_chars: int = 3
    synthetic_max_chars: int = 5

    def synthesize(self, n: int, seed: int = 0) -> Iterator[Sample]:
        from docvlm.converters.text import random_glyphs, random_line, render_glyphs, render_line

        for i in range(n):
            rng = random.Random(f"{seed}:{i}")
            if self.synthetic_alphabet:
                text = random_glyphs(rng, self.synthetic_alphabet, self.synthetic_min_chars, self.synthetic_max_chars)
                image = render_glyphs(text, rng, self.synthetic_size, self.synthetic_max_chars)
            else:
                text = random_line(rng, self.synthetic_words)
                image = render_line(text, rng, self.synthetic_size)
            yield Sample(id=f"synthetic-{seed}-{i}", image=image, target=text)

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
        return {"cer": cer(predictions, references), "exact_match": exact_match(predictions, references)}
