"""`music`: an image of one piano system -> its **kern, as PaliGemma 2's GrandStaff transfer.

Images are stretched, not padded (the paper pads only tables and molecules): a system is about 3.3 times as
wide as high, and padding would spend two thirds of the pixels on white and shrink the staves to a third.
"""

from __future__ import annotations

import functools
import io
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from docvlm.converters import kern
from docvlm.converters.kern_synth import random_kern, to_bekern
from docvlm.metrics.music import CerParsing, music_metrics
from docvlm.tasks.base import ImageMode, Metric, Parsed, Sample, Task, register
from docvlm.tasks.manifest import ManifestError


@register
@dataclass
class MusicTask(Task):
    """Single-system piano score image -> **kern (GrandStaff).

    Attributes:
        encoding: target text: `kern` (sub-token separators removed, as SMT trains) or `bekern`
            (GrandStaff's `·` separators kept).
        distorted: read GrandStaff's `_distorted.jpg` camera-like images instead of the clean renders.
        cer_parsing: which CER parsing `score` reports as `cer`: `characters` (SMT's current code),
            `smt2024` or `ijdar` (see `docvlm.metrics.music`).
    """

    name = "music"
    metrics = (*(Metric(name, higher_is_better=False, corpus=True, perfect=0.0) for name in ("cer", "ser", "ler")),
               Metric("valid"))
    main_metric = "cer"
    prefix: str = "music to kern"
    max_target_tokens: int = 1024
    image_mode: ImageMode = "stretch"
    encoding: Literal["kern", "bekern"] = "kern"
    distorted: bool = False
    cer_parsing: CerParsing = "characters"

    # ---- readers -------------------------------------------------------------------------------
    def read(self, source: str | Path, split: str | None = None) -> list[Sample]:
        """GrandStaff folders (`<composer>/<collection>/<piece>/<transposition>_m-<a>-<b>.{jpg,_distorted.jpg,
        krn,bekrn}`, partition lists `<split>.txt`), its Hugging Face parquet export (`image`, `transcription`)
        or a manifest. Targets are normalised as SMT does (`docvlm.converters.kern`)."""
        source = Path(source)
        if source.is_file() and source.suffix == ".parquet":
            return list(self._read_parquet([source]))
        if source.is_file():
            return list(self._read_manifest(source))
        if not source.is_dir():
            raise ManifestError(f"{source}: no such file or directory")
        parquets = sorted(p for p in source.rglob("*.parquet") if split is None or _in_split(p, split))
        if parquets:
            return list(self._read_parquet(parquets))
        return list(self._read_grandstaff(source, split))

    def _read_manifest(self, path: Path) -> Iterator[Sample]:
        for sample in super().read(path):
            if sample.target is not None:
                sample.target = kern.normalize(sample.target, self.encoding)
            yield sample

    def _read_grandstaff(self, root: Path, split: str | None) -> Iterator[Sample]:
        if split is None:
            stems = sorted({p.with_suffix("") for p in root.rglob("*.bekrn")}
                           | {p.with_suffix("") for p in root.rglob("*.krn")})
            entries = [(str(s), s) for s in stems]
        else:
            entries = list(_partition_entries(root, split))
        for where, stem in entries:
            candidates = (stem.with_suffix(".bekrn"), stem.with_suffix(".krn"))
            transcription = next((p for p in candidates if p.is_file()), None)
            image = stem.with_name(stem.name + "_distorted.jpg") if self.distorted else stem.with_suffix(".jpg")
            if transcription is None:
                raise ManifestError(f"{where}: no {stem}.bekrn or .krn")
            if not image.is_file():
                raise ManifestError(f"{where}: no image {image}")
            text = transcription.read_text(encoding="utf-8")
            yield Sample(
                id=str(stem.relative_to(root)),
                image=image,
                target=kern.normalize(text, self.encoding),
                source=str(transcription),
            )

    def _read_parquet(self, files: list[Path]) -> Iterator[Sample]:
        """Only the transcriptions are read here; each image is read from its row group when it is loaded,
        so that 50k samples do not hold 50k images' bytes."""
        import pyarrow.parquet as pq

        for path in files:
            table = pq.ParquetFile(path)
            missing = {"image", "transcription"} - set(table.schema_arrow.names)
            if missing:
                raise ManifestError(f"{path}: parquet file lacks column(s) {', '.join(sorted(missing))}")
            row = 0
            for group in range(table.num_row_groups):
                texts = table.read_row_group(group, columns=["transcription"]).column("transcription").to_pylist()
                for offset, text in enumerate(texts):
                    if not isinstance(text, str):
                        raise ManifestError(f"{path}: row {row} has no transcription text")
                    yield Sample(
                        id=f"{path.stem}-{row}",
                        image=functools.partial(_parquet_image, str(path), group, offset),  # see load_image
                        target=kern.normalize(text, self.encoding),
                        source=f"{path}:{row}",
                    )
                    row += 1

    def sample_from_record(self, record, columns, source: str) -> Sample:
        """A `datasets` row (GrandStaff's hub export: `columns: {target: transcription}`), target normalised."""
        sample = super().sample_from_record(record, columns, source)
        if sample.target is not None:
            sample.target = kern.normalize(sample.target, self.encoding)
        return sample

    # ---- synthetic scores ----------------------------------------------------------------------
    def synthesize(self, n: int, seed: int = 0) -> Iterator[Sample]:
        from docvlm.converters.kern_render import render

        for i in range(n):
            rng = random.Random(f"{seed}:{i}")
            text = random_kern(rng)
            target = to_bekern(text) if self.encoding == "bekern" else text
            yield Sample(
                id=f"synthetic-{seed}-{i}",
                image=functools.partial(render, text, rng.randint(32, 48)),
                target=kern.normalize(target, self.encoding),
            )

    # ---- model output ----------------------------------------------------------------------------
    def parse(self, text: str) -> Parsed:
        repaired, problems = kern.scan(text)
        return Parsed(text=text, value=repaired, problems=problems)

    def main_score(self, scores: Mapping[str, float]) -> float:
        """1 - CER as a fraction (`score` reports SMT's percent)."""
        return min(1.0, max(0.0, 1.0 - scores[self.main_metric] / 100))

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
        """SMT's CER/SER/LER in % (separators removed first, as SMT's targets have none), plus `valid`:
        the share of predictions music21 reads into a score with at least one note."""
        preds = [kern.strip_separators(p) for p in predictions]
        refs = [kern.strip_separators(r) for r in references]
        scores = music_metrics(preds, refs, self.cer_parsing)
        scores["valid"] = sum(map(_music21_reads, preds)) / len(preds) if preds else 0.0
        return scores

    def export(self, parsed: Parsed, stem: str | Path) -> list[Path]:
        """`docvlm.converters.kern_render.export`; a file that fails is added to `parsed.problems`, not raised."""
        from docvlm.converters.kern_render import export

        written, problems = export(parsed.value, parsed.text, stem)
        parsed.problems.extend(problems)
        return written


def _parquet_image(path: str, group: int, offset: int) -> io.BytesIO:
    """The encoded image of one parquet row, for `docvlm.images.load_image`."""
    cell = _row_group_images(path, group)[offset].as_py()
    data = cell.get("bytes") if isinstance(cell, dict) else cell
    if not isinstance(data, bytes):
        raise ValueError("the parquet row has no image bytes")
    return io.BytesIO(data)


@functools.lru_cache(maxsize=1)
def _row_group_images(path: str, group: int):
    """The image column of one row group. The last one read is kept per process: rows read in order
    (validation, `evaluate`) read each group once, while shuffled training reads a group per image."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).read_row_group(group, columns=["image"]).column("image")


def _in_split(path: Path, split: str) -> bool:
    """HF layouts: `data/<split>-00000-of-00001.parquet` or `<split>/...parquet`."""
    return path.name.startswith(f"{split}-") or path.name == f"{split}.parquet" or split in path.parent.parts


def _partition_entries(root: Path, split: str) -> Iterator[tuple[str, Path]]:
    """(`file:line`, transcription stem) of each line of GrandStaff's partition list for `split`.

    Lines are paths relative to some data root (`Data/...`, `grandstaff/...`); the longest tail of the path
    that exists under `root` is taken, so the list works wherever the dataset was unpacked."""
    lists = sorted(root.rglob(f"{split}.txt"))
    if not lists:
        raise ManifestError(f"{root}: no partition list {split}.txt (GrandStaff's partitions/) under this folder")
    for line_no, line in enumerate(lists[0].read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip().replace("\\", "/")
        if not line:
            continue
        parts = Path(line).with_suffix("").parts
        where = f"{lists[0]}:{line_no}"
        for i in range(len(parts)):
            stem = root.joinpath(*parts[i:])
            if stem.with_suffix(".bekrn").is_file() or stem.with_suffix(".krn").is_file():
                yield where, stem
                break
        else:
            raise ManifestError(f"{where}: {line} not found under {root}")


def _music21_reads(text: str) -> bool:
    from docvlm.converters.kern_render import to_music21

    try:
        return len(to_music21(text).flatten().notes) > 0
    except Exception:  # any music21 failure means "cannot read"
        return False
