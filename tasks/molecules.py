"""`molecules`: an image of a chemical structure -> its SMILES, as PaliGemma 2's molecule transfer, scored as
MolScribe scores it."""

from __future__ import annotations

import csv
import functools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from docvlm.tasks.base import ImageMode, Metric, Parsed, Sample, Task, register
from docvlm.tasks.manifest import ManifestError, read_manifest

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp", ".webp"}
REFERENCE_SUFFIXES = (".sdf", ".mol", ".MOL", ".SDF")  # MolScribe's preprocessing looks in this order


@register
@dataclass
class MoleculesTask(Task):
    """Image of a molecule -> SMILES, scored as MolScribe does (canon_smiles, graph, chiral, ...).

    Attributes:
        canonical: train on RDKit canonical isomeric SMILES (labels such as `[Ph]` kept as written);
            False trains on the dataset's SMILES as they are.
        synthetic_size: longer side of synthetic drawings, in pixels (their shorter side varies).
    """

    name = "molecules"
    metrics = (Metric("canon_smiles"), Metric("graph"), Metric("chiral", optional=True), Metric("tanimoto"),
               Metric("inchi"), Metric("valid"))
    main_metric = "canon_smiles"  # MolScribe's exact match, the paper's number
    prefix: str = "smiles"
    max_target_tokens: int = 256
    image_mode: ImageMode = "pad"
    canonical: bool = True
    synthetic_size: int = 448

    def read(self, source: str | Path, split: str | None = None) -> list[Sample]:
        """A MolScribe CSV (`image_id,file_path,SMILES`) or manifest file; or a folder: `<folder>/<split>.csv`,
        `<folder>/<split>/`, or itself, of images with MOL/SDF references (the OCSR_Review layout `images/` +
        `mol_ref/`, or references beside the images)."""
        source = Path(source)
        if source.is_file():
            return _read_csv(source) if _is_molscribe_csv(source) else read_manifest(source)
        if not source.is_dir():
            raise ManifestError(f"{source}: no such file or folder")
        if split and (source / f"{split}.csv").is_file():
            return self.read(source / f"{split}.csv")
        if split and (source / split).is_dir():
            return _read_folder(source / split)
        if split:
            raise ManifestError(f"{source}: neither {split}.csv nor a folder {split}/")
        return _read_folder(source)

    def synthesize(self, n: int, seed: int = 0) -> Iterator[Sample]:
        from docvlm.converters.molecule_render import random_smiles

        for i in range(n):
            smiles = random_smiles(random.Random(f"{seed}:{i}"))
            image = functools.partial(_draw, smiles, f"{seed}:{i}:draw", self.synthetic_size)
            yield Sample(id=f"synthetic-{seed}-{i}", image=image, target=smiles)

    def to_target(self, sample: Sample) -> str:
        target = super().to_target(sample)
        if not self.canonical:
            return target
        from docvlm.converters.molecules import canonical_smiles

        return canonical_smiles(target) or target

    def parse(self, text: str) -> Parsed:
        from docvlm.converters.molecules import parse_smiles

        mol, problems = parse_smiles(text)
        return Parsed(text=text, value=mol, problems=problems)

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
        from docvlm.metrics.molecules import molecule_scores

        return molecule_scores(predictions, references)

    def export(self, parsed: Parsed, stem: str | Path) -> list[Path]:
        from docvlm.converters.molecules import write_molecule

        return write_molecule(parsed.value, parsed.text, stem)


def _draw(smiles: str, seed: str, size: int):
    """The synthetic drawing of `smiles` (a module function so that lazy images pickle to workers)."""
    from docvlm.converters.molecule_render import render

    return render(smiles, random.Random(seed), size)


def _is_molscribe_csv(path: Path) -> bool:
    if path.suffix.lower() != ".csv":
        return False
    with path.open(encoding="utf-8", newline="") as f:
        header = next(csv.reader(f), [])
    return "file_path" in header and "SMILES" in header


def _read_csv(path: Path) -> list[Sample]:
    """MolScribe's gold CSV. `file_path` is relative to the CSV's folder or, failing that, its parent
    (MolScribe joins it to a data root that is often one level up)."""
    samples = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            file_path = row.get("file_path") or ""
            if not file_path:
                raise ManifestError(f"{path}:{reader.line_num}: row has no file_path")
            image = path.parent / file_path
            if not image.exists() and (path.parent.parent / file_path).exists():
                image = path.parent.parent / file_path
            sample_id = row.get("image_id") or Path(file_path).stem
            target = row.get("SMILES") or ""
            samples.append(Sample(id=sample_id, image=image, target=target, source=f"{path}:{reader.line_num}"))
    return samples


def _read_folder(folder: Path) -> list[Sample]:
    """Images of `folder/images` (or `folder`) with gold SMILES from `<stem>.sdf|.mol` in `folder/mol_ref` or
    beside the image. A missing reference gives no target; an unreadable one gives "" and its problem."""
    from docvlm.converters.molecules import molfile_smiles

    image_dir = folder / "images" if (folder / "images").is_dir() else folder
    reference_dirs = [folder / "mol_ref", image_dir]
    samples = []
    for image in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        candidates = (d / (image.stem + suffix) for d in reference_dirs for suffix in REFERENCE_SUFFIXES)
        reference = next((c for c in candidates if c.is_file()), None)
        meta: dict = {}
        target = None
        if reference is None:
            meta["problems"] = [f"{image}: no MOL/SDF reference"]
        else:
            target, problems = molfile_smiles(reference)
            meta["reference"] = str(reference)
            if problems:
                meta["problems"] = problems
        samples.append(Sample(id=image.stem, image=image, target=target, meta=meta, source=str(image)))
    if not samples:
        raise ManifestError(f"{image_dir}: no images")
    return samples
