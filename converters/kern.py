"""**kern (Humdrum) text of piano scores: GrandStaff targets, structural checks, repair.

Pure Python, so that checking model output needs no music21 or verovio (`kern_render` renders and exports).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from docvlm.converters import capped, quote

KernFormat = Literal["kern", "bekern"]

SEPARATORS = "·@"  # sub-token separators of the (b)ekern encodings
_HEADER = re.compile(r"^\*\*(?:b?e?kern)(?:_[0-9.]+)?$")
_MEASURE_NUMBER = re.compile(r"(?<==)\d+")
# A note or rest sub-token of **kern: opening slur/phrase/tie marks, duration (reciprocal, `%` for
# rational values, dots), pitch (one letter repeated for the octave) or rest, accidentals, then
# articulation, beam, tie, grace, stem and editorial signifiers.
_NOTE = re.compile(
    r"^[&({\[]*(?P<dur>\d+(?:%\d+)?\.*)?"
    r"(?P<pitch>(?P<letter>[a-gA-G])(?P=letter)*|r{1,2})"
    r"(?P<acc>#{1,3}|-{1,3}|n)?"
    r"(?P<rest>[LJKkqQ\[\]_(){};'\"~^`:/\\yxXvuOMmTtWwSs$RPpIi<>|!?N.0-9-]*)$"
)
_STEPS = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}


def strip_separators(text: str) -> str:
    """Remove the (b)ekern sub-token separators `·` and `@`."""
    return text.replace("·", "").replace("@", "")


def normalize(text: str, fmt: KernFormat = "kern") -> str:
    """A GrandStaff `.krn` / `.bekrn` file's text -> the training target, as SMT's `prepare_data` makes single
    systems (antoniorv6/SMT `data.py`). GrandStaff's `.bekrn` has `**ekern_1.0` headers and `·` between the
    sub-tokens of a token (`4·.·aa·-`).

    1. surrounding newlines and spaces are stripped (`strip("\\n ")`);
    2. the measure number after `=` is dropped (`=12` -> `=`, `=-` stays);
    3. `kern` targets: the `·` and `@` sub-token separators are removed (SMT replaces `·` by nothing);
       `bekern` targets keep them, so a tokenizer can see the sub-tokens;
    4. everything else is kept verbatim, the `**ekern_1.0` headers included (SMT's targets keep them, and the
       SMT / ScoreVision error rates are computed over them).
    """
    if fmt not in ("kern", "bekern"):
        raise ValueError(f"unknown kern format {fmt!r}; expected 'kern' or 'bekern'")
    text = _MEASURE_NUMBER.sub("", text.replace("\r\n", "\n").strip("\n "))
    return strip_separators(text) if fmt == "kern" else text


def to_humdrum(text: str) -> str:
    """Any (b)ekern target -> plain **kern that music21 and verovio read: separators removed, `**kern` headers."""
    lines = strip_separators(text).replace("\r\n", "\n").strip("\n").split("\n")
    out = []
    for line in lines:
        fields = line.split("\t")
        if all(f.startswith("**") for f in fields):
            fields = ["**kern" if _HEADER.match(f) else f for f in fields]
        out.append("\t".join(fields))
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class Note:
    """One sounding note: spine (0 = leftmost, the lowest staff), onset and duration in quarter notes."""

    spine: int
    onset: Fraction
    midi: int
    duration: Fraction
    grace: bool = False


def note_pitch(token: str) -> int | None:
    """MIDI number of a kern note sub-token (`cc#` -> 73), None for rests and malformed tokens."""
    m = _NOTE.match(token)
    if not m or m["pitch"].startswith("r"):
        return None
    pitch = m["pitch"]
    octave = 3 + len(pitch) if pitch[0].islower() else 4 - len(pitch)
    acc = m["acc"] or ""
    alter = len(acc) if acc.startswith("#") else -len(acc) if acc.startswith("-") else 0
    return 12 * (octave + 1) + _STEPS[pitch[0].lower()] + alter


def token_duration(token: str) -> Fraction | None:
    """Duration of a kern note/rest sub-token in quarter notes (0 for grace notes), None if malformed."""
    m = _NOTE.match(token)
    if not m:
        return None
    if "q" in (m["rest"] or "") or "Q" in (m["rest"] or ""):
        return Fraction(0)
    if not m["dur"]:
        return None
    digits = m["dur"].rstrip(".")
    dots = len(m["dur"]) - len(digits)
    num, _, den = digits.partition("%")
    recip = Fraction(int(num), int(den or 1))
    base = Fraction(8) * Fraction(2) ** (len(num) - 1) if recip == 0 else 4 / recip  # 0 = breve, 00 = longa
    return base * (2 - Fraction(1, 2**dots))


def _record_kind(field: str) -> str:
    if field.startswith("**"):
        return "exclusive"
    if field.startswith("*"):
        return "interpretation"
    if field.startswith("="):
        return "barline"
    if field.startswith("!"):
        return "comment"
    return "data"


def _next_spines(fields: list[str]) -> int:
    """Number of spines after an interpretation record (splits, merges, terminations, additions)."""
    count, i = 0, 0
    while i < len(fields):
        f = fields[i]
        if f == "*v":
            j = i
            while j < len(fields) and fields[j] == "*v":
                j += 1
            count += 1 if j - i >= 2 else j - i  # a lone *v merges nothing
            i = j
            continue
        count += {"*^": 2, "*-": 0, "*+": 2}.get(f, 1)
        i += 1
    return count


def check(text: str) -> list[str]:
    """Everything structurally wrong with a **kern / (b)ekern text (empty list = well formed)."""
    return scan(text)[1]


def repair(text: str) -> str | None:
    """The text made into valid **kern (see `scan`); None when nothing usable is left."""
    return scan(text)[0]


def scan(text: str) -> tuple[str | None, list[str]]:
    """Check and repair in one pass: returns (repaired **kern or None, problems).

    Checked record by record: exclusive interpretations first, one field per active spine on every record,
    spine splits `*^`, merges `*v`, terminations `*-` and additions `*+` change the number of spines, a record
    is all interpretations, all barlines, all comments or all data, every data sub-token is a note, a rest or
    a null token, and (for otherwise well-formed text) no spine starts a note before its previous one ends
    and all spines reach each barline together. The repair pads or cuts ragged records, drops malformed
    sub-tokens and adds a missing header or terminator, so that a partly wrong prediction still renders and
    exports.
    """
    problems: list[str] = []
    lines = strip_separators(text).replace("\r\n", "\n").split("\n")
    numbered = [(n, ln) for n, ln in enumerate(lines, 1) if ln.strip()]
    if not numbered:
        return None, ["empty transcription"]
    first = numbered[0][1].split("\t")
    spines = len(first)
    if all(f.startswith("**") for f in first):
        numbered = numbered[1:]
    else:
        problems.append(f"line {numbered[0][0]}: no exclusive interpretation (**kern) header")
    out = ["\t".join(["**kern"] * spines)]
    terminated = False
    n_data = 0
    for number, line in numbered:
        if terminated:
            problems.append(f"line {number}: text after the *- terminator")
            break
        fields = line.split("\t")
        kinds = {_record_kind(f) for f in fields}
        if len(kinds) > 1:
            problems.append(f"line {number}: mixes {', '.join(sorted(kinds))} fields in one record")
        kind = _record_kind(next((f for f in fields if f), ""))
        if len(fields) != spines:
            problems.append(f"line {number}: {len(fields)} fields for {spines} active spines")
            filler = {"interpretation": "*", "barline": "=", "comment": "!"}.get(kind, ".")
            fields = (fields + [filler] * spines)[:spines]
        if kind == "exclusive":
            problems.append(f"line {number}: exclusive interpretation after the header")
            continue
        if kind == "interpretation":
            fields = [f if _record_kind(f) == "interpretation" else "*" for f in fields]
            if "*+" in fields:  # needs a **kern record for the new spine next; verovio segfaults without
                problems.append(f"line {number}: spine addition *+ is not supported; read as *")
                fields = ["*" if f == "*+" else f for f in fields]
            if all(f == "*-" for f in fields):
                terminated = True
                continue
            fields = _fix_merges(fields, number, problems)
            new = _next_spines(fields)
            if new == 0:
                terminated = True
                continue
            spines = new
        elif kind == "barline":
            fields = [f if f.startswith("=") else "=" for f in fields]
        elif kind == "comment":
            fields = [f if f.startswith("!") else "!" for f in fields]
        else:
            fields = [_fix_data_field(f, number, i + 1, problems) for i, f in enumerate(fields)]
            n_data += any(f != "." for f in fields)
        out.append("\t".join(fields))
    if not terminated:
        problems.append("no *- terminator at the end")
    if n_data == 0:
        problems.append("no data records (notes or rests)")
        return None, capped(problems)
    out.append("\t".join(["*-"] * spines))
    repaired = "\n".join(out) + "\n"
    if not problems:  # the text is the repaired text: line numbers of rhythm problems stay right
        problems = rhythm_problems(repaired)
    return repaired, capped(problems)


def _fix_merges(fields: list[str], number: int, problems: list[str]) -> list[str]:
    """A lone `*v` (nothing beside it to merge with) is an error: it becomes a null interpretation."""
    fixed = list(fields)
    for i, f in enumerate(fields):
        if f == "*v" and not (i > 0 and fields[i - 1] == "*v") and not (i + 1 < len(fields) and fields[i + 1] == "*v"):
            problems.append(f"line {number}: spine merge *v in spine {i + 1} has no neighbour to merge with")
            fixed[i] = "*"
    return fixed


def _fix_data_field(field: str, number: int, spine: int, problems: list[str]) -> str:
    if field == ".":
        return field
    if not field:
        problems.append(f"line {number}: empty field in spine {spine}")
        return "."
    good = []
    for sub in field.split(" "):
        if _NOTE.match(sub) and token_duration(sub) is not None:
            good.append(sub)
        else:
            problems.append(f"line {number}: malformed token {quote(sub)} in spine {spine}")
    return " ".join(good) if good else "."


def notes(text: str) -> list[Note]:
    """The notes of a well-formed **kern text, with onsets from the records' rhythm (grace notes take no time).

    Spines are numbered left to right as they stand at each record; a split spine's second half gets the
    next number, so compare note sets by (onset, pitch, duration) when splits may differ.
    """
    return _walk(text)[0]


def rhythm_problems(text: str) -> list[str]:
    """Rhythm errors of a well-formed **kern text: a spine starting a note or rest before its previous one
    has ended, or spines reaching a barline at different times."""
    return _walk(text)[1]


def _walk(text: str) -> tuple[list[Note], list[str]]:
    result: list[Note] = []
    problems: list[str] = []
    numbered = [(n, ln) for n, ln in enumerate(strip_separators(text).split("\n"), 1) if ln.strip()]
    if not numbered:
        return result, problems
    ends: list[Fraction] = [Fraction(0)] * len(numbered[0][1].split("\t"))
    time = Fraction(0)
    for number, line in numbered[1:]:
        fields = line.split("\t")
        kind = _record_kind(fields[0])
        if kind == "interpretation":
            ends = _carry_ends(fields, ends)
            continue
        if kind == "barline" and any(e != time for e in ends):
            problems.append(f"line {number}: spines reach the barline at different times")
            ends = [max(ends)] * len(ends)
            time = max(ends)
        if kind != "data":
            continue
        for spine, field in enumerate(fields[: len(ends)]):
            if field == ".":
                continue
            longest = Fraction(0)
            for sub in field.split(" "):
                dur = token_duration(sub)
                if dur is None:
                    continue
                midi = note_pitch(sub)
                if midi is not None:
                    result.append(Note(spine, time, midi, dur, grace=dur == 0))
                longest = max(longest, dur)
            if longest:
                if ends[spine] > time:
                    problems.append(f"line {number}: spine {spine + 1} starts a new note before its previous one ends")
                ends[spine] = time + longest
        later = [e for e in ends if e > time]
        time = min(later) if later else time
    return result, problems


def _carry_ends(fields: list[str], ends: list[Fraction]) -> list[Fraction]:
    """Per-spine end times across splits, merges and terminations."""
    new: list[Fraction] = []
    i = 0
    while i < len(fields) and i < len(ends):
        f = fields[i]
        if f == "*v":
            j = i
            while j < len(fields) and fields[j] == "*v":
                j += 1
            new.append(max(ends[i:j]))
            i = j
            continue
        if f in ("*^", "*+"):
            new.extend([ends[i], ends[i]])
        elif f != "*-":
            new.append(ends[i])
        i += 1
    return new
