"""Length buckets of `docvlm convert` (`docvlm.batching`): the detail measure orders pages by how much is
written on them, batches are formed of pages of similar measure within bounded windows, every page is
converted once, and the texts are the same with buckets on and off."""

import json
import random

import pytest
from PIL import Image, ImageDraw

import docvlm.inference
from docvlm.batching import by_length, detail, window_batches
from docvlm.convert import main


def page(lines: int, background: str = "white", size: int = 448) -> Image.Image:
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    for i in range(lines):
        draw.text((10, 10 + 22 * i), f"line {i}: the quick brown fox jumps", fill="black", font_size=18)
    return image


def test_detail_grows_with_the_text_and_ignores_the_background_shade():
    measures = [detail(page(n)) for n in (0, 1, 4, 12)]
    assert measures[0] == 0 and measures == sorted(measures) and measures[-1] > 5 * measures[1]
    grey = detail(page(4, background=(200, 200, 200)))
    assert grey == pytest.approx(measures[2], rel=0.5) and grey < measures[3]


def windows(items: list, group: int, window: int) -> list[list]:
    """`items` cut as `by_length` reads them: runs of 1, 2, 4... groups, then of `window` groups."""
    runs, size = [], 1
    while items:
        runs.append(items[:size * group])
        items, size = items[size * group:], min(window, 2 * size)
    return runs


def test_batches_are_sorted_within_bounded_windows_and_hold_every_item_once():
    rng = random.Random(0)
    items = [{"index": i, "length": rng.random()} for i in range(50)] + [{"index": 50, "error": "bad"}]
    rng.shuffle(items)
    groups = [items[i:i + 4] for i in range(0, len(items), 4)]
    pulled = []

    def loader():
        for group in groups:
            pulled.append(group)
            yield group

    batches = []
    for batch in by_length(loader(), batch_size=4, window=3):
        assert len(pulled) - len(batches) <= 3  # never more than a window of pages held
        batches.append(batch)
    expected = [sorted(run, key=lambda item: item.get("length", -1)) for run in windows(items, 4, 3)]
    assert batches == [run[i:i + 4] for run in expected for i in range(0, len(run), 4)]
    assert sorted(item["index"] for batch in batches for item in batch) == list(range(51))


def test_window_holds_a_bounded_number_of_pages():
    assert window_batches(8, 896) == 8 and window_batches(32, 896) == 3 and window_batches(512, 896) == 2


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """20 pages of 0 to 19 lines, in a shuffled order."""
    folder = tmp_path_factory.mktemp("mixed")
    counts = list(range(20))
    random.Random(1).shuffle(counts)
    for i, n in enumerate(counts):
        page(n).save(folder / f"p{i:02d}-{n}lines.png")
    return folder


@pytest.mark.slow
def test_convert_forms_batches_of_similar_pages_and_gives_the_same_texts(mixed, tmp_path, monkeypatch):
    real, seen = docvlm.inference.decode_items, []

    def spy(model, processor, groups, *args):
        def recorded():
            for group in groups:
                seen.append([item["id"] for item in group])
                yield group
        return real(model, processor, recorded(), *args)

    monkeypatch.setattr(docvlm.inference, "decode_items", spy)
    texts = {}
    for flag in ("--length-buckets", "--no-length-buckets"):
        seen.clear()
        out = tmp_path / flag
        assert main(["--model", "tiny", "--task", "text", "--device", "cpu", "--max-new-tokens", "6", "--batch-size",
                     "4", "--num-workers", "1", flag, str(mixed), "--out", str(out)]) == 0
        rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
        assert sorted(r["id"] for r in rows) == sorted(p.stem for p in mixed.iterdir())  # each page once
        texts[flag] = {r["id"]: r["text"] for r in rows}
        lines = [[int(name.split("-")[1].removesuffix("lines")) for name in batch] for batch in seen]
        order = [int(p.stem.split("-")[1].removesuffix("lines")) for p in sorted(mixed.iterdir())]
        if flag == "--length-buckets":  # each window's pages sorted by line count, then cut into batches
            runs = [sorted(run) for run in windows(order, 4, 8)]
            assert lines == [run[i:i + 4] for run in runs for i in range(0, len(run), 4)]
        else:
            assert lines == [order[i:i + 4] for i in range(0, 20, 4)]
    assert texts["--length-buckets"] == texts["--no-length-buckets"]
