"""Kern -> images (verovio + cairosvg) and -> MusicXML / MIDI (music21).

verovio, cairosvg and music21 are imported inside the functions: together they take most of a second to
import, and `docvlm.tasks` imports every task module at start-up.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

from PIL import Image

from docvlm.converters import clip
from docvlm.converters.kern import to_humdrum


@functools.lru_cache(maxsize=1)
def _toolkit():
    import verovio

    verovio.enableLog(verovio.LOG_OFF)
    return verovio.toolkit()


def render_svg(kern: str, scale: int = 40, page_width: int = 2200) -> str:
    """One system of the score as SVG (no page breaks, page height fitted to the music)."""
    tk = _toolkit()
    tk.setOptions(
        {
            "pageWidth": page_width,
            "adjustPageHeight": True,
            "adjustPageWidth": True,
            "breaks": "none",
            "scale": scale,
            "header": "none",
            "footer": "none",
            "pageMarginTop": 50,
            "pageMarginBottom": 50,
            "pageMarginLeft": 50,
            "pageMarginRight": 50,
        }
    )
    if not tk.loadData(to_humdrum(kern)) or tk.getPageCount() < 1:
        raise ValueError("verovio could not load the kern text")
    return tk.renderToSVG(1)


def render(kern: str, scale: int = 40, page_width: int = 2200) -> Image.Image:
    """The score rasterised on white (RGB), about GrandStaff's resolution at the default scale."""
    import cairosvg

    png = cairosvg.svg2png(bytestring=render_svg(kern, scale, page_width).encode(), background_color="white")
    return Image.open(io.BytesIO(png)).convert("RGB")


def write_svg(kern: str, path: str | Path) -> Path:
    Path(path).write_text(render_svg(kern), encoding="utf-8")
    return Path(path)


def write_png(kern: str, path: str | Path) -> Path:
    render(kern).save(path)
    return Path(path)


def to_music21(kern: str):
    """A music21 Score from (b)ekern / kern text (raises what music21 raises on text it cannot read)."""
    import music21

    score = music21.converter.parse(to_humdrum(kern), format="humdrum")
    _measure_loose_notes(score)
    return score


def _measure_loose_notes(score) -> None:
    """music21's Humdrum reader leaves grace notes directly in the part, outside any measure, and its
    MusicXML writer then drops them: move each such note into the measure that contains its offset."""
    import music21

    for part in score.parts:
        measures = list(part.getElementsByClass(music21.stream.Measure))
        for note in list(part.getElementsByClass(music21.note.GeneralNote)):
            offset = part.elementOffset(note)
            before = [m for m in measures if part.elementOffset(m) <= offset]
            if before:
                part.remove(note)
                before[-1].insert(offset - part.elementOffset(before[-1]), note)


def write_musicxml(kern: str, path: str | Path) -> Path:
    return Path(to_music21(kern).write("musicxml", fp=str(path)))


def write_midi(kern: str, path: str | Path) -> Path:
    return Path(to_music21(kern).write("midi", fp=str(path)))


def export(kern: str | None, raw: str, stem: str | Path) -> tuple[list[Path], list[str]]:
    """`<stem>.krn` (the repaired `kern`, or the `raw` text when nothing was usable), then `.musicxml`, `.mid`,
    `.svg` and `.png` of what parses. Returns the paths written and what failed: music21 and verovio raise
    many types on odd input, and one failing file must not stop the rest."""
    krn = Path(f"{stem}.krn")  # not with_suffix: stems may hold dots
    krn.write_text(kern if kern is not None else raw, encoding="utf-8")
    written, problems = [krn], []
    if kern is None:
        return written, problems
    writers = ((".musicxml", write_musicxml), (".mid", write_midi), (".svg", write_svg), (".png", write_png))
    for suffix, write in writers:
        path = Path(f"{stem}{suffix}")
        try:
            write(kern, path)
            written.append(path)
        except Exception as e:  # noqa: BLE001  see the docstring
            problems.append(f"{path.name}: export failed ({type(e).__name__}: {clip(str(e))})")
    return written, problems


def musicxml_notes(path: str | Path) -> list[tuple]:
    """(onset, MIDI pitch, duration) of every note in a MusicXML file, onsets and durations in quarters."""
    from fractions import Fraction

    import music21

    score = music21.converter.parse(str(path))
    return [
        (Fraction(n.offset), p.midi, Fraction(n.duration.quarterLength))
        for n in score.flatten().notes
        for p in n.pitches
    ]
