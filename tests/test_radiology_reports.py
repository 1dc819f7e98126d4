"""Report sections: MIMIC-style layouts written for the tests, the target format and its parsing back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from docvlm.converters.reports import Report, export, parse_report, parse_target, report_text, to_target

FULL = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ year old woman with cough  // eval for pneumonia

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  ___

 FINDINGS:

 The lungs are clear without focal consolidation.  No pleural effusion or
 pneumothorax is seen. The cardiac and mediastinal silhouettes are
 unremarkable.

 IMPRESSION:

 No acute cardiopulmonary process.
"""

# (report text, expected sections as {name: text}; only the listed names are checked, plus `absent`)
LAYOUTS = [
    (FULL, {"indication": "___ year old woman with cough // eval for pneumonia", "technique": "Chest PA and lateral",
            "examination": "CHEST (PA AND LAT)", "comparison": "___",
            "findings": "The lungs are clear without focal consolidation. No pleural effusion or pneumothorax is seen. "
                        "The cardiac and mediastinal silhouettes are unremarkable.",
            "impression": "No acute cardiopulmonary process."}),
    # no FINDINGS: only IMPRESSION
    ("INDICATION: Chest pain.\n\nIMPRESSION: No acute intrathoracic process.\n",
     {"indication": "Chest pain.", "impression": "No acute intrathoracic process.", "absent": ["findings"]}),
    # only FINDINGS
    ("FINDINGS: Heart size is normal. Lungs are clear.\n", {"findings": "Heart size is normal. Lungs are clear.",
                                                            "absent": ["impression", "indication"]}),
    # lower-case and title-case headers
    ("indication: fever\nfindings: mild cardiomegaly.\nimpression: cardiomegaly.",
     {"indication": "fever", "findings": "mild cardiomegaly.", "impression": "cardiomegaly."}),
    ("Indication: Dyspnea.\nFindings:\nSmall left effusion.\nImpression:\nSmall left effusion.",
     {"indication": "Dyspnea.", "findings": "Small left effusion.", "impression": "Small left effusion."}),
    # numbered list in the impression, wrapped over lines
    ("FINDINGS: As below.\nIMPRESSION:\n1. Interval increase in moderate right pleural effusion\n   with adjacent "
     "atelectasis.\n2. No pneumothorax.\n",
     {"impression": "1. Interval increase in moderate right pleural effusion with adjacent atelectasis. "
                    "2. No pneumothorax."}),
    # synonyms: HISTORY, CLINICAL HISTORY, REASON FOR EXAMINATION -> indication; CONCLUSION -> impression
    ("HISTORY: ___-year-old male with CHF.\nFINDINGS: Edema.\nCONCLUSION: Pulmonary edema.",
     {"indication": "___-year-old male with CHF.", "impression": "Pulmonary edema."}),
    ("CLINICAL HISTORY: Trauma.\nFINDINGS: Left rib fracture.",
     {"indication": "Trauma.", "findings": "Left rib fracture."}),
    ("REASON FOR EXAMINATION: Line placement.\nIMPRESSION: Right PICC ends in the SVC.",
     {"indication": "Line placement.", "impression": "Right PICC ends in the SVC."}),
    # the whole report on one line, upper-case headers inside it
    ("INDICATION: Cough. FINDINGS: Clear lungs. IMPRESSION: Normal chest.",
     {"indication": "Cough.", "findings": "Clear lungs.", "impression": "Normal chest."}),
    # a header in any case after the end of a sentence
    ("Findings: Lungs clear. impression: normal study.", {"findings": "Lungs clear.", "impression": "normal study."}),
    # text on the header's line and continued below, header with extra spaces
    ("FINDINGS:    Stable cardiomegaly.\nNo edema.\nIMPRESSION :  Stable.",
     {"findings": "Stable cardiomegaly. No edema.", "impression": "Stable."}),
    # WET READ preamble-like section and a NOTIFICATION after the impression are kept apart
    ("WET READ: ___ ___ 3:20 PM\n  No pneumothorax.\n\nFINDINGS: Small apical pneumothorax.\nIMPRESSION: Small left "
     "apical pneumothorax.\nNOTIFICATION: Dr. ___ was paged at 3:30 p.m.",
     {"wet read": "___ ___ 3:20 PM No pneumothorax.", "findings": "Small apical pneumothorax.",
      "impression": "Small left apical pneumothorax.", "notification": "Dr. ___ was paged at 3:30 p.m."}),
    # unknown upper-case header kept under its own name
    ("PA AND LATERAL VIEWS OF THE CHEST:\nComparison with ___.\nFINDINGS: No effusion.",
     {"pa and lateral views of the chest": "Comparison with ___.", "findings": "No effusion."}),
    # "PA AND LATERAL VIEWS:" inside a line is not a VIEWS (technique) section
    ("TECHNIQUE: PA AND LATERAL VIEWS: obtained.\nIMPRESSION: Normal.",
     {"technique": "PA AND LATERAL VIEWS: obtained.", "impression": "Normal."}),
    # FINDINGS AND IMPRESSION combined
    ("FINDINGS AND IMPRESSION: No acute process.", {"findings": "No acute process.", "absent": ["impression"]}),
    # no header at all: everything is preamble
    ("Heart size normal. Lungs clear.", {"absent": ["findings", "impression"]}),
    # a repeated section (addendum style) is joined
    ("IMPRESSION: Small effusion.\nADDENDUM: none.\nIMPRESSION: Also atelectasis.",
     {"impression": "Small effusion. Also atelectasis.", "addendum": "none."}),
    # COMPARISONS plural, IMPRESSIONS plural, colons in times within the text
    ("COMPARISONS: Radiograph from ___ at 10:45.\nIMPRESSIONS: Unchanged.",
     {"comparison": "Radiograph from ___ at 10:45.", "impression": "Unchanged."}),
]


@pytest.mark.parametrize(("text", "expected"), LAYOUTS, ids=[str(i) for i in range(len(LAYOUTS))])
def test_sections(text: str, expected: dict) -> None:
    report = parse_report(text)
    expected = dict(expected)
    for name in expected.pop("absent", []):
        assert name not in report.sections
    for name, body in expected.items():
        assert report.sections.get(name) == body, (name, report.sections)


def test_preamble_and_order() -> None:
    report = parse_report(FULL)
    assert report.preamble == "FINAL REPORT"
    assert list(report.sections) == ["examination", "indication", "technique", "comparison", "findings", "impression"]
    assert parse_report("Heart size normal.\nLungs clear.").preamble == "Heart size normal. Lungs clear."


def test_target_round_trip() -> None:
    report = parse_report(FULL)
    target = to_target(report)
    assert target.startswith("FINDINGS: The lungs are clear")
    assert " IMPRESSION: No acute cardiopulmonary process." in target
    back, problems = parse_target(target)
    assert problems == []
    assert (back.findings, back.impression) == (report.findings, report.impression)
    assert to_target(parse_report("IMPRESSION: Normal.")) == "IMPRESSION: Normal."
    assert to_target(parse_report("INDICATION: x")) == ""
    assert report_text(target) == f"{report.findings} {report.impression}"


@pytest.mark.parametrize(("text", "problem"), [
    ("", "empty report"),
    ("Lungs are clear.", "no FINDINGS: or IMPRESSION: marker"),
    ("IMPRESSION: a FINDINGS: b", "IMPRESSION before FINDINGS"),
    ("FINDINGS: a FINDINGS: b", "a section marker is repeated"),
    ("FINDINGS: IMPRESSION: normal", "empty FINDINGS section"),
    ("some words FINDINGS: a", "text before the first marker"),
])
def test_parse_target_lists_problems(text: str, problem: str) -> None:
    report, problems = parse_target(text)
    assert problem in problems
    assert isinstance(report, Report)


def test_parse_target_keeps_unmarked_text_as_findings() -> None:
    report, _ = parse_target("Lungs are clear.")
    assert report.findings == "Lungs are clear."


def test_export_writes_txt_and_json(tmp_path: Path) -> None:
    paths = export(parse_report(FULL), tmp_path / "s1")
    assert [p.name for p in paths] == ["s1.txt", "s1.json"]
    text = paths[0].read_text()
    assert "FINDINGS: The lungs are clear" in text and text.startswith("FINAL REPORT")
    data = json.loads(paths[1].read_text())
    assert data["sections"]["impression"] == "No acute cardiopulmonary process."
    assert parse_report(text).sections == parse_report(FULL).sections
