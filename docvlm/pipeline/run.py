"""`Pipeline`: pages -> regions (a layout model, or given) -> each region read by its route's model -> `PageResult`s.

    pipeline = docvlm.load_pipeline("pipeline.yaml")          # the models' tasks checked; weights load on use
    results = pipeline(["scan1.png", "scan2.png"])             # PageResults: regions in reading order

Per window of pages: each page turned upright (`docvlm.pipeline.orientation`; not with given
regions, whose boxes are of the page as it is, nor a PDF page with a text layer, born upright), its regions
found by the layout model (all pages in batches) or taken as given, put in reading order
(`docvlm.converters.reading_order`), then every routed region of every page of the window cropped
(`docvlm.pipeline.crops`) and decoded with its route's model: crops of one model and task from many pages in
the same batches. Text regions of a PDF page with a text layer take its text, no model.

Each distinct model is loaded once, also when several routes (or a mixture model's several tasks) share it:
its routes are `Model`s sharing one net. When the models do not fit in memory together (`one_model_at_a_time`,
chosen from the weights' sizes against the free memory unless given), each is loaded in turn for its share of
the window and released before the next; the results are the same.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docvlm.converters.layout import Region
from docvlm.pipeline.crops import DEFAULT_MARGIN, PdfPages, crop_image, with_margin
from docvlm.pipeline.results import PageResult, RegionResult
from docvlm.pipeline.spec import ModelRef, PipelineSpec, PipelineSpecError, read_spec

# Classes whose content is text: on a PDF page with a text layer they take its text, routed or not.
TEXT_LABELS = ("text", "title", "section-header", "caption", "footnote", "list-item", "page-header", "page-footer")
TEXT_TASK = "text"
HEADROOM = 1.3  # weights x this must fit the free memory for all models to stay loaded (activations, caches)


@dataclass
class PageInput:
    """One page for the pipeline.

    Attributes:
        input: the file (or a name for an image given in memory); page: 1-based page of a PDF or TIFF, else None.
        image: the page's pixels (None when it could not be loaded: then `error` says why).
        pdf: the PDF the page belongs to (its regions rendered again, its text layer read), or None.
        regions: given regions (fractions of the page as it is), or None: the layout model finds them.
        error: why the page cannot be converted.
    """

    input: str
    page: int | None = None
    image: Any = None
    pdf: Path | None = None
    regions: list[Region] | None = None
    error: str | None = None


def load_pipeline(spec: str | Path | PipelineSpec, device: str | None = None, dtype: str | None = None,
                  **options) -> Pipeline:
    """A `Pipeline` from a pipeline file (or a `PipelineSpec`); `options` are `Pipeline`'s (`batch_size`,
    `num_beams`, `max_new_tokens`, `repetition_guard`, `margin`, `dpi`, `one_model_at_a_time`, `window`)."""
    return Pipeline(spec if isinstance(spec, PipelineSpec) else read_spec(spec), device=device, dtype=dtype,
                    **options)


class Pipeline:
    """A pipeline ready to convert pages; the models' tasks are checked when it is made, weights load on use."""

    def __init__(self, spec: PipelineSpec, device: str | None = None, dtype: str | None = None, *,
                 batch_size: int = 8, num_beams: int | None = None, max_new_tokens: int | None = None,
                 repetition_guard: bool | None = None, margin: float = DEFAULT_MARGIN, dpi: float = 200.0,
                 one_model_at_a_time: bool | None = None, window: int | None = None):
        from docvlm.inference import resolve_device, resolve_dtype

        if not 0 <= margin < 0.5:
            raise ValueError(f"margin {margin!r}: a fraction of the page's width and height, from 0 to 0.5")
        self.spec = spec
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.decoding = {"batch_size": batch_size, "num_beams": num_beams, "max_new_tokens": max_new_tokens,
                         "repetition_guard": repetition_guard}
        self.margin, self.dpi = margin, dpi
        self.window = window or max(4 * batch_size, 16)
        self.tasks: dict[ModelRef, Any] = {}  # each (model, task) of the pipeline, resolved without weights
        self._descriptions: dict[str, dict | None] = {}
        self.warnings: list[str] = []
        for where, ref in self._refs():
            self.tasks[ref] = self._check(ref, where)
        if spec.layout is not None:
            classes = set(getattr(self.tasks[spec.layout], "classes", ()))
            never = sorted(label for label in spec.routes if classes and label not in classes)
            if never:
                self.warnings.append(f"{spec.where}: routes {', '.join(never)}: not among the layout model's classes "
                                     f"(only regions given with --regions can take them)")
        if one_model_at_a_time is None:
            one_model_at_a_time = not _fit_together({ref.model for _, ref in self._refs()}, self.device)
        self.one_model_at_a_time = one_model_at_a_time
        self._nets: dict[str, tuple] = {}  # model source -> (net, processor, description)

    def _refs(self) -> list[tuple[str, ModelRef]]:
        layout = [("layout", self.spec.layout)] if self.spec.layout is not None else []
        return layout + [(f"routes: {label}", ref) for label, ref in self.spec.routes.items()]

    def _check(self, ref: ModelRef, where: str):
        """The task `ref` runs, from the model's description (no weights read); errors name the file and key."""
        from docvlm import describe
        from docvlm.errors import SettingsError
        from docvlm.inference import ModelLoadError, TaskMismatchError, check_source, read_checkpoint, resolve_task

        try:
            if ref.model not in self._descriptions:
                check_source(ref.model)
                path = Path(ref.model).expanduser()
                description = describe.read(path) if path.is_dir() else None
                if ref.model.endswith(".ckpt"):
                    description = read_checkpoint(path, mmap=True)[2]
                self._descriptions[ref.model] = description
            description = self._descriptions[ref.model]
            return resolve_task(description, ref.task)
        except (ModelLoadError, TaskMismatchError, SettingsError, ValueError) as e:
            raise PipelineSpecError(f"{self.spec.where}: {where}: {e}") from None

    # ---- models ----------------------------------------------------------------------------------
    def model(self, ref: ModelRef):
        """The `Model` of `ref`, its net loaded once for every task that uses it (released first when one model
        at a time is kept)."""
        from docvlm import inference
        from docvlm.decode import Decoding

        if ref.model not in self._nets:
            if self.one_model_at_a_time:
                self.release()
            net, processor, description = inference.load_weights(ref.model, self.dtype)
            self._nets[ref.model] = (net.to(self.device).eval(), processor, description)
        net, processor, description = self._nets[ref.model]
        picked = inference.pick(description, ref.task) if description is not None else None
        task = self.tasks[ref]
        decoding = Decoding(**picked["decoding"]) if picked and picked.get("decoding") else Decoding()
        return inference.Model(net, processor, task, self.device, picked, decoding, inference.source_name(ref.model))

    def release(self) -> None:
        """Drop every loaded net (their memory goes back before the next loads)."""
        self._nets.clear()
        gc.collect()
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    # ---- running ---------------------------------------------------------------------------------
    def __call__(self, images: Sequence, regions: Sequence[list[Region] | None] | None = None) -> list[PageResult]:
        """`PageResult`s of images (PIL images or paths), in order; `regions` gives a page's regions (fractions)
        instead of the layout model's."""
        from docvlm.images import load_image

        if regions is not None and len(regions) != len(images):
            raise ValueError(f"{len(regions)} region lists for {len(images)} images")
        pages = []
        for i, image in enumerate(images):
            name = str(image) if isinstance(image, (str, Path)) else f"images[{i}]"
            loaded = load_image(image) if isinstance(image, (str, Path)) else image.convert("RGB")
            pages.append(PageInput(name, None, loaded, regions=None if regions is None else regions[i]))
        results = []
        for start in range(0, len(pages), self.window):
            results += self.run(pages[start: start + self.window])
        return results

    def run(self, pages: list[PageInput]) -> list[PageResult]:
        """One window of pages: their `PageResult`s in order (a page that fails is one with its `error`)."""
        pdfs = PdfPages()
        try:
            results = [self._start(page, pdfs) for page in pages]
            self._find_regions(pages, results)
            self._read_regions(pages, results, pdfs)
        finally:
            pdfs.close()
        return results

    def _start(self, page: PageInput, pdfs: PdfPages) -> PageResult:
        """The page's result before its regions: its size in its own unit, or its error."""
        if page.error is None and page.image is None:
            page.error = f"{page.input}: no image"
        if page.error is not None:
            return PageResult(page.input, page.page, 0, 0, error=page.error)
        if page.regions is None and self.spec.layout is None:
            return PageResult(page.input, page.page, 0, 0, error=f"{page.input}{_page_of(page)}: no regions given for "
                              f"this page, and {self.spec.where} names no layout model to find them")
        rotation, skew = 0, 0.0
        if page.pdf is not None:
            try:
                if page.regions is None and not pdfs.has_text(page.pdf, page.page):  # a scan in a PDF
                    page.image, rotation, skew = _upright(page.image)
                width, height = pdfs.size(page.pdf, page.page)
            except Exception as e:  # noqa: BLE001  pdfium's error: the page alone fails
                page.error = f"{page.input}{_page_of(page)}: cannot read the PDF page ({type(e).__name__}: {e})"
                return PageResult(page.input, page.page, 0, 0, error=page.error)
            if rotation in (90, 270):
                width, height = height, width
            return PageResult(page.input, page.page, width, height, "pt", rotation, skew)
        if page.regions is None:
            page.image, rotation, skew = _upright(page.image)
        return PageResult(page.input, page.page, *page.image.size, "px", rotation, skew)

    def _find_regions(self, pages: list[PageInput], results: list[PageResult]) -> None:
        """Each page's regions in reading order: given, or found by the layout model (all pages in batches)."""
        from docvlm.converters.reading_order import reading_order

        todo = [i for i, page in enumerate(pages) if results[i].error is None and page.regions is None]
        if todo:
            layout = self.model(self.spec.layout)
            for i, parsed in zip(todo, self._decode(layout, [pages[i].image for i in todo])):
                if isinstance(parsed, Exception):
                    results[i].error = f"{pages[i].input}{_page_of(pages[i])}: layout failed ({parsed})"
                    continue
                pages[i].regions = list(parsed.value or [])
                results[i].problems += [f"layout: {p}" for p in parsed.problems]
        for page, result in zip(pages, results):
            if result.error is None:
                order = reading_order([r.box for r in page.regions])
                ordered = [page.regions[i] for i in order]
                result.regions = [RegionResult(r.label, tuple(r.box), r.score) for r in ordered]

    def _read_regions(self, pages: list[PageInput], results: list[PageResult], pdfs: PdfPages) -> None:
        """Every region's content: the text layer's where it has it, else its route's model, crops of one model
        and task from all pages decoded together."""
        groups: dict[ModelRef, list[tuple[PageInput, PageResult, RegionResult]]] = {}
        for page, result in zip(pages, results):
            if result.error is not None:
                continue
            for region in result.regions:
                ref = self.spec.routes.get(region.label)
                task = self.tasks[ref] if ref is not None else None
                if task is not None:
                    region.task = task.name
                if self._text_layer(page, result, region, task, pdfs):
                    continue
                if ref is not None:
                    groups.setdefault(ref, []).append((page, result, region))
        for ref in sorted(groups, key=lambda r: r.model):  # one model's tasks one after another
            self._read_route(ref, groups[ref], pdfs)

    def _read_route(self, ref: ModelRef, members: list[tuple[PageInput, PageResult, RegionResult]],
                    pdfs: PdfPages) -> None:
        """The regions of one route decoded together (the model held only here, so that it can be released)."""
        model = self.model(ref)
        crops = [self._crop(page, result, region.box, model.image_size, pdfs) for page, result, region in members]
        for (_, _, region), parsed in zip(members, self._decode(model, crops)):
            region.source = "model"
            if isinstance(parsed, Exception):
                region.problems.append(f"decoding failed ({parsed})")
                continue
            region.text, region.value, region.problems = parsed.text, parsed.value, list(parsed.problems)

    def _text_layer(self, page: PageInput, result: PageResult, region: RegionResult, task, pdfs: PdfPages) -> bool:
        """Whether the region took its text from the PDF's text layer (a text route's, or an unrouted text class's)."""
        wanted = task.name == TEXT_TASK if task is not None else region.label in TEXT_LABELS
        if not wanted or page.pdf is None or result.rotation or result.skew:
            return False
        text = pdfs.text(page.pdf, page.page, with_margin(region.box, self.margin))
        if text is None:
            return False
        region.source, region.text = "text-layer", text
        if task is None:
            region.value = text
        else:
            parsed = task.parse(text)
            region.value, region.problems = parsed.value, list(parsed.problems)
        return True

    def _crop(self, page: PageInput, result: PageResult, box, size: int, pdfs: PdfPages):
        """The region's pixels: rendered again from its PDF (unless the page was turned: its boxes are then of
        the turned raster), else cut from the page as loaded."""
        box = with_margin(box, self.margin)
        if page.pdf is not None and not result.rotation and not result.skew:
            try:
                return pdfs.render(page.pdf, page.page, box, size, self.dpi)
            except Exception:  # noqa: BLE001  a region pdfium cannot render: cut from the page as loaded
                pass
        return crop_image(page.image, box)

    def _decode(self, model, images: list) -> list:
        """The model's parsed results for `images` in batches, or for each one that fails alone its error."""
        try:
            return model(images, **self.decoding)
        except Exception:  # noqa: BLE001  one image failed: find it, keep the others
            results = []
            for image in images:
                try:
                    results += model([image], **self.decoding)
                except Exception as e:  # noqa: BLE001
                    results.append(RuntimeError(f"{type(e).__name__}: {e}"))
            return results


def _page_of(page: PageInput) -> str:
    return f", page {page.page}" if page.page is not None else ""


def _upright(image):
    """(the image upright, rotation undone in degrees clockwise, skew undone in degrees)."""
    from docvlm.pipeline.orientation import detect, upright

    found = detect(image)
    return upright(image, found), found.rotation, found.skew


def _weights_bytes(source: str) -> int:
    """The size of a model's weights on disk (0 where unknown: `tiny`, a hub id)."""
    path = Path(source).expanduser()
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt"))
    return 0


def _fit_together(sources: set[str], device) -> bool:
    """Whether the models' weights (with headroom) fit the device's free memory together."""
    need = HEADROOM * sum(_weights_bytes(s) for s in sources)
    if need == 0:
        return True
    if device.type == "cuda":
        import torch

        free = torch.cuda.mem_get_info(device)[0]
    else:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # no sysconf (not POSIX): assume they fit
            return True
    return need <= free

