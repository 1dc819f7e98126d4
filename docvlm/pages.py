"""Inputs -> pages for `docvlm convert`: image files, folders of them, PDFs (rasterised with pypdfium2)
and multi-page TIFFs, with page ranges (`1-3,7`, `5-`).

Nothing here loads pixels up front: `expand` lists the pages (opening each PDF only to count its pages),
and `Page.load` renders one when it is needed. An input that cannot be used is returned as an
`InputError` naming the file, never raised, so that one bad file does not stop a batch. Only regular
files (and links to them) are opened: a FIFO named `x.png` would block the run forever, a device stream
without end; such entries are reported and skipped.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from docvlm.errors import special_file_problem
from docvlm.images import FORMATS, BadImageError, load_image, open_regular

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".pbm")
PDF_SUFFIX = ".pdf"
TIFF_SUFFIXES = (".tif", ".tiff")
# A page rendered larger than this (a poster at a high --dpi) is rendered smaller instead: the model
# sees 896 px at most, and an A0 page at 600 dpi would take ~1.5 GB of RGB pixels.
MAX_PIXELS = 40_000_000


class PageRangeError(ValueError):
    """A `--pages` value that cannot be read; the message says which part and why."""


@dataclass(frozen=True)
class PageRange:
    """Pages to take from multi-page documents: inclusive spans, 1-based; `end=None` runs to the last page."""

    spans: tuple[tuple[int, int | None], ...]
    text: str = ""

    def select(self, count: int) -> list[int]:
        """The requested pages that a document of `count` pages has, ascending, each once."""
        chosen: set[int] = set()
        for start, end in self.spans:
            chosen.update(range(start, min(count, end if end is not None else count) + 1))
        return sorted(chosen)

    def missing(self, count: int) -> list[int]:
        """Pages asked for by number that a document of `count` pages does not have."""
        asked: set[int] = set()
        for start, end in self.spans:
            if end is not None:
                asked.update(range(max(start, count + 1), end + 1))
            elif start > count:
                asked.add(start)
        return sorted(asked)

    def __str__(self) -> str:
        return self.text


_SPAN = re.compile(r"^(\d+)(?:\s*-\s*(\d*))?$")


def parse_page_range(text: str) -> PageRange:
    """`"1-3,7"`, `"2-"` (to the end), `"4"` -> a `PageRange`; raises `PageRangeError` saying what is wrong."""
    spans: list[tuple[int, int | None]] = []
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise PageRangeError(f"{text!r}: empty page range part (expected e.g. '1-3,7' or '2-')")
    for part in parts:
        match = _SPAN.match(part)
        if match is None:
            raise PageRangeError(f"{text!r}: {part!r} is not a page, a range N-M or an open range N-")
        start = int(match.group(1))
        end = None if match.group(2) == "" else int(match.group(2)) if match.group(2) is not None else start
        if start < 1:
            raise PageRangeError(f"{text!r}: page {start} does not exist (pages are numbered from 1)")
        if end is not None and end < start:
            raise PageRangeError(f"{text!r}: {part!r} runs backwards (write {end}-{start})")
        spans.append((start, end))
    return PageRange(tuple(spans), text)


@dataclass(frozen=True)
class Page:
    """One page to convert.

    Attributes:
        input: the input file (absolute, symlinks kept as named).
        page: 1-based page number inside a PDF or multi-page TIFF; None for a single image.
        kind: `image`, `pdf` or `tiff` (multi-page TIFF).
        name: the output name before de-duplication: the file's name without its suffix (relative to
            the folder given, for files found in folders), dots made `_`, `-p<N>` added for pages.
    """

    input: Path
    page: int | None
    kind: str
    name: str

    @property
    def where(self) -> str:
        """The file, and the page when there are several, for messages."""
        return f"{self.input}, page {self.page}" if self.page is not None else str(self.input)

    def load(self, dpi: float = 200) -> Image.Image:
        """The page as an RGB image; raises `BadImageError` naming the file (and page) on failure."""
        if self.kind == "pdf":
            return render_pdf_page(self.input, self.page, dpi)
        return load_image(self.input, page=self.page)  # TIFF pages get the same conversion as images


@dataclass(frozen=True)
class InputError:
    """An input that gave no pages: a missing file, an unreadable PDF, an empty folder."""

    input: Path
    error: str


def render_pdf_page(path: Path, page: int, dpi: float) -> Image.Image:
    """Page `page` (1-based) of a PDF rendered on white at `dpi` (less for pages over `MAX_PIXELS`)."""
    import pypdfium2 as pdfium

    where = f"{path}, page {page}"
    _require_regular(path)
    try:
        document = pdfium.PdfDocument(str(path))
    except Exception as e:  # noqa: BLE001  PdfiumError, OSError
        raise BadImageError(f"{path}: cannot open PDF ({e})") from None
    try:
        if not 1 <= page <= len(document):
            raise BadImageError(f"{where}: the PDF has {len(document)} pages")
        pdf_page = document[page - 1]
        try:
            width, height = pdf_page.get_size()  # points, 1/72 inch
            scale = dpi / 72
            if width * height * scale * scale > MAX_PIXELS:
                scale = math.sqrt(MAX_PIXELS / (width * height))
            return pdf_page.render(scale=scale).to_pil().convert("RGB")
        finally:
            pdf_page.close()
    except BadImageError:
        raise
    except Exception as e:  # noqa: BLE001  a page pdfium cannot render must not stop the others
        raise BadImageError(f"{where}: cannot render ({type(e).__name__}: {e})") from None
    finally:
        document.close()


def pdf_page_count(path: Path) -> int:
    """Number of pages; raises `BadImageError` naming the file when pdfium cannot open it."""
    import pypdfium2 as pdfium

    _require_regular(path)
    try:
        document = pdfium.PdfDocument(str(path))
    except Exception as e:  # noqa: BLE001  PdfiumError (corrupt, truncated, encrypted), OSError
        raise BadImageError(f"{path}: cannot open PDF ({e})") from None
    try:
        return len(document)
    finally:
        document.close()


def _require_regular(path: Path) -> None:
    """`BadImageError` unless `path` is a regular file: pdfium opens files by name, so check first."""
    try:
        problem = special_file_problem(path)
    except FileNotFoundError:
        problem = "no such file"
    if problem is not None:
        raise BadImageError(f"{path}: {problem}")


def _is_pdf(path: Path) -> bool:
    if path.suffix.lower() == PDF_SUFFIX:
        return True
    with open_regular(path) as f:
        return f.read(5) == b"%PDF-"


def _tiff_frames(path: Path) -> int:
    """Frames of a TIFF (1 when it cannot be read: loading the page then reports the problem)."""
    try:
        with open_regular(path) as f, Image.open(f, formats=FORMATS) as image:
            return getattr(image, "n_frames", 1)
    except Exception:  # noqa: BLE001
        return 1


def _name(relative: Path) -> str:
    """Output name for a file: its suffix dropped, other dots made `_` (tasks add suffixes with
    `Path.with_suffix`, which would cut `scan.v2` to `scan`), folders kept with their dots made `_` too: an
    output file always has a suffix and a folder never has one, so `a.png` (-> `a.txt`) and `a.txt/b.png`
    (-> `a_txt/b.txt`) cannot collide."""
    stem = relative.name[: -len(relative.suffix)] if relative.suffix else relative.name
    parts = [part.replace(".", "_") for part in relative.parent.parts] + [stem.replace(".", "_") or "_"]
    return "/".join(parts)


def _walk(folder: Path, exclude: Path | None) -> tuple[list[Path], list[InputError]]:
    """Images and PDFs under `folder`, sorted, hidden files and folders and `exclude` left out; and the
    entries named like images that are not regular files (FIFOs, sockets, devices, dangling links),
    as errors, never opened."""
    found, errors = [], []
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        dirs[:] = sorted(
            d for d in dirs
            if not d.startswith(".") and (exclude is None or os.path.realpath(root_path / d) != str(exclude))
        )
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in (*IMAGE_SUFFIXES, PDF_SUFFIX):
                path = root_path / name
                problem = _entry_problem(path)
                if problem is None:
                    found.append(path)
                else:
                    errors.append(InputError(path, f"{path}: {problem}: skipped"))
    return found, errors


def _entry_problem(path: Path) -> str | None:
    try:
        return special_file_problem(path)
    except FileNotFoundError:  # removed while the folder was listed
        return "no such file"


def _file_pages(path: Path, name: str, pages: PageRange | None, warnings: list[str]) -> list[Page]:
    """The pages of one file (raises `BadImageError` / `OSError` for a file that gives none)."""
    if _is_pdf(path):
        kind, count = "pdf", pdf_page_count(path)
        if count == 0:
            raise BadImageError(f"{path}: the PDF has no pages")
    else:
        kind, count = "tiff", _tiff_frames(path) if path.suffix.lower() in TIFF_SUFFIXES else 1
        if count == 1:
            return [Page(path, None, "image", name)]
    numbers = pages.select(count) if pages is not None else list(range(1, count + 1))
    if pages is not None:
        missing = pages.missing(count)
        if missing:
            warnings.append(f"{path}: has {count} pages; page(s) {_compact(missing)} of --pages {pages} do not exist")
        if not numbers:
            raise BadImageError(f"{path}: none of --pages {pages} exist (the document has {count} pages)")
    return [Page(path, n, kind, f"{name}-p{n}") for n in numbers]


def _compact(numbers: list[int]) -> str:
    spans, start = [], numbers[0]
    for a, b in zip(numbers, numbers[1:] + [None]):
        if b != a + 1:
            spans.append(f"{start}-{a}" if a != start else str(a))
            start = b
    return ",".join(spans)


def expand(
    inputs: list[str | Path], pages: PageRange | None = None, exclude: str | Path | None = None
) -> tuple[list[Page], list[InputError], list[str]]:
    """(pages, inputs that gave no page, warnings) for files and folders, in the order given.

    Folders are searched recursively for images and PDFs (hidden entries and `exclude`, the output
    folder, are skipped); a file named directly is taken whatever its suffix (PDFs are recognised by
    content too). `pages` selects pages of PDFs and multi-page TIFFs; single images are always taken.
    """
    exclude_real = os.path.realpath(exclude) if exclude is not None else None
    result: list[Page] = []
    errors: list[InputError] = []
    warnings: list[str] = []
    for given in inputs:
        path = Path(os.path.abspath(given))
        if path.is_dir():
            files, skipped = _walk(path, exclude_real)
            errors.extend(skipped)
            if not files and not skipped:
                errors.append(InputError(path, f"{path}: folder has no images or PDFs "
                                               f"(looked for {', '.join((*IMAGE_SUFFIXES, PDF_SUFFIX))})"))
            entries = [(f, _name(f.relative_to(path))) for f in files]
        elif path.is_file():
            entries = [(path, _name(Path(path.name)))]
        elif path.exists():
            errors.append(InputError(path, f"{path}: {_entry_problem(path)}, nor a folder: skipped"))
            continue
        elif path.is_symlink():
            errors.append(InputError(path, f"{path}: {_entry_problem(path)}"))
            continue
        else:
            errors.append(InputError(path, f"{path}: no such file or folder"))
            continue
        for file, name in entries:
            try:
                result.extend(_file_pages(file, name, pages, warnings))
            except BadImageError as e:
                errors.append(InputError(file, str(e)))
            except OSError as e:
                errors.append(InputError(file, f"{file}: cannot read ({e.strerror or e})"))
    return result, errors, warnings
