"""Pages per second of the page pipeline against converting the same crops one route at a time, page by page.

    python bench/bench_pipeline.py [--pages 48] [--max-new-tokens 16] [--batches 4 16] [--rounds 1]
                                   [--threads N] [--smoke]

Composed pages (`docvlm.converters.page_synth.random_page`: tables, molecules, piano systems and paragraphs,
3 to 6 regions a page, 896 px wide) with their true regions given (as `--regions` gives them: no layout
model); every label routed to the tiny PaliGemma 2 at 896 px / patch 56 (256 image tokens) with its task,
random weights that never emit `<eos>`, so every crop decodes its `--max-new-tokens`. In one process, on the
same crops (cut with the pipeline's margin) and the same decoding settings:
- baseline, what a user does without the pipeline: one `docvlm.load("tiny", task=...)` per route, then for each
  route and each page a `Model.__call__` on that page's crops of the route (batches of one page's crops);
- the pipeline: `docvlm.load_pipeline(...)(pages, regions=...)`, crops of one route from a window of pages
  (its default: 4 batches, at least 16 pages) decoded in the same batches.
Both sides' texts are checked equal region by region (same weights, same crops, same greedy decoding), so the
ratio is the gain of batching crops across pages alone. Models are loaded and warmed up before the clock.
`--smoke`: 3 pages, 2 new tokens, batch 4, to check that the script runs.
"""

from __future__ import annotations

import argparse
import os
import random
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

ROUTES = {"table": "tables", "molecule": "molecules", "music": "music", "text": "text"}  # label -> task


def make_pages(n: int, seed: int = 0) -> list[tuple]:
    """(page image, its true regions as fractions) of `n` composed pages."""
    from docvlm.converters.layout import Region
    from docvlm.converters.page_synth import random_page

    pages = []
    for i in range(n):
        page = random_page(random.Random(seed + i), tuple(ROUTES), 896, 3, 6, noise=False)
        w, h = page.size
        pages.append((page.image, [Region(r.label, (r.box[0] / w, r.box[1] / h, r.box[2] / w, r.box[3] / h))
                                   for r in page.regions]))
    return pages


def baseline(models: dict, pages: list[tuple], margin: float, decoding: dict) -> tuple[float, dict]:
    """(seconds, text by (page, box)): per route, per page, one call on that page's crops."""
    from docvlm.pipeline.crops import crop_image, with_margin

    texts = {}
    start = time.perf_counter()
    for label, model in models.items():
        for index, (image, regions) in enumerate(pages):
            mine = [r for r in regions if r.label == label]
            if not mine:
                continue
            crops = [crop_image(image, with_margin(r.box, margin)) for r in mine]
            for region, parsed in zip(mine, model(crops, **decoding)):
                texts[index, tuple(region.box)] = parsed.text
    return time.perf_counter() - start, texts


def ours(pipeline, pages: list[tuple]) -> tuple[float, dict]:
    """(seconds, text by (page, box)) of the pipeline on all pages."""
    start = time.perf_counter()
    results = pipeline([image for image, _ in pages], regions=[regions for _, regions in pages])
    seconds = time.perf_counter() - start
    texts = {}
    for index, result in enumerate(results):
        assert result.error is None, result.error
        for region in result.regions:
            assert region.source == "model" and not any("decoding failed" in p for p in region.problems), region
            texts[index, tuple(region.box)] = region.text
    return seconds, texts


class Batches:
    """The rows of each batch `docvlm.decode.generate` decodes, while in the `with` block."""

    def __enter__(self) -> list[int]:
        import docvlm.decode

        self.rows, self.real = [], docvlm.decode.generate

        def recording(model, processor, batch, *args, **kwargs):
            self.rows.append(len(batch["input_ids"]))
            return self.real(model, processor, batch, *args, **kwargs)

        docvlm.decode.generate = recording
        return self.rows

    def __exit__(self, *exc) -> None:
        import docvlm.decode

        docvlm.decode.generate = self.real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 16], help="batch sizes (default 4 16)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat both sides (default 1)")
    parser.add_argument("--threads", type=int, help="torch threads, for both sides (default torch's)")
    parser.add_argument("--smoke", action="store_true", help="3 pages, 2 new tokens, batch 4: that it runs")
    args = parser.parse_args()
    if args.smoke:
        args.pages, args.max_new_tokens, args.batches, args.rounds = 3, 2, [4], 1
    import torch
    import transformers

    import docvlm
    from docvlm.pipeline.spec import spec_from_dict

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    pages = make_pages(args.pages)
    n, crops = len(pages), sum(len(regions) for _, regions in pages)
    per_label = {label: sum(r.label == label for _, regions in pages for r in regions) for label in ROUTES}
    print(f"{n} pages, {crops} regions ({', '.join(f'{k} {v}' for k, v in per_label.items())}), "
          f"{args.max_new_tokens} new tokens each")
    spec = spec_from_dict({"routes": {label: {"model": "tiny", "task": task} for label, task in ROUTES.items()}},
                          "bench")
    models = {label: docvlm.load("tiny", device="cpu", task=task) for label, task in ROUTES.items()}
    for round_ in range(args.rounds):
        for batch in args.batches:
            decoding = {"batch_size": batch, "max_new_tokens": args.max_new_tokens}
            pipeline = docvlm.load_pipeline(spec, device="cpu", **decoding)
            ours(pipeline, pages[:1])  # the net loaded and the first call's set-up paid, as the baseline's
            for model in models.values():
                model([pages[0][0].crop((0, 0, 64, 64))], **decoding)
            with Batches() as base_rows:
                base, expected = baseline(models, pages, pipeline.margin, decoding)
            with Batches() as rows:
                seconds, texts = ours(pipeline, pages)
            assert texts == expected, "the pipeline's texts differ from the crops converted one page at a time"
            print(f"round {round_ + 1}, batch {batch:<2d}: per route and page {n / base:6.2f} pages/s "
                  f"({crops / len(base_rows):.1f} crops a batch) | pipeline {n / seconds:6.2f} pages/s "
                  f"({crops / len(rows):.1f} crops a batch, window {pipeline.window} pages) | "
                  f"{base / seconds:.2f}x; texts equal")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
