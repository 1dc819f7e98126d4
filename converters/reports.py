"""Free-text radiology reports <-> sections, and the FINDINGS + IMPRESSION target of report generation.

MIMIC-CXR reports are plain text with upper-case headers ending in a colon (`INDICATION:`,
`COMPARISON:`, `FINDINGS:`, `IMPRESSION:`, ...), sometimes with text on the header's line, lines
wrapped at ~80 columns, numbered lists, `___` where de-identification removed words, and any section
missing. `parse_report` splits such text into named sections (synonyms mapped to one name, e.g.
`HISTORY:`/`REASON FOR EXAM:` -> `indication`, `CONCLUSION:` -> `impression`); unknown upper-case
headers are kept as their own sections; whitespace (wrapped lines, blank lines) is collapsed to single
spaces so the target has one canonical form.

The training target is `FINDINGS: <findings> IMPRESSION: <impression>` (each marker only when its
section is present), the per-sample prompt part is the INDICATION; `parse_target` reads a generated
target back and lists what is wrong with it instead of raising.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

FINDINGS_MARKER = "FINDINGS:"
IMPRESSION_MARKER = "IMPRESSION:"
TARGET_SECTIONS = ("findings", "impression")

# Header spellings (lower case, single spaces) -> canonical section name.
SYNONYMS: dict[str, str] = {
    **dict.fromkeys(
        ["indication", "indications", "history", "clinical history", "clinical indication", "clinical information",
         "reason for exam", "reason for examination", "reason for study", "indication for exam",
         "indication for examination", "reason for the exam", "clinical history and indication"],
        "indication",
    ),
    **dict.fromkeys(["comparison", "comparisons", "comparison study", "comparison studies", "prior studies"],
                    "comparison"),
    **dict.fromkeys(["technique", "procedure", "views"], "technique"),
    **dict.fromkeys(["examination", "exam", "study"], "examination"),
    **dict.fromkeys(["findings", "finding", "findings and impression", "findings/impression"], "findings"),
    **dict.fromkeys(["impression", "impressions", "conclusion", "conclusions", "summary", "opinion"], "impression"),
}
# Headers recognised in any case at a line start but kept under their own name.
OTHER_HEADERS = ("wet read", "notification", "recommendation", "recommendations", "addendum", "note")


def _alternation(names) -> str:
    return "|".join(re.escape(n).replace(r"\ ", r"[ \t]+") for n in sorted(names, key=len, reverse=True))


_KNOWN = [*SYNONYMS, *OTHER_HEADERS]
# Generic words that are headers only at a line start ("PA AND LATERAL VIEWS:" is not a VIEWS section).
_LINE_START_ONLY = {"views", "study", "exam", "procedure", "note", "summary", "opinion", "finding"}
_INLINE = [n for n in _KNOWN if n not in _LINE_START_ONLY]
# Known headers: at a line start in any case; inside a line in upper case (one-line reports, model
# output) or in any case after the end of a sentence.
_HEADER = re.compile(
    rf"(?im:^[ \t]*(?P<start>{_alternation(_KNOWN)})[ \t]*:)"
    rf"|(?<![A-Za-z])(?P<inline>{_alternation(n.upper() for n in _INLINE)})[ \t]*:"
    rf"|(?:(?<=[.!?] )|(?<=[.!?]  ))(?i:(?P<sentence>{_alternation(_INLINE)}))[ \t]*:"
    r"|(?m:^[ \t]*(?P<other>[A-Z][A-Z /&()-]{2,40}?)[ \t]*:)"
)


@dataclass
class Report:
    """A report as ordered sections (name -> text with collapsed whitespace) and the text before them."""

    sections: dict[str, str] = field(default_factory=dict)
    preamble: str = ""

    def get(self, name: str) -> str:
        return self.sections.get(name, "")

    @property
    def indication(self) -> str:
        return self.get("indication")

    @property
    def findings(self) -> str:
        return self.get("findings")

    @property
    def impression(self) -> str:
        return self.get("impression")

    def to_json(self) -> str:
        return json.dumps({"preamble": self.preamble, "sections": self.sections}, indent=2, ensure_ascii=False)


def normalize(text: str) -> str:
    """Collapse wrapped lines, blank lines and runs of spaces to single spaces."""
    return " ".join(text.split())


def section_name(header: str) -> str:
    """Canonical name of a header (`CLINICAL  HISTORY` -> `indication`; unknown ones lower-cased)."""
    key = " ".join(header.lower().split())
    return SYNONYMS.get(key, key)


def parse_report(text: str) -> Report:
    """Split a report into sections. Repeated sections are joined; text before any header is the preamble."""
    report = Report()
    matches = list(_HEADER.finditer(text))
    report.preamble = normalize(text[: matches[0].start()] if matches else text)
    for match, following in zip(matches, [*matches[1:], None]):
        header = next(h for h in match.groups() if h)
        body = normalize(text[match.end() : following.start() if following else len(text)])
        name = section_name(header)
        previous = report.sections.get(name)
        report.sections[name] = f"{previous} {body}".strip() if previous else body
    return report


def to_target(report: Report) -> str:
    """`FINDINGS: ... IMPRESSION: ...` with a marker for each non-empty section; '' when both are missing."""
    markers = zip(TARGET_SECTIONS, (FINDINGS_MARKER, IMPRESSION_MARKER))
    parts = [f"{marker} {report.get(name)}" for name, marker in markers
             if report.get(name)]
    return " ".join(parts)


def prompt_part(report: Report) -> str:
    """The per-sample prompt part: the INDICATION (empty when the report has none)."""
    return report.indication


_MARKER = re.compile(r"\b(FINDINGS|IMPRESSION)\s*:", re.IGNORECASE)


def parse_target(text: str) -> tuple[Report, list[str]]:
    """A generated target -> (report with `findings`/`impression`, problems). Never raises.

    Text outside the markers (no marker at all, or before the first one) is kept as the findings.
    """
    problems: list[str] = []
    markers = list(_MARKER.finditer(text))
    report = Report()
    if not text.strip():
        return report, ["empty report"]
    if not markers:
        problems.append("no FINDINGS: or IMPRESSION: marker")
    names = [m.group(1).lower() for m in markers]
    if len(set(names)) < len(names):
        problems.append("a section marker is repeated")
    if names and names[0] == "impression" and "findings" in names:
        problems.append("IMPRESSION before FINDINGS")
    lead = normalize(text[: markers[0].start()] if markers else text)
    if lead:
        if markers:
            problems.append("text before the first marker")
        report.sections["findings"] = lead
    for match, following in zip(markers, [*markers[1:], None]):
        name = match.group(1).lower()
        body = normalize(text[match.end() : following.start() if following else len(text)])
        if not body:
            problems.append(f"empty {name.upper()} section")
        previous = report.sections.get(name)
        report.sections[name] = f"{previous} {body}".strip() if previous else body
    return report, problems


def report_text(target: str) -> str:
    """The report text of a target without its markers (what the NLG metrics and the labeler read)."""
    report, _ = parse_target(target)
    return " ".join(report.get(name) for name in TARGET_SECTIONS if report.get(name))


def export(report: Report, stem: str | Path) -> list[Path]:
    """Write `<stem>.txt` (MIMIC-style sections) and `<stem>.json`; returns both paths."""
    txt, js = Path(f"{stem}.txt"), Path(f"{stem}.json")
    blocks = [report.preamble] if report.preamble else []
    blocks += [f"{name.upper()}: {body}" for name, body in report.sections.items()]
    txt.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    js.write_text(report.to_json() + "\n", encoding="utf-8")
    return [txt, js]
