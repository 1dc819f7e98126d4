"""`radiology`: a chest radiograph -> its FINDINGS and IMPRESSION, as PaliGemma 2's MIMIC-CXR transfer: the
study's INDICATION is the sample's part of the prompt."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from docvlm.converters import reports
from docvlm.tasks.base import ImageMode, Metric, Parsed, Sample, Task, register
from docvlm.tasks.manifest import ManifestError

log = logging.getLogger(__name__)

SPLIT_NAMES = {"train": "train", "val": "validate", "validate": "validate", "valid": "validate", "test": "test"}


class MimicLayoutError(ManifestError):
    """A MIMIC-CXR directory that cannot be read; the message names the file."""


@register
@dataclass
class RadiologyTask(Task):
    """Chest radiograph -> report (FINDINGS + IMPRESSION), the INDICATION given in the prompt.

    Attributes:
        views: view positions kept from MIMIC-CXR's metadata (e.g. PA, AP, LATERAL); empty keeps all.
        one_image_per_study: keep one image per study (the first by the order of `views`, then by
            DICOM id), so each report is a target once.
        reports_root: folder holding `files/pXX/pNNNNNNNN/sNNNNNNNN.txt` when the reports are not
            beside the images (MIMIC-CXR-JPG and the reports are separate downloads).
        radgraph: also compute RadGraph F1 (needs the optional `radgraph` package and its weights).
        tokenizer: how report text is prepared for BLEU, ROUGE-L and CIDEr-D: `r2gen` (R2Gen's
            `clean_report_mimic_cxr`, then the scorers: the convention of most MIMIC-CXR report-generation
            papers, hence the default, and it needs no Java), `ptb` (pycocoevalcap's COCO pipeline: Java's
            PTBTokenizer, punctuation dropped; without Java a pure-Python approximation, with a warning) or
            `none` (the text as given, split on white space).
        synthetic_size: side of synthetic films, in pixels.
    """

    name = "radiology"
    metrics = (
        *(Metric(f"bleu{n}", corpus=True) for n in range(1, 5)), Metric("rouge_l"),
        Metric("cider", corpus=True, perfect=None),
        *(Metric(f"chexpert_{score}_{average}_{labels}", corpus=True, perfect=None if average == "macro" else 1.0)
          for labels in ("14", "5") for score in ("precision", "recall", "f1") for average in ("micro", "macro")),
        Metric("radgraph_f1", optional=True),
    )
    main_metric = "rouge_l"  # CIDEr-D of one report is 0 (no document frequencies): it cannot rank samples
    prefix: str = "report"
    max_target_tokens: int = 512
    image_mode: ImageMode = "stretch"
    views: list[str] = field(default_factory=lambda: ["PA", "AP"])
    one_image_per_study: bool = True
    reports_root: str | None = None
    radgraph: bool = False
    tokenizer: Literal["r2gen", "ptb", "none"] = "r2gen"
    synthetic_size: int = 448

    # -- samples ------------------------------------------------------------------------------------

    def read(self, source: str | Path, split: str | None = None) -> list[Sample]:
        """MIMIC-CXR-JPG (a folder with `files/` and the split/metadata CSVs) or a manifest file."""
        source = Path(source)
        if source.is_file():
            return super().read(source, split)
        return self._read_mimic(source, split)

    def _read_mimic(self, root: Path, split: str | None) -> list[Sample]:
        wanted = None if split is None else SPLIT_NAMES.get(split)
        if split is not None and wanted is None:
            raise MimicLayoutError(f"unknown split {split!r}; use one of {sorted(SPLIT_NAMES)}")
        splits = {row["dicom_id"]: row for row in _csv_rows(_find(root, "mimic-cxr-2.0.0-split.csv"))}
        metadata = _csv_rows(_find(root, "mimic-cxr-2.0.0-metadata.csv"))
        views = {row["dicom_id"]: row.get("ViewPosition", "") for row in metadata}
        order = {v.upper(): i for i, v in enumerate(self.views)}
        studies: dict[str, list[tuple]] = {}
        for dicom, row in splits.items():
            view = views.get(dicom, "")
            if (wanted and row["split"] != wanted) or (order and view.upper() not in order):
                continue
            studies.setdefault(row["study_id"], []).append((order.get(view.upper(), len(order)), dicom, row, view))
        samples, skipped = [], 0
        reports_root = Path(self.reports_root) if self.reports_root else root
        for study, images in sorted(studies.items()):
            images.sort(key=lambda image: image[:2])
            subject = images[0][2]["subject_id"]
            study_dir = Path("files") / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
            report_path = reports_root / study_dir.with_suffix(".txt")
            if not report_path.is_file():
                log.warning("%s: report missing, study skipped", report_path)
                skipped += 1
                continue
            report = reports.parse_report(report_path.read_text(encoding="utf-8", errors="replace"))
            target = reports.to_target(report)
            if not target:
                log.warning("%s: no FINDINGS or IMPRESSION section, study skipped", report_path)
                skipped += 1
                continue
            indication = reports.prompt_part(report)
            for _, dicom, row, view in images[:1] if self.one_image_per_study else images:
                samples.append(Sample(
                    id=dicom, image=root / study_dir / f"{dicom}.jpg", target=target,
                    prefix=f"indication: {indication}" if indication else "",
                    meta={"study_id": study, "subject_id": subject, "view": view, "split": row["split"],
                          "report": str(report_path)},
                ))
        if skipped:
            log.warning("%s: %d studies skipped (missing report or no FINDINGS/IMPRESSION)", root, skipped)
        return samples

    def sample_from_record(self, record, columns, source: str) -> Sample:
        """A `datasets` row with a `target` column, or a MIMIC-style one: the whole report (the column
        `columns["report"]`, default `report`) or its `findings`, `impression` and `indication` columns,
        made into target and prompt as the MIMIC-CXR reader does (a row with neither section gets the target
        "", where that reader skips the study)."""
        if columns.get("target") in record:
            return super().sample_from_record(record, columns, source)
        report_column = columns.get("report") or "report"
        if report_column in record:
            report = reports.parse_report(record[report_column] or "")
        else:
            names = {name: columns.get(name) or name for name in ("indication", "findings", "impression")}
            if names["findings"] not in record and names["impression"] not in record:
                raise KeyError(columns.get("target") or names["findings"])
            sections = {name: reports.normalize(record.get(column) or "") for name, column in names.items()}
            report = reports.Report({name: text for name, text in sections.items() if text})
        indication = reports.prompt_part(report)
        sample = super().sample_from_record(record, {**columns, "target": None}, source)
        return dataclasses.replace(sample, target=reports.to_target(report),
                                   prefix=f"indication: {indication}" if indication else "")

    def synthesize(self, n: int, seed: int = 0) -> Iterator[Sample]:
        from docvlm.converters.radiograph_render import random_case, render, report_text

        for i in range(n):
            rng = random.Random(f"radiology:{seed}:{i}")
            case = random_case(rng)
            report = reports.parse_report(report_text(case, rng))
            yield Sample(id=f"synthetic-{seed}-{i}", image=render(case, rng, self.synthetic_size),
                         target=reports.to_target(report), prefix=f"indication: {report.indication}",
                         meta={"findings": dataclasses.asdict(case)})

    # -- outputs -----------------------------------------------------------------------------------

    def parse(self, text: str) -> Parsed:
        report, problems = reports.parse_target(text)
        return Parsed(text=text, value=report if report.sections else None, problems=problems)

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
        """BLEU-1..4, ROUGE-L and CIDEr-D on the marker-free report text in the `tokenizer` option's convention,
        CheXpert-style label precision, recall and F1, and RadGraph F1 when asked for (`radgraph` package)."""
        from docvlm.metrics.chexpert import chexpert_scores, radgraph_f1
        from docvlm.metrics.nlg import nlg_scores

        hyps = [reports.report_text(p) for p in predictions]
        refs = [reports.report_text(r) for r in references]
        log.info("BLEU, ROUGE-L and CIDEr-D in the %r convention (the radiology task's `tokenizer` option)",
                 self.tokenizer)
        scores = {**nlg_scores(hyps, refs, tokenizer=self.tokenizer), **chexpert_scores(hyps, refs)}
        if self.radgraph:
            scores["radgraph_f1"] = radgraph_f1(hyps, refs)
        return scores

    def export(self, parsed: Parsed, stem: str | Path) -> list[Path]:
        return reports.export(parsed.value or reports.Report(preamble=reports.normalize(parsed.text)), stem)


def _find(root: Path, name: str) -> Path:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise MimicLayoutError(f"{root}: neither {name} nor {name}.gz found (is this a MIMIC-CXR-JPG folder?)")


def _csv_rows(path: Path) -> list[dict[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    required = {"dicom_id", "study_id", "subject_id"}
    if rows and not required <= rows[0].keys():
        raise MimicLayoutError(f"{path}: expected columns {sorted(required)}, got {sorted(rows[0])}")
    return rows
