"""Random two-staff piano excerpts written directly as **kern text (music21 has no Humdrum writer and
verovio's MusicXML -> Humdrum conversion crashes, so the kern is written here).

An excerpt has a key (up to 6 sharps or flats), a meter, 2 to 5 measures; each staff holds notes, chords,
rests, accidentals outside the key, ties, beamed groups of eighths, sixteenths and eighth triplets, and
some measures split a staff into two voices (`*^` before the measure, `*v *v` after it, one merge
record per staff since adjacent `*v` all merge into one spine). The voices of a
measure are merged onto one timeline: one record per onset, `.` where a spine has nothing new.
"""

from __future__ import annotations

import random
import re
from fractions import Fraction as F

_LETTERS = "cdefgab"
_SHARPS = "fcgdaeb"  # order of sharps (and, reversed, of flats) in key signatures
_METERS = [(2, 4), (3, 4), (4, 4), (2, 2), (3, 8), (6, 8)]
# (duration in quarters, kern reciprocal); triplet eighths (12) are drawn as whole groups of three
_DURATIONS = [(F(4), "1"), (F(3), "2."), (F(2), "2"), (F(3, 2), "4."), (F(1), "4"), (F(3, 4), "8."), (F(1, 2), "8"),
              (F(1, 4), "16")]
_WEIGHTS = [1, 1, 3, 2, 6, 1, 6, 4]
_RANGES = {"F4": (-10, 4), "G2": (0, 14)}  # diatonic steps from middle C (c = 0) that each clef draws from


def key_alterations(fifths: int) -> dict[str, int]:
    """Letter -> alteration of a key signature with `fifths` sharps (> 0) or flats (< 0)."""
    if fifths >= 0:
        return {letter: 1 for letter in _SHARPS[:fifths]}
    return {letter: -1 for letter in _SHARPS[::-1][:-fifths]}


def key_signature(fifths: int) -> str:
    """The kern key-signature interpretation, e.g. `*k[b-e-a-]`."""
    letters = _SHARPS[:fifths] if fifths >= 0 else _SHARPS[::-1][:-fifths]
    return "*k[" + "".join(letter + ("#" if fifths > 0 else "-") for letter in letters) + "]"


def pitch_token(step: int, alter: int, key: dict[str, int]) -> str:
    """Kern pitch of diatonic `step` (0 = middle C) with `alter` semitones; `n` marks a natural against the key."""
    letter = _LETTERS[step % 7]
    octave = step // 7  # 0 is the octave from middle C up
    name = letter * (octave + 1) if octave >= 0 else letter.upper() * (-octave)
    acc = "#" * alter if alter > 0 else "-" * -alter if alter < 0 else ("n" if key.get(letter) else "")
    return name + acc


def _rhythm(rng: random.Random, length: F, beat: F) -> list[tuple[F, str, bool]]:
    """Durations filling `length` quarters: (duration, reciprocal, is_triplet)."""
    out: list[tuple[F, str, bool]] = []
    pos = F(0)
    while pos < length:
        left = length - pos
        if left >= 1 and pos % 1 == 0 and rng.random() < 0.08:
            out += [(F(1, 3), "12", True)] * 3
            pos += 1
            continue
        choices = [(d, r) for d, r in _DURATIONS if d <= left and (d <= beat or pos % beat == 0)]
        weights = [w for (d, _), w in zip(_DURATIONS, _WEIGHTS) if (d, _) in choices]
        d, r = rng.choices(choices, weights)[0]
        out.append((d, r, False))
        pos += d
    return out


def _beam(events: list[list], beat: F) -> None:
    """Add L/J beams to runs of equal short notes inside one beat (events: [onset, dur, recip, tokens])."""
    i = 0
    while i < len(events):
        onset, dur, recip, tokens = events[i]
        j = i
        if dur < 1 and "r" not in tokens[0]:
            while (
                j + 1 < len(events)
                and events[j + 1][1] == dur
                and "r" not in events[j + 1][3][0]
                and events[j + 1][0] // beat == onset // beat
            ):
                j += 1
        if j > i:
            level = 2 if dur <= F(1, 4) else 1
            events[i][3][0] += "L" * level  # as in GrandStaff, only a chord's first note carries the beam
            events[j][3][0] += "J" * level
        i = j + 1


def _voice(rng: random.Random, length: F, beat: F, low: int, high: int, key: dict[str, int]) -> list[list]:
    """One voice of one measure: [onset, duration, recip, sub-tokens] per event."""
    events = []
    onset = F(0)
    for dur, recip, _ in _rhythm(rng, length, beat):
        if rng.random() < 0.15:
            tokens = [recip + "r"]
        else:
            step = rng.randint(low, high)
            steps = [step]
            if rng.random() < 0.25:  # chord: add a third, fourth or sixth above
                steps.append(step + rng.choice((2, 3, 5)))
                if rng.random() < 0.3:
                    steps.append(steps[-1] + 2)
            tokens = []
            for s in steps:
                alter = key.get(_LETTERS[s % 7], 0)
                if rng.random() < 0.08:
                    alter += rng.choice((-1, 1))
                tokens.append(recip + pitch_token(s, max(-2, min(2, alter)), key))
        events.append([onset, dur, recip, tokens])
        onset += dur
    for a, b in zip(events, events[1:]):  # ties: repeat a single note into the next event
        if len(a[3]) == 1 and "r" not in a[3][0] and "]" not in a[3][0] and rng.random() < 0.06:
            pitch = a[3][0][len(a[2]):]
            a[3] = ["[" + a[3][0]]
            b[3] = [b[2] + pitch + "]"]
    _beam(events, beat)
    return events


def random_kern(rng: random.Random) -> str:
    """A random two-staff piano excerpt as **kern text (left spine = lower staff, as in GrandStaff)."""
    fifths = rng.randint(-6, 6)
    key = key_alterations(fifths)
    num, den = rng.choice(_METERS)
    length = F(4 * num, den)
    beat = F(3, 2) if den == 8 and num % 3 == 0 else F(4, den) if den <= 4 else F(1, 2)
    clefs = ["F4" if rng.random() < 0.85 else "G2", "G2"]
    lines = [
        "**kern\t**kern",
        f"*clef{clefs[0]}\t*clef{clefs[1]}",
        f"{key_signature(fifths)}\t{key_signature(fifths)}",
        f"*M{num}/{den}\t*M{num}/{den}",
    ]
    for _ in range(rng.randint(2, 5)):
        staves = []  # per staff: list of voices
        for clef in clefs:
            low, high = _RANGES[clef]
            if rng.random() < 0.2:
                mid = (low + high) // 2
                staves.append([_voice(rng, length, beat, mid, high, key), _voice(rng, length, beat, low, mid, key)])
            else:
                staves.append([_voice(rng, length, beat, low, high, key)])
        split = [len(voices) == 2 for voices in staves]
        if any(split):
            lines.append("\t".join("*^" if s else "*" for s in split))
        spines = [voice for voices in staves for voice in voices]
        onsets = sorted({e[0] for voice in spines for e in voice})
        by_onset = [{e[0]: " ".join(e[3]) for e in voice} for voice in spines]
        for onset in onsets:
            lines.append("\t".join(tokens.get(onset, ".") for tokens in by_onset))
        for k in (k for k, s in enumerate(split) if s):  # one merge record per staff: adjacent *v all merge
            lines.append("\t".join("*v\t*v" if i == k else "*\t*" if split[i] and i > k else "*" for i in range(2)))
        lines.append("=\t=")
    lines.append("*-\t*-")
    return "\n".join(lines)


def to_bekern(kern: str) -> str:
    """Kern -> bekern-style text: `·` between the duration, dots, pitch, accidental and each further
    signifier of every note token (the GrandStaff `.bekrn` convention; other records are unchanged)."""
    part = re.compile(r"\d+|\.+|([a-gA-G])\1*|r+|#+|-+|.")
    out = []
    for line in kern.split("\n"):
        fields = line.split("\t")
        if fields[0][:1] in ("*", "=", "!"):
            out.append(line)
            continue
        out.append("\t".join(" ".join("·".join(m.group(0) for m in part.finditer(t)) for t in f.split(" "))
                              if f != "." else f for f in fields))
    return "\n".join(out)
