"""Batches of pages of similar expected output length, for `docvlm convert`.

Batched greedy decoding runs until the longest output of a batch ends, so one long page among short ones
makes every row of its batch pay for its length. Before decoding, the amount of detail in a fitted page
(how much its neighbouring pixels differ: text, rules and drawings, whatever the background's shade) is a
cheap estimate of how much there is to transcribe. Pages are sorted by it within a window of a few
batches, so memory stays bounded and no page is held back for long.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain

import numpy as np
from PIL import Image

WINDOW_BYTES = 256 * 2**20  # fitted pixels held for sorting (~100 pages at 896 px)
WINDOW_BATCHES = 8  # at most; at least 2


def detail(image: Image.Image) -> float:
    """Mean absolute difference of horizontally neighbouring grey levels, at half resolution: about zero
    for an empty page, more the more there is written or drawn on it."""
    grey = np.asarray(image.convert("L").reduce(2), dtype=np.int16)
    return float(np.abs(np.diff(grey, axis=1)).mean())


def window_batches(batch_size: int, image_size: int) -> int:
    """Batches sorted together: as many as `WINDOW_BYTES` of RGB pages hold, 2 to `WINDOW_BATCHES`."""
    pages = WINDOW_BYTES // (3 * image_size * image_size)
    return max(2, min(WINDOW_BATCHES, pages // batch_size))


def by_length(groups: Iterable[list[dict]], batch_size: int, window: int) -> Iterator[list[dict]]:
    """The items of `groups` (each once) in batches of `batch_size`, sorted by expected length (`length`
    of each item, a number; items without one, e.g. a page that failed to load, come first) within each
    run of `window` groups. The first runs are 1, 2, 4... groups, so decoding starts without waiting for a
    whole window to load."""
    groups, size = iter(groups), 1
    while True:
        items = list(chain.from_iterable(next(groups, []) for _ in range(size)))
        if not items:
            return
        items.sort(key=lambda item: item.get("length", -1.0))
        for start in range(0, len(items), batch_size):
            yield items[start:start + batch_size]
        size = min(window, 2 * size)
