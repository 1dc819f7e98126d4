"""Accuracy and speed of `docvlm.pipeline.orientation.detect` on composed pages, turned and skewed.

    python bench/bench_orientation.py [--seeds 100] [--first 1000]

Each page of `docvlm.converters.page_synth.random_page` (seeds `first`.. `first + seeds - 1`, half of them
with scan noise) is skewed by a random +-(0.5..3) degrees (an affine rotation, white ground) and turned by 0,
90, 180 and 270 degrees. A detection is right when its rotation is the one that turns the scan back and its
skew is within 0.3 degrees; unknown when its confidence is below `MIN_CONFIDENCE` (the page is then left as it
is); wrong otherwise. Sets: text-rich pages (text, titles, headers, captions and tables, at least 6 regions),
pages of every kind, pages of only molecules, pages of only music.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
from PIL import Image

from docvlm.converters.page_synth import random_page
from docvlm.pipeline.orientation import MIN_CONFIDENCE, detect

TEXT_RICH = ("text", "title", "section-header", "caption", "table")
SETS = {"text-rich": {"kinds": TEXT_RICH, "min_regions": 6}, "every kind": {},
        "molecules only": {"kinds": ("molecule",)}, "music only": {"kinds": ("music",)}}
TURN = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


def scan(page: Image.Image, rotation: int, skew: float) -> Image.Image:
    """`page` skewed `skew` degrees counter-clockwise, then turned so that `rotation` clockwise turns it back."""
    skewed = page.rotate(skew, resample=Image.Resampling.BICUBIC, fillcolor="white")
    return skewed.transpose(TURN[rotation]) if rotation else skewed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--first", type=int, default=1000)
    args = parser.parse_args()
    print("| pages | scans | right | unknown | wrong | skew error mean / max (right) | ms per scan |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, options in SETS.items():
        counts, errors, seconds = {"right": 0, "unknown": 0, "wrong": 0}, [], []
        for seed in range(args.first, args.first + args.seeds):
            page = random_page(random.Random(seed), noise=seed % 2 == 0, **options).image
            rng = random.Random(seed)
            for rotation in (0, 90, 180, 270):
                skew = rng.choice((-1, 1)) * rng.uniform(0.5, 3)
                image = scan(page, rotation, skew)
                start = time.perf_counter()
                found = detect(image)
                seconds.append(time.perf_counter() - start)
                if found.confidence < MIN_CONFIDENCE:
                    counts["unknown"] += 1
                elif found.rotation == rotation and abs(found.skew - skew) <= 0.3:
                    counts["right"] += 1
                    errors.append(abs(found.skew - skew))
                else:
                    counts["wrong"] += 1
        error = f"{np.mean(errors):.3f} / {max(errors):.3f}" if errors else "-"
        print(f"| {name} | {len(seconds)} | {counts['right']} | {counts['unknown']} | {counts['wrong']} | {error} | "
              f"{1000 * np.mean(seconds):.0f} |")


if __name__ == "__main__":
    main()
