"""The systems of a score, each read on its own, joined into **kern pieces: a page's systems and those of the
pages that follow, where their spines agree.

A system joins the piece before it when it is on the same page or the next, its exclusive interpretations
(`**kern` per spine) and staves (`*staffN`, where written) are the piece's, and it starts with as many spines
as the piece ended with. It then continues the piece: its header and the piece's `*-` terminator go, its
own clef, key and meter records stay (restating them mid-piece is valid Humdrum, and they carry changes).
A system that disagrees starts a new piece, with a problem saying why; one without usable **kern cuts the
piece, with a problem; a page without systems ends a piece, without one (what follows is another score).
Several pieces make one file as consecutive Humdrum segments (`to_file`), which music21 reads as an Opus.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from docvlm.converters import kern


@dataclass
class System:
    """One system: its **kern (the music task's parsed value; None when unusable), its 1-based page, and how
    problems name it (e.g. `page 2, region 3`)."""

    kern: str | None
    page: int = 1
    name: str = ""


def join(systems: Iterable[System]) -> tuple[list[str], list[str]]:
    """The pieces (**kern texts, in order) the systems make and the problems that kept systems apart."""
    pieces: list[list[str]] = []  # each piece's records, its terminator included
    problems: list[str] = []
    last_page = None
    for n, system in enumerate(systems, 1):
        name = system.name or f"system {n}"
        repaired = kern.repair(system.kern) if system.kern else None
        adjacent = last_page is not None and 0 <= system.page - last_page <= 1
        last_page = system.page
        if repaired is None:
            problems.append(f"{name}: no usable **kern; the piece is cut there")
            last_page = None
            continue
        records = repaired.rstrip("\n").split("\n")
        why = _disagreement(pieces[-1], records) if pieces and adjacent else None
        if pieces and adjacent and why is None:
            pieces[-1] = pieces[-1][:-1] + records[1:]
            continue
        if why:
            problems.append(f"{name}: {why}; kept apart as a piece of its own")
        pieces.append(records)
    return ["\n".join(records) + "\n" for records in pieces], problems


def _disagreement(piece: list[str], system: list[str]) -> str | None:
    """Why `system` cannot continue `piece` (both as records), or None when their spines agree."""
    head, other = piece[0].split("\t"), system[0].split("\t")
    if head != other:
        return f"its spines {' '.join(other)} are not the piece's {' '.join(head)}"
    ending = len(piece[-1].split("\t"))
    if ending != len(other):
        return f"it starts with {len(other)} spines where the piece ends with {ending}"
    staves, theirs = _staves(piece), _staves(system)
    if staves != theirs:
        return f"its staves {' '.join(theirs)} are not the piece's {' '.join(staves)}"  # `*`: no staff written
    return None


def _staves(records: list[str]) -> list[str]:
    """The `*staffN` of each spine in the records before the first data or barline (`*` where none is written)."""
    staves = ["*"] * len(records[0].split("\t"))
    for record in records[1:]:
        fields = record.split("\t")
        if not record.startswith("*") or len(fields) != len(staves):
            break
        staves = [f if f.startswith("*staff") else s for f, s in zip(fields, staves)]
    return staves


def to_file(pieces: list[str]) -> str:
    """The pieces as one Humdrum file: consecutive segments, each from its `**kern` header to its `*-`."""
    return "".join(pieces)
