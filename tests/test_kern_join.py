"""`docvlm.converters.kern_join`: systems with agreeing spines become one piece that music21 reads; systems that
disagree are kept apart with a problem naming them; a page without music ends a piece."""

from __future__ import annotations

import random

import music21
import pytest

from docvlm.converters import kern, kern_join
from docvlm.converters.kern_join import System
from docvlm.pipeline.document import write_kern
from docvlm.pipeline.results import PageResult, RegionResult
from page_results import composed


def system(seed: int) -> str:
    """A synthetic two-staff system as the music task's parse repairs it."""
    from docvlm.converters.kern_synth import random_kern

    return kern.repair(random_kern(random.Random(seed)))


THREE_SPINES = "**kern\t**kern\t**kern\n*clefF4\t*clefG2\t*clefG2\n4C\t4c\t4cc\n=\t=\t=\n*-\t*-\t*-\n"
ENDS_SPLIT = "**kern\t**kern\n*clefF4\t*clefG2\n4C\t4c\n*\t*^\n4D\t4d\t4f\n=\t=\t=\n*-\t*-\t*-\n"


def read(text: str):
    return music21.converter.parse(text, format="humdrum")


def counts(score) -> tuple[int, int]:
    """Notes and chords, and measures of the lowest part."""
    return len(score.flatten().notes), len(score.parts[0].getElementsByClass(music21.stream.Measure))


def test_systems_of_a_page_and_the_next_make_one_piece_music21_reads():
    texts = [system(seed) for seed in (1, 2, 3)]
    pieces, problems = kern_join.join([System(texts[0], 1), System(texts[1], 1), System(texts[2], 2)])
    assert problems == [] and len(pieces) == 1
    (piece,) = pieces
    assert piece.startswith("**kern\t**kern\n") and piece.count("**kern") == 2 and piece.count("*-") == 2
    assert kern.check(piece) == []
    assert sorted(n.midi for n in kern.notes(piece)) == sorted(n.midi for t in texts for n in kern.notes(t))
    alone = [counts(read(t)) for t in texts]
    assert counts(read(piece)) == (sum(n for n, _ in alone), sum(m for _, m in alone))


STAVES = "**kern\t**kern\n*staff2\t*staff1\n4C\t4c\n*-\t*-\n"


@pytest.mark.parametrize(("odd", "whys"), [
    (THREE_SPINES, ["its spines **kern **kern **kern are not the piece's **kern **kern",
                    "its spines **kern **kern are not the piece's **kern **kern **kern"]),
    (STAVES, ["its staves *staff2 *staff1 are not the piece's * *",
              "its staves * * are not the piece's *staff2 *staff1"]),
])
def test_systems_whose_spines_disagree_are_kept_apart_with_a_problem(odd, whys):
    first, last = system(1), system(2)
    pieces, problems = kern_join.join([System(first, 1, "page 1, region 2"), System(odd, 1, "page 1, region 4"),
                                       System(last, 2, "page 2, region 1")])
    assert problems == [f"page 1, region 4: {whys[0]}; kept apart as a piece of its own",
                        f"page 2, region 1: {whys[1]}; kept apart as a piece of its own"]
    assert pieces == [first, odd, last]
    opus = read(kern_join.to_file(pieces))  # several pieces: one file of Humdrum segments, an Opus to music21
    assert [counts(score)[0] for score in opus.scores] == [counts(read(p))[0] for p in pieces]


def test_a_piece_ending_with_more_spines_than_the_next_system_starts_with_is_not_continued():
    pieces, problems = kern_join.join([System(ENDS_SPLIT, 1), System(system(2), 1, "the second")])
    assert len(pieces) == 2
    assert problems == ["the second: it starts with 2 spines where the piece ends with 3; kept apart as a piece of "
                        "its own"]


def test_pages_without_music_end_a_piece_and_unusable_systems_cut_it():
    texts = [system(seed) for seed in (1, 2, 3, 4)]
    pieces, problems = kern_join.join([System(texts[0], 1), System(texts[1], 3), System("hello", 3, "page 3, r 2"),
                                       System(texts[2], 3), System(None, 4, "page 4, r 1"), System(texts[3], 4)])
    assert pieces == [texts[0], texts[1], texts[2], texts[3]]
    assert problems == ["page 3, r 2: no usable **kern; the piece is cut there",
                        "page 4, r 1: no usable **kern; the piece is cut there"]
    assert kern_join.join([]) == ([], [])


def test_write_kern_joins_a_documents_music_regions_into_one_file(tmp_path):
    pages = [composed(seed, ("music", "text"), page=n, min_regions=4)[1] for n, seed in enumerate((0, 2), 1)]
    music = [r.value for page in pages for r in page.regions if r.label == "music"]
    assert len(music) >= 3
    (path,), problems = write_kern(tmp_path, "score", pages)
    assert path == tmp_path / "score.krn" and problems == []
    text = path.read_text(encoding="utf-8")
    assert text.count("**kern") == 2  # one piece
    assert counts(read(text))[0] == sum(counts(read(m))[0] for m in music)
    without = PageResult("a.png", None, 10, 10, regions=[RegionResult("text", (0, 0, 1, 1), task="text", value="x")])
    assert write_kern(tmp_path, "prose", [without]) == ([], []) and not (tmp_path / "prose.krn").exists()
